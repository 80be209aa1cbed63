package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/cloudwego/kitex/pkg/registry"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// holdKey keeps key = val in etcd under a lease of ttl until ctx is done, then revokes
// the lease so that the key goes at once. When the lease is lost (keepalives starved
// past the TTL on a saturated machine, etcd restarted or unreachable for a while) it
// grants a new lease and puts the key again: at once, then every retryEvery while
// that fails, for as long as ctx lives. If first is not nil it receives the outcome
// of the first attempt, and a failed first attempt ends holdKey.
func holdKey(ctx context.Context, cli *clientv3.Client, key, val string, ttl time.Duration, log *slog.Logger, first chan<- error) {
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, max(ttl, 3*time.Second))
		lease, err := cli.Grant(actx, int64(max(ttl/time.Second, 1)))
		if err == nil {
			_, err = cli.Put(actx, key, val, clientv3.WithLease(lease.ID))
		}
		cancel()
		var ch <-chan *clientv3.LeaseKeepAliveResponse
		if err == nil {
			ch, err = cli.KeepAlive(ctx, lease.ID)
		}
		if attempt == 0 && first != nil {
			first <- err
			if err != nil {
				revoke(cli, lease)
				return
			}
		}
		wait := retryEvery // after a failed attempt
		if err == nil {
			if attempt > 0 {
				log.Info("etcd registration restored", "key", key)
			}
			for range ch { // drains until the lease is lost or ctx is done
			}
			err, wait = fmt.Errorf("lease %x lost", lease.ID), 0 // etcd answers: try again now
		}
		if ctx.Err() != nil {
			revoke(cli, lease)
			return
		}
		log.Warn("etcd registration interrupted; registering again", "key", key, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			revoke(cli, lease)
			return
		case <-time.After(wait):
		}
	}
}

// retryEvery paces holdKey's attempts after a lost lease.
const retryEvery = 500 * time.Millisecond

func revoke(cli *clientv3.Client, lease *clientv3.LeaseGrantResponse) {
	if lease == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = cli.Revoke(ctx, lease.ID) // the lease expires by itself otherwise
}

// kitexRegistry is a Kitex registry.Registry on etcd that writes the keys and values
// of kitex-contrib/registry-etcd, so its resolver finds the servers, but keeps them
// registered with holdKey. registry-etcd's own registry looks for a lost key only every
// 30 s and stops looking after 5 failed looks, which left a logic or repo instance
// whose lease expired under load out of rotation for up to 30 s, or for good after an
// etcd outage of about a minute. Ours also shares the node's etcd client instead of
// dialling one per server that is never closed.
type kitexRegistry struct {
	cli *clientv3.Client
	ttl time.Duration
	log *slog.Logger

	mu   sync.Mutex
	held map[string]func() // key → stop holding it (and wait until it is revoked)
}

var _ registry.Registry = (*kitexRegistry)(nil)

// kitexRegistryPrefix is registry-etcd's default key prefix, which its resolver reads.
const kitexRegistryPrefix = "kitex/registry-etcd/"

func newKitexRegistry(cli *clientv3.Client, ttl time.Duration, log *slog.Logger) *kitexRegistry {
	return &kitexRegistry{cli: cli, ttl: ttl, log: log, held: map[string]func(){}}
}

// Register puts the server's key and keeps it until Deregister. It fails if the first
// registration fails (Kitex then fails the server's start).
func (r *kitexRegistry) Register(info *registry.Info) error {
	key, val, err := kitexEntry(info)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.held[key]; ok {
		return fmt.Errorf("etcd registry: %s is already registered", key)
	}
	ctx, cancel := context.WithCancel(context.Background())
	first, done := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(done)
		holdKey(ctx, r.cli, key, val, r.ttl, r.log, first)
	}()
	if err := <-first; err != nil {
		cancel()
		<-done
		return fmt.Errorf("etcd registry: register %s: %w", key, err)
	}
	r.held[key] = func() { cancel(); <-done }
	return nil
}

// Deregister removes the server's key at once.
func (r *kitexRegistry) Deregister(info *registry.Info) error {
	key, _, err := kitexEntry(info)
	if err != nil {
		return err
	}
	r.mu.Lock()
	stop, ok := r.held[key]
	delete(r.held, key)
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("etcd registry: %s is not registered", key)
	}
	stop()
	return nil
}

// kitexEntry is registry-etcd's key and value for info: the key is
// prefix/service/host:port, the value its instanceInfo JSON. An unspecified listen
// host is replaced by the machine's first non-loopback IPv4 address, as registry-etcd
// does.
func kitexEntry(info *registry.Info) (key, val string, err error) {
	if info == nil || info.ServiceName == "" || info.Addr == nil {
		return "", "", errors.New("etcd registry: missing service name or address")
	}
	host, port, err := net.SplitHostPort(info.Addr.String())
	if err != nil {
		return "", "", fmt.Errorf("etcd registry: address %q: %w", info.Addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if host, err = localIPv4(); err != nil {
			return "", "", fmt.Errorf("etcd registry: %w", err)
		}
	}
	addr := net.JoinHostPort(host, port)
	b, err := json.Marshal(struct {
		Network string            `json:"network"`
		Address string            `json:"address"`
		Weight  int               `json:"weight"`
		Tags    map[string]string `json:"tags"`
	}{info.Addr.Network(), addr, info.Weight, info.Tags})
	if err != nil {
		return "", "", fmt.Errorf("etcd registry: encode %s: %w", info.ServiceName, err)
	}
	return kitexRegistryPrefix + info.ServiceName + "/" + addr, string(b), nil
}

func localIPv4() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("list interface addresses: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() {
			if v4 := n.IP.To4(); v4 != nil {
				return v4.String(), nil
			}
		}
	}
	return "", errors.New("no non-loopback IPv4 address to register")
}
