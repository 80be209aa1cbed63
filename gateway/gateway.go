// Package gateway holds the client connections: the HTTP API (Hertz) and the
// WebSocket endpoint (netpoll event loops + gobwas/ws framing) on one port. It verifies
// tokens, forwards requests and sends to logic over Kitex, and writes the pushes it
// consumes from the bus to its sockets.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/kitex/client/callopt"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gochat/gochat/gateway/internal/conn"
	"github.com/gochat/gochat/gateway/internal/wsnet"
	"github.com/gochat/gochat/kitex_gen/logicapi"
	"github.com/gochat/gochat/kitex_gen/repoapi"
	"github.com/gochat/gochat/logic/authtoken"
	"github.com/gochat/gochat/logic/pushq"
)

// Logic is what the gateway calls; the generated logicservice.Client satisfies it.
type Logic interface {
	Ping(ctx context.Context, req *repoapi.PingReq, opts ...callopt.Option) (*repoapi.PingResp, error)
	Register(ctx context.Context, req *logicapi.RegisterReq, opts ...callopt.Option) (*logicapi.RegisterResp, error)
	Login(ctx context.Context, req *logicapi.LoginReq, opts ...callopt.Option) (*logicapi.LoginResp, error)
	Guest(ctx context.Context, req *logicapi.GuestReq, opts ...callopt.Option) (*logicapi.LoginResp, error)
	Logout(ctx context.Context, req *logicapi.LogoutReq, opts ...callopt.Option) (*logicapi.LogoutResp, error)
	Auth(ctx context.Context, req *logicapi.AuthReq, opts ...callopt.Option) (*logicapi.AuthResp, error)
	AuthBatch(ctx context.Context, req *logicapi.AuthBatchReq, opts ...callopt.Option) (*logicapi.AuthBatchResp, error)
	GetUser(ctx context.Context, req *logicapi.GetUserReq, opts ...callopt.Option) (*logicapi.GetUserResp, error)
	ListConversations(ctx context.Context, req *logicapi.ListConversationsReq, opts ...callopt.Option) (*logicapi.ListConversationsResp, error)
	ListMessages(ctx context.Context, req *logicapi.ListMessagesReq, opts ...callopt.Option) (*logicapi.ListMessagesResp, error)
	MarkRead(ctx context.Context, req *logicapi.MarkReadReq, opts ...callopt.Option) (*logicapi.MarkReadResp, error)
	Send(ctx context.Context, req *logicapi.SendReq, opts ...callopt.Option) (*logicapi.SendResp, error)
	SendBatch(ctx context.Context, req *logicapi.SendBatchReq, opts ...callopt.Option) (*logicapi.SendBatchResp, error)
	GetUserByName(ctx context.Context, req *logicapi.GetUserByNameReq, opts ...callopt.Option) (*logicapi.GetUserResp, error)
	OnlineStatus(ctx context.Context, req *logicapi.OnlineStatusReq, opts ...callopt.Option) (*logicapi.OnlineStatusResp, error)
	ListFriends(ctx context.Context, req *logicapi.ListFriendsReq, opts ...callopt.Option) (*logicapi.ListFriendsResp, error)
	AddFriend(ctx context.Context, req *logicapi.AddFriendReq, opts ...callopt.Option) (*logicapi.ConversationView, error)
	OpenConversation(ctx context.Context, req *logicapi.OpenConversationReq, opts ...callopt.Option) (*logicapi.OpenConversationResp, error)
	CreateGroup(ctx context.Context, req *logicapi.CreateGroupReq, opts ...callopt.Option) (*logicapi.GroupInfo, error)
	GetGroup(ctx context.Context, req *logicapi.GetGroupReq, opts ...callopt.Option) (*logicapi.GroupInfo, error)
	AddGroupMembers(ctx context.Context, req *logicapi.AddGroupMembersReq, opts ...callopt.Option) (*logicapi.GroupInfo, error)
	RemoveGroupMember(ctx context.Context, req *logicapi.RemoveGroupMemberReq, opts ...callopt.Option) (*logicapi.RemoveGroupMemberResp, error)
	Connect(ctx context.Context, req *logicapi.ConnectReq, opts ...callopt.Option) (*logicapi.ConnectResp, error)
	ConnectBatch(ctx context.Context, req *logicapi.ConnectBatchReq, opts ...callopt.Option) (*logicapi.ConnectBatchResp, error)
	Disconnect(ctx context.Context, req *logicapi.DisconnectReq, opts ...callopt.Option) (*logicapi.DisconnectResp, error)
	DisconnectBatch(ctx context.Context, req *logicapi.DisconnectBatchReq, opts ...callopt.Option) (*logicapi.DisconnectBatchResp, error)
	RefreshRoutes(ctx context.Context, req *logicapi.RefreshRoutesReq, opts ...callopt.Option) (*logicapi.RefreshRoutesResp, error)
}

// Subscriber tails bus topics; *pushq.Memory and *pushq.Kafka satisfy it.
type Subscriber interface {
	Subscribe(ctx context.Context, topic string, h func(value []byte)) (*pushq.Subscription, error)
	EnsureTopics(ctx context.Context, partitions int, topics ...string) error
}

// Deps are the gateway's collaborators.
type Deps struct {
	Log     *slog.Logger
	Metrics prometheus.Registerer
	Logic   Logic
	Bus     Subscriber
	Tokens  *authtoken.Signer // verifies tokens locally; logic.Auth adds the revocation check
	// Gatherer, when set, is served at /metrics on the gateway port too.
	Gatherer prometheus.Gatherer
}

// Gateway is one gateway process's client-facing side.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	logic  Logic
	bus    Subscriber
	tokens *authtoken.Signer
	gather prometheus.Gatherer
	m      *metrics

	sockets *conn.Table[*wsnet.Conn]
	ws      *wsnet.Server
	recent  *recentPushes // message pushes already delivered here

	// A WebSocket's auth, route registration and unregistration go through these: a
	// connect (disconnect) storm becomes a few batch calls to logic instead of one or
	// two calls per socket.
	auth       *batcher[string, *logicapi.AuthOutcome] // token -> its result
	connect    *batcher[int64, struct{}]               // user id of a socket opened here
	disconnect *batcher[int64, struct{}]               // user id of a socket closed here

	// WebSocket sends go through this one: under load many sockets' messages
	// become one logic.SendBatch (and one repo.AppendBatch behind it) instead of
	// two calls per message. A socket still has at most one send in flight.
	send *batcher[*logicapi.SendReq, *logicapi.SendOutcome]

	ready    chan struct{} // closed when the listener is up and the push subscription is live
	addr     atomic.Pointer[net.TCPAddr]
	draining atomic.Bool // set at shutdown: /readyz answers 503
}

// New validates the configuration and builds the gateway. It does no I/O.
func New(cfg Config, d Deps) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Log == nil || d.Metrics == nil || d.Logic == nil || d.Bus == nil || d.Tokens == nil {
		return nil, errors.New("gateway: every dependency is required")
	}
	if cfg.ID == "" {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("gateway: id: %w", err)
		}
		cfg.ID = "gw-" + hex.EncodeToString(b[:])
	}
	g := &Gateway{
		cfg:     cfg,
		log:     d.Log.With("component", "gateway", "gateway", cfg.ID),
		logic:   d.Logic,
		bus:     d.Bus,
		tokens:  d.Tokens,
		gather:  d.Gatherer,
		sockets: conn.New[*wsnet.Conn](cfg.Shards),
		recent:  newRecentPushes(1 << 17),
		ready:   make(chan struct{}),
	}
	g.ws = wsnet.New(wsnet.Config{
		Path: cfg.WSPath, MaxFrame: cfg.MaxFrame, HandshakeTimeout: cfg.HandshakeTimeout,
		ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout, PingInterval: cfg.PingInterval,
		IdleTimeout: cfg.IdleTimeout, SendQueue: cfg.SendQueue, MaxHandshakes: cfg.MaxHandshakes,
		MaxConns: cfg.maxConns(), Log: g.log,
	}, (*wsHandler)(g))
	g.auth = newBatcher(authWorkers, batchMax, g.authBatch)
	g.connect = newBatcher(connectWorkers, batchMax, g.connectBatch)
	g.disconnect = newBatcher(connectWorkers, batchMax, g.disconnectBatch)
	g.send = newBatcher(sendWorkers, batchMax, g.sendBatch)
	m, err := newMetrics(d.Metrics, g)
	if err != nil {
		return nil, err
	}
	g.m = m
	return g, nil
}

// ID is this gateway's id.
func (g *Gateway) ID() string { return g.cfg.ID }

// Ready is closed once the gateway accepts connections and receives pushes.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// Addr is the bound address once Ready is closed.
func (g *Gateway) Addr() *net.TCPAddr { return g.addr.Load() }

// Run serves until ctx is done, then shuts down: readiness off, every socket closed
// with 1001 "going away", in-flight requests finished.
func (g *Gateway) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", g.cfg.Addr)
	if err != nil {
		return fmt.Errorf("gateway: listen %s: %w", g.cfg.Addr, err)
	}
	g.addr.Store(ln.Addr().(*net.TCPAddr))

	// Two push streams: the broadcast topic (world room) and this gateway's own topic
	// (messages and presence for users whose sockets are here).
	own := pushq.GatewayTopic(g.cfg.ID)
	if err := g.bus.EnsureTopics(ctx, 0, own); err != nil {
		_ = ln.Close()
		return fmt.Errorf("gateway: create topic %s: %w", own, err)
	}
	var subs sync.WaitGroup
	subCtx, stopSubs := context.WithCancel(ctx)
	defer func() { stopSubs(); subs.Wait() }()
	subscribed := make(chan struct{}, 2)
	for _, topic := range []string{pushq.TopicBroadcast, own} {
		subs.Add(1)
		go func() {
			defer subs.Done()
			g.follow(subCtx, topic, subscribed)
		}()
	}
	for range 2 {
		select {
		case <-subscribed:
		case <-ctx.Done():
			_ = ln.Close()
			return nil
		}
	}

	var wg sync.WaitGroup
	refreshCtx, stopRefresh := context.WithCancel(ctx)
	defer func() { stopRefresh(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		g.refreshRoutes(refreshCtx)
	}()

	// The batchers serve the WebSocket handler; they stop after Hertz has shut
	// down (the deferred calls run when Spin has returned). The sockets' OnClose
	// normally ran by then (ws.Shutdown waits for them), but one that outlasted
	// that wait, or runs later, gets errBatcherClosed instead of a call: its
	// route expires by itself.
	g.auth.start()
	g.connect.start()
	g.disconnect.start()
	g.send.start()
	defer func() {
		g.auth.close()
		g.connect.close()
		g.disconnect.close()
		g.send.close()
	}()

	h := server.New(
		server.WithListener(ln),
		server.WithTransport(g.ws.Transport),
		server.WithMaxRequestBodySize(4*g.cfg.MaxBody), // the handler refuses > MaxBody with the envelope
		server.WithDisablePrintRoute(true),
		server.WithHandleMethodNotAllowed(true),
		server.WithExitWaitTime(2*time.Second),
		server.WithReadTimeout(30*time.Second),
		server.WithIdleTimeout(2*time.Minute),
	)
	g.routes(h, g.gather)

	var runErr error
	var once sync.Once
	h.SetCustomSignalWaiter(func(errCh chan error) error {
		once.Do(func() { close(g.ready) })
		select {
		case <-ctx.Done():
			g.draining.Store(true)
			sctx, cancel := context.WithTimeout(context.Background(), g.cfg.CloseGrace+time.Second)
			defer cancel()
			if err := g.ws.Shutdown(sctx); err != nil {
				g.log.Warn("closing websockets", "err", err)
			}
			return nil // Hertz then shuts down gracefully
		case err := <-errCh:
			runErr = err
			return err
		}
	})
	g.log.Info("gateway listening", "addr", ln.Addr().String(), "ws", g.cfg.WSPath, "max_conns", g.cfg.maxConns())
	h.Spin()
	return runErr
}

// callCtx bounds one call to logic.
func (g *Gateway) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, g.cfg.RPCTimeout)
}

// authBatch is the auth batcher's call: one logic.AuthBatch for the tokens.
func (g *Gateway) authBatch(ctx context.Context, tokens []string) ([]*logicapi.AuthOutcome, error) {
	cctx, cancel := g.callCtx(ctx)
	defer cancel()
	resp, err := g.logic.AuthBatch(cctx, &logicapi.AuthBatchReq{Tokens: tokens})
	if err != nil {
		return nil, err
	}
	return resp.Results, nil
}

// connectBatch is the connect batcher's call: one logic.ConnectBatch for the sockets.
func (g *Gateway) connectBatch(ctx context.Context, userIDs []int64) ([]struct{}, error) {
	cctx, cancel := g.callCtx(ctx)
	defer cancel()
	if _, err := g.logic.ConnectBatch(cctx, &logicapi.ConnectBatchReq{UserIds: userIDs, GatewayId: g.cfg.ID}); err != nil {
		// Logged here, once per batch (its sockets only log at debug level).
		g.log.Warn("registering socket routes failed; the periodic refresh retries", "sockets", len(userIDs), "err", err)
		return nil, err
	}
	return make([]struct{}, len(userIDs)), nil
}

// disconnectBatch is the disconnect batcher's call: one logic.DisconnectBatch for
// the sockets.
func (g *Gateway) disconnectBatch(ctx context.Context, userIDs []int64) ([]struct{}, error) {
	cctx, cancel := g.callCtx(ctx)
	defer cancel()
	if _, err := g.logic.DisconnectBatch(cctx, &logicapi.DisconnectBatchReq{UserIds: userIDs, GatewayId: g.cfg.ID}); err != nil {
		// Logged here, once per batch (its sockets only log at debug level).
		g.log.Warn("unregistering socket routes failed; they expire by themselves", "sockets", len(userIDs), "err", err)
		return nil, err
	}
	return make([]struct{}, len(userIDs)), nil
}

// sendBatch is the send batcher's call: one logic.SendBatch for the messages.
func (g *Gateway) sendBatch(ctx context.Context, reqs []*logicapi.SendReq) ([]*logicapi.SendOutcome, error) {
	cctx, cancel := g.callCtx(ctx)
	defer cancel()
	resp, err := g.logic.SendBatch(cctx, &logicapi.SendBatchReq{Items: reqs})
	if err != nil {
		return nil, err
	}
	return resp.Results, nil
}

// refreshRoutes keeps this gateway's routes alive (they expire otherwise, which is
// how a crashed gateway's users go offline) until ctx is done.
func (g *Gateway) refreshRoutes(ctx context.Context) {
	// Gateways started together would refresh together, each sending every route at
	// once: 16 gateways holding 250k sockets sent 250k route renewals within a second,
	// every period, and the burst timed out logic's and repo's other calls. So the
	// first round starts at a random point of the period, and a round spreads its
	// chunks over half the period (a route is then renewed every period ± half, well
	// inside its 90 s lifetime).
	first := time.Duration(mrand.Int64N(int64(g.cfg.RouteRefresh)))
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(g.cfg.RouteRefresh)
		var ids []int64
		var counts []int32
		g.sockets.EachUser(func(uid int64, sockets int) {
			ids = append(ids, uid)
			counts = append(counts, int32(sockets))
		})
		chunks := (len(ids) + refreshChunk - 1) / refreshChunk
		pause := time.Duration(0)
		if chunks > 1 {
			pause = g.cfg.RouteRefresh / 2 / time.Duration(chunks)
		}
		failed := 0
		var lastErr error
		for start := 0; start < len(ids); start += refreshChunk {
			if start > 0 && pause > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(pause):
				}
			}
			end := min(start+refreshChunk, len(ids))
			cctx, cancel := g.callCtx(ctx)
			_, err := g.logic.RefreshRoutes(cctx, &logicapi.RefreshRoutesReq{GatewayId: g.cfg.ID, UserIds: ids[start:end], Counts: counts[start:end]})
			cancel()
			if err != nil {
				failed += end - start
				lastErr = err
			}
		}
		if lastErr != nil {
			g.log.Warn("refreshing routes failed", "users", len(ids), "failed", failed, "err", lastErr)
		}
	}
}

// refreshChunk is how many users one RefreshRoutes call renews.
const refreshChunk = 1000

// follow keeps a subscription to topic alive until ctx is done: when the bus drops it
// (broker gone, partition moved) it subscribes again with backoff, from the newest
// offset. Pushes published in between are not delivered here; clients recover them
// by seq. ready gets one token after the first successful subscribe.
func (g *Gateway) follow(ctx context.Context, topic string, ready chan<- struct{}) {
	first := true
	backoff := 100 * time.Millisecond
	for {
		sub, err := g.bus.Subscribe(ctx, topic, g.onPush)
		if err == nil {
			if first {
				ready <- struct{}{}
				first = false
			} else {
				g.log.Info("push subscription restored", "topic", topic)
			}
			backoff = 100 * time.Millisecond
			select {
			case <-ctx.Done():
				_ = sub.Close()
				return
			case <-sub.Done():
				err = sub.Err()
				_ = sub.Close()
			}
		}
		if ctx.Err() != nil {
			return
		}
		g.m.resubscribes.Inc()
		g.log.Warn("push subscription lost; resubscribing", "topic", topic, "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// OnDemandBuffers makes netpoll size connection buffers on demand and free them when a
// connection is idle (see wsnet.OnDemandBuffers). It is process-wide and must run
// before any netpoll connection exists: main calls it first thing.
func OnDemandBuffers() error { return wsnet.OnDemandBuffers() }
