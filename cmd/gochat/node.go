package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bwmarrin/snowflake"
	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/connpool"
	"github.com/cloudwego/kitex/pkg/discovery"
	"github.com/cloudwego/kitex/pkg/kerrors"
	"github.com/cloudwego/kitex/pkg/loadbalance"
	"github.com/cloudwego/kitex/pkg/loadbalance/lbcache"
	"github.com/cloudwego/kitex/pkg/retry"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/pkg/transmeta"
	"github.com/cloudwego/kitex/server"
	"github.com/cloudwego/kitex/transport"
	etcdreg "github.com/kitex-contrib/registry-etcd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gochat/gochat/gateway"
	"github.com/gochat/gochat/kitex_gen/logicapi/logicservice"
	"github.com/gochat/gochat/kitex_gen/repoapi"
	"github.com/gochat/gochat/kitex_gen/repoapi/reposervice"
	"github.com/gochat/gochat/kitex_gen/taskapi/taskservice"
	"github.com/gochat/gochat/logic"
	"github.com/gochat/gochat/logic/authtoken"
	"github.com/gochat/gochat/logic/pushq"
	"github.com/gochat/gochat/pollnet"
	"github.com/gochat/gochat/repo"
	"github.com/gochat/gochat/repo/kv"
	"github.com/gochat/gochat/repo/store"
	"github.com/gochat/gochat/task"
)

// node is one gochat process: the targets it runs and the dependencies they share.
// Shared clients are opened on first use, so -target=gateway never dials MySQL, and
// closed in reverse order after every component has returned.
type node struct {
	cfg     Config
	log     *slog.Logger
	levels  *slog.LevelVar
	targets []string
	reg     *prometheus.Registry

	ready    chan struct{} // closed when every local component serves
	draining chan struct{} // closed when shutdown starts

	mu       sync.Mutex // guards closers
	closers  []func() error
	etcd     []string // endpoints, fixed before components are built
	bus      pushq.Bus
	resolver discovery.Resolver
	signer   *authtoken.Signer

	gw *gateway.Gateway // set when this node runs the gateway (tests read its address)

	etcdOnce sync.Once
	etcdCli  *clientv3.Client
	etcdErr  error
}

// etcdClient is the node's shared etcd client, opened on first use.
func (n *node) etcdClient() (*clientv3.Client, error) {
	n.etcdOnce.Do(func() {
		n.etcdCli, n.etcdErr = clientv3.New(clientv3.Config{Endpoints: n.etcd, DialTimeout: 5 * time.Second})
		if n.etcdErr == nil {
			n.addCloser(n.etcdCli.Close)
		}
	})
	return n.etcdCli, n.etcdErr
}

func newNode(cfg Config, log *slog.Logger, levels *slog.LevelVar) (*node, error) {
	targets, err := expandTargets(cfg.Target)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &node{
		cfg: cfg, log: log, levels: levels, targets: targets, reg: reg,
		ready: make(chan struct{}), draining: make(chan struct{}),
	}, nil
}

func (n *node) has(target string) bool { return slices.Contains(n.targets, target) }

func (n *node) addCloser(f func() error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closers = append(n.closers, f)
}

func (n *node) closeAll() {
	n.mu.Lock()
	cs := n.closers
	n.closers = nil
	n.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		if err := cs[i](); err != nil {
			n.log.Warn("closing dependency", "err", err)
		}
	}
}

// Run starts the node's dependencies and components and blocks until ctx is done
// and everything has drained.
func (n *node) Run(ctx context.Context) error {
	defer n.closeAll()
	start := time.Now()

	n.etcd = n.cfg.Etcd.Endpoints
	if len(n.etcd) == 0 {
		e, err := startEmbeddedEtcd(ctx, n.cfg.Etcd.DataDir)
		if err != nil {
			return err
		}
		n.addCloser(e.Close)
		n.etcd = []string{e.Endpoint()}
		n.log.Info("embedded etcd started", "endpoint", e.Endpoint())
	}
	r, err := etcdreg.NewEtcdResolver(n.etcd)
	if err != nil {
		return fmt.Errorf("etcd resolver: %w", err)
	}
	n.resolver = namedResolver{Resolver: r, name: "etcd|" + strings.Join(n.etcd, ",")}
	if n.signer, err = n.tokenSigner(); err != nil {
		return err
	}
	if n.has("gateway") || n.has("logic") || n.has("task") {
		if n.bus, err = n.openBus(ctx); err != nil {
			return err
		}
	}

	comps := map[string]component{}
	for _, t := range n.targets {
		c, err := n.build(ctx, t)
		if err != nil {
			return fmt.Errorf("%s: %w", t, err)
		}
		comps[t] = c
	}
	if n.cfg.Admin.Addr != "" {
		a, err := newAdmin(n)
		if err != nil {
			return err
		}
		comps["admin"] = a
	}
	go n.announce(ctx, start)
	err = runAll(ctx, n.log, n.cfg.ShutdownGrace, comps)
	close(n.draining)
	return err
}

func (n *node) tokenSigner() (*authtoken.Signer, error) {
	secret := n.cfg.Auth.Secret
	if secret == "" {
		// Only reachable in all mode (Validate requires a secret in split mode):
		// tokens then last as long as this process.
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("generate token secret: %w", err)
		}
		secret = hex.EncodeToString(b[:])
		n.log.Warn("auth.secret not set: generated one for this run; tokens will not survive a restart")
	}
	return authtoken.New(secret, n.cfg.Logic.TokenTTL)
}

func (n *node) openBus(ctx context.Context) (pushq.Bus, error) {
	if len(n.cfg.Kafka.Brokers) == 0 {
		b := pushq.NewMemory(pushq.WithLogger(n.log.With("component", "bus")))
		n.addCloser(b.Close)
		return b, nil
	}
	b, err := pushq.NewKafka(n.cfg.Kafka, n.log.With("component", "bus"))
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	n.addCloser(b.Close)
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := b.EnsureTopics(tctx, n.cfg.Kafka.Partitions, pushq.TopicBroadcast, pushq.TopicJobs); err != nil {
		return nil, fmt.Errorf("kafka topics: %w", err)
	}
	return b, nil
}

// namedResolver gives the etcd resolver a name per etcd cluster. Kitex caches
// balancers process-wide by resolver name, and registry-etcd names every resolver
// "etcd": two nodes in one process (tests) would otherwise share the first one's.
type namedResolver struct {
	discovery.Resolver
	name string
}

// Name is the cache key Kitex uses for this resolver's balancers.
func (r namedResolver) Name() string { return r.name }

// clientOptions are shared by every Kitex client: etcd discovery, TTHeader so biz
// status errors travel, bounded calls.
//
// Failover: the resolver is re-read every 500 ms, so an instance whose lease expired
// (etcd.lease_ttl after it died) leaves rotation within about lease_ttl + 0.5 s; until
// then a call that fails in transport (refused, reset, timed out) is retried on the
// next instance. Retrying is safe because every mutating call is idempotent: sends carry
// a client message id (the gateway makes one up when the client sent none) that repo
// de-duplicates on, and the social calls are set-like (add friend twice = conflict).
// Business errors (biz status) are answers, never retried.
func (n *node) clientOptions() []client.Option {
	rp := retry.NewFailurePolicyWithResultRetry(&retry.ShouldResultRetry{
		ErrorRetryWithCtx: func(_ context.Context, err error, _ rpcinfo.RPCInfo) bool {
			_, biz := kerrors.FromBizStatusError(err)
			return err != nil && !biz
		},
	})
	rp.WithMaxRetryTimes(2)
	// Kitex caps the retry circuit breaker at 0.3 (higher values silently become 0.1):
	// with it at the cap, retries keep going while one of two instances is dying.
	rp.StopPolicy.CBPolicy.ErrorRate = 0.3
	return []client.Option{
		client.WithResolver(n.resolver),
		client.WithLoadBalancer(loadbalance.NewWeightedRoundRobinBalancer(), &lbcache.Options{
			RefreshInterval: 500 * time.Millisecond, ExpireInterval: 15 * time.Second,
		}),
		client.WithTransportProtocol(transport.TTHeader),
		client.WithMetaHandler(transmeta.ClientTTHeaderHandler),
		client.WithRPCTimeout(5 * time.Second),
		client.WithConnectTimeout(time.Second),
		client.WithFailureRetry(rp),
		// Kitex's default pool keeps 10 idle connections per instance: under a few
		// hundred concurrent calls (a connect storm: Auth + Connect per socket) every
		// call beyond that dialed and closed its own connection, and dials timed out
		// against logic's full accept backlog. Keep what a burst opened.
		client.WithLongConnection(connpool.IdleConfig{
			MinIdlePerAddress: 2, MaxIdlePerAddress: 512, MaxIdleGlobal: 1 << 14, MaxIdleTimeout: time.Minute,
		}),
	}
}

// serveKitex binds addr, registers in etcd under name (one registry per server) and
// serves until ctx is done; then it deregisters and drains in-flight calls.
func (n *node) serveKitex(ctx context.Context, name, addr string, newServer func(opts ...server.Option) server.Server) error {
	std, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	// Not netpoll's own conversion (Kitex would use it): its Close closes a
	// descriptor twice, possibly another connection's (pollnet).
	ln, err := pollnet.Listener(std)
	if err != nil {
		_ = std.Close()
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	cli, err := n.etcdClient()
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("etcd client: %w", err)
	}
	r := newKitexRegistry(cli, n.cfg.Etcd.LeaseTTL, n.log)
	exit := make(chan error, 1)
	svr := newServer(
		server.WithListener(ln),
		server.WithRegistry(r),
		server.WithServerBasicInfo(&rpcinfo.EndpointBasicInfo{ServiceName: name}),
		server.WithMetaHandler(transmeta.ServerTTHeaderHandler),
		server.WithExitSignal(func() <-chan error { return exit }),
		server.WithExitWaitTime(3*time.Second),
	)
	go func() {
		<-ctx.Done()
		exit <- nil // nil → graceful Stop: deregister, drain
	}()
	n.log.Info("rpc server listening", "service", name, "addr", ln.Addr().String())
	if err := svr.Run(); err != nil {
		return fmt.Errorf("kitex %s: %w", name, err)
	}
	return nil
}

// build wires one target.
func (n *node) build(ctx context.Context, target string) (component, error) {
	log := n.log
	switch target {
	case "repo":
		return n.buildRepo(ctx)
	case "logic":
		repoCli, err := reposervice.NewClient(repo.ServiceName, n.clientOptions()...)
		if err != nil {
			return nil, err
		}
		taskCli, err := taskservice.NewClient(task.ServiceName, n.clientOptions()...)
		if err != nil {
			return nil, err
		}
		gateways, watch, err := n.gatewayWatch()
		if err != nil {
			return nil, err
		}
		l, err := logic.New(n.cfg.Logic, logic.Deps{
			Log: log, Metrics: n.reg, Repo: repoCli, Task: taskCli, Bus: n.bus, Tokens: n.signer, Gateways: gateways,
		})
		if err != nil {
			return nil, err
		}
		return componentFunc(func(ctx context.Context) error {
			defer watch(ctx)()
			return l.Run(ctx, func(ctx context.Context) error {
				return n.serveKitex(ctx, logic.ServiceName, n.cfg.Logic.RPCAddr, func(o ...server.Option) server.Server {
					return logicservice.NewServer(l, o...)
				})
			})
		}), nil
	case "task":
		repoCli, err := reposervice.NewClient(repo.ServiceName, n.clientOptions()...)
		if err != nil {
			return nil, err
		}
		gateways, watch, err := n.gatewayWatch()
		if err != nil {
			return nil, err
		}
		t, err := task.New(n.cfg.Task, task.Deps{Log: log, Metrics: n.reg, Bus: n.bus, Repo: repoCli, Gateway: gateways})
		if err != nil {
			return nil, err
		}
		return componentFunc(func(ctx context.Context) error {
			defer watch(ctx)()
			return t.Run(ctx, func(ctx context.Context) error {
				return n.serveKitex(ctx, task.ServiceName, n.cfg.Task.RPCAddr, func(o ...server.Option) server.Server {
					return taskservice.NewServer(t, o...)
				})
			})
		}), nil
	case "gateway":
		logicCli, err := logicservice.NewClient(logic.ServiceName, n.clientOptions()...)
		if err != nil {
			return nil, err
		}
		g, err := gateway.New(n.cfg.Gateway, gateway.Deps{
			Log: log, Metrics: n.reg, Logic: logicCli, Bus: n.bus, Tokens: n.signer, Gatherer: n.reg,
		})
		if err != nil {
			return nil, err
		}
		n.gw = g
		cli, err := n.etcdClient()
		if err != nil {
			return nil, fmt.Errorf("etcd client: %w", err)
		}
		return componentFunc(func(ctx context.Context) error {
			// Registered once serving, so logic never routes to a gateway that cannot
			// take pushes yet; revoked when Run returns.
			regCtx, stopReg := context.WithCancel(ctx)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case <-g.Ready():
					registerGateway(regCtx, cli, g.ID(), n.cfg.Etcd.LeaseTTL, log)
				case <-regCtx.Done():
				}
			}()
			err := g.Run(ctx)
			stopReg()
			wg.Wait()
			return err
		}), nil
	}
	return nil, fmt.Errorf("unknown target %q", target)
}

// gatewayWatch returns a live-gateway set and a function that keeps it current from
// etcd while a component runs: `defer watch(ctx)()` starts the watch and stops it
// (waiting for it) when the component returns.
func (n *node) gatewayWatch() (*gatewaySet, func(context.Context) func(), error) {
	cli, err := n.etcdClient()
	if err != nil {
		return nil, nil, fmt.Errorf("etcd client: %w", err)
	}
	set := &gatewaySet{}
	watch := func(ctx context.Context) func() {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = set.watch(ctx, cli, n.log)
		}()
		return func() { cancel(); <-done }
	}
	return set, watch, nil
}

func (n *node) buildRepo(ctx context.Context) (component, error) {
	nodeID := n.cfg.Repo.NodeID
	if nodeID < 0 {
		if isAll(n.targets) {
			nodeID = 1
		} else {
			cli, err := n.etcdClient()
			if err != nil {
				return nil, fmt.Errorf("etcd client: %w", err)
			}
			id, stop, err := leaseNodeID(ctx, cli, n.cfg.Etcd.LeaseTTL)
			if err != nil {
				return nil, err
			}
			n.addCloser(func() error { stop(); return nil })
			nodeID = id
		}
	}
	ids, err := snowflake.NewNode(nodeID)
	if err != nil {
		return nil, fmt.Errorf("snowflake node %d: %w", nodeID, err)
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	observe, err := repo.StoreMetrics(n.reg)
	if err != nil {
		return nil, err
	}
	observeCheckpoint, err := repo.CheckpointMetrics(n.reg)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(octx, n.cfg.Store, ids, n.log, store.WithCommitObserver(observe), store.WithCheckpointObserver(observeCheckpoint))
	if err != nil {
		return nil, err
	}
	n.addCloser(st.Close)
	var state repo.KV = kv.NewMemory()
	if n.cfg.Redis.Addr != "" {
		rc := redis.NewClient(&redis.Options{Addr: n.cfg.Redis.Addr, Password: n.cfg.Redis.Password, DB: n.cfg.Redis.DB})
		n.addCloser(rc.Close)
		r := kv.NewRedis(rc, n.cfg.Redis.Prefix)
		if err := r.Ping(octx); err != nil {
			return nil, err
		}
		state = r
	}
	h := repo.New(st, state, n.log)
	n.log.Info("repo storage ready", "driver", n.cfg.Store.Driver, "redis", n.cfg.Redis.Addr != "", "snowflake_node", nodeID)
	return componentFunc(func(ctx context.Context) error {
		return n.serveKitex(ctx, repo.ServiceName, n.cfg.Repo.RPCAddr, func(o ...server.Option) server.Server {
			return reposervice.NewServer(h, o...)
		})
	}), nil
}

// announce waits until the local components answer (Kitex registers 1 s after it
// starts serving), then marks the node ready and prints where to find it.
func (n *node) announce(ctx context.Context, start time.Time) {
	var ping func(context.Context) error
	switch {
	case n.has("gateway"):
		cli, err := logicservice.NewClient(logic.ServiceName, n.clientOptions()...)
		if err != nil {
			n.log.Error("readiness client", "err", err)
			return
		}
		ping = func(ctx context.Context) error {
			select {
			case <-n.gw.Ready():
			default:
				return errors.New("gateway not listening yet")
			}
			_, err := cli.Ping(ctx, &repoapi.PingReq{})
			return err
		}
	case n.has("logic"):
		cli, err := logicservice.NewClient(logic.ServiceName, n.clientOptions()...)
		if err != nil {
			n.log.Error("readiness client", "err", err)
			return
		}
		ping = func(ctx context.Context) error { _, err := cli.Ping(ctx, &repoapi.PingReq{}); return err }
	case n.has("repo"):
		cli, err := reposervice.NewClient(repo.ServiceName, n.clientOptions()...)
		if err != nil {
			n.log.Error("readiness client", "err", err)
			return
		}
		ping = func(ctx context.Context) error { _, err := cli.Ping(ctx, &repoapi.PingReq{}); return err }
	default:
		ping = func(context.Context) error { return nil }
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := ping(pctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	close(n.ready)
	attrs := []any{"targets", n.targets, "startup", time.Since(start).Round(time.Millisecond).String()}
	if n.gw != nil {
		port := n.gw.Addr().Port
		attrs = append(attrs, "http", fmt.Sprintf("http://localhost:%d/api", port), "ws", fmt.Sprintf("ws://localhost:%d%s", port, n.cfg.Gateway.WSPath))
	}
	if n.cfg.Admin.Addr != "" {
		attrs = append(attrs, "admin", "http://"+n.cfg.Admin.Addr+"/metrics")
	}
	n.log.Info("GoChat ready", attrs...)
}
