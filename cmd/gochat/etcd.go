package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// embeddedEtcd is a single-member etcd inside this process. Its data is throwaway:
// it only holds registrations and leases, which are rebuilt at every start.
type embeddedEtcd struct {
	e   *embed.Etcd
	dir string
}

// startEmbeddedEtcd starts etcd on loopback ports chosen by the kernel.
func startEmbeddedEtcd(ctx context.Context, parent string) (*embeddedEtcd, error) {
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("etcd data dir: %w", err)
	}
	dir, err := os.MkdirTemp(parent, "embedded-")
	if err != nil {
		return nil, fmt.Errorf("etcd data dir: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "gochat"
	cfg.Dir = dir
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	u, _ := url.Parse("http://127.0.0.1:0")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*u}, []url.URL{*u}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*u}, []url.URL{*u}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		e.Close()
		_ = os.RemoveAll(dir)
		return nil, errors.New("embedded etcd not ready after 20s")
	case <-ctx.Done():
		e.Close()
		_ = os.RemoveAll(dir)
		return nil, ctx.Err()
	}
	return &embeddedEtcd{e: e, dir: dir}, nil
}

// Endpoint is the client URL.
func (m *embeddedEtcd) Endpoint() string { return "http://" + m.e.Clients[0].Addr().String() }

// Close stops etcd and removes its data.
func (m *embeddedEtcd) Close() error {
	m.e.Close()
	return os.RemoveAll(m.dir)
}

// leaseNodeID claims a free snowflake node id (0..1023) in etcd under a lease that
// lives as long as the process: two repo processes never share a node id, so their
// ids never collide. The returned stop function revokes the lease.
func leaseNodeID(ctx context.Context, cli *clientv3.Client, ttl time.Duration) (int64, func(), error) {
	lease, err := cli.Grant(ctx, int64(max(ttl/time.Second, 1)))
	if err != nil {
		return 0, nil, fmt.Errorf("grant node-id lease: %w", err)
	}
	kctx, cancel := context.WithCancel(context.Background())
	ch, err := cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		cancel()
		return 0, nil, fmt.Errorf("keep node-id lease alive: %w", err)
	}
	go func() {
		for range ch { // drain keep-alive responses until cancelled
		}
	}()
	stop := func() {
		cancel()
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		defer rcancel()
		_, _ = cli.Revoke(rctx, lease.ID)
	}
	start := rand.Int64N(1024)
	for i := range int64(1024) {
		id := (start + i) % 1024
		key := fmt.Sprintf("gochat/snowflake/%d", id)
		resp, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, "repo", clientv3.WithLease(lease.ID))).
			Commit()
		if err != nil {
			stop()
			return 0, nil, fmt.Errorf("claim node id: %w", err)
		}
		if resp.Succeeded {
			return id, stop, nil
		}
	}
	stop()
	return 0, nil, errors.New("all 1024 snowflake node ids are taken")
}
