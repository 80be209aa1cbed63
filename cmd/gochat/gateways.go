package main

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// gatewayPrefix holds one key per live gateway, under a lease: a gateway that dies
// disappears from it within etcd.lease_ttl, and logic stops routing pushes to it.
const gatewayPrefix = "gochat/gateways/"

// registerGateway keeps gatewayPrefix+id alive until ctx is done, then revokes it, so
// a graceful stop is seen at once and a crash within the lease TTL (holdKey).
func registerGateway(ctx context.Context, cli *clientv3.Client, id string, ttl time.Duration, log *slog.Logger) {
	holdKey(ctx, cli, gatewayPrefix+id, time.Now().UTC().Format(time.RFC3339), ttl, log, nil)
}

// gatewaySet is the set of live gateways, kept current by watching gatewayPrefix.
// Safe for concurrent use.
type gatewaySet struct {
	mu    sync.RWMutex // guards alive and ready
	alive map[string]bool
	ready bool // the initial listing arrived; until then every gateway counts as alive
}

// Alive reports whether the gateway is registered. Before the first listing it says
// yes: dropping pushes for an unknown reason is worse than sending one too many.
func (s *gatewaySet) Alive(id string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return !s.ready || s.alive[id]
}

// watch lists gatewayPrefix and follows changes until ctx is done.
func (s *gatewaySet) watch(ctx context.Context, cli *clientv3.Client, log *slog.Logger) error {
	for {
		resp, err := cli.Get(ctx, gatewayPrefix, clientv3.WithPrefix())
		if err == nil {
			s.mu.Lock()
			s.alive = make(map[string]bool, len(resp.Kvs))
			for _, kv := range resp.Kvs {
				s.alive[strings.TrimPrefix(string(kv.Key), gatewayPrefix)] = true
			}
			s.ready = true
			s.mu.Unlock()
			wch := cli.Watch(ctx, gatewayPrefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
			for wr := range wch {
				if err = wr.Err(); err != nil {
					break
				}
				s.mu.Lock()
				for _, ev := range wr.Events {
					id := strings.TrimPrefix(string(ev.Kv.Key), gatewayPrefix)
					if ev.Type == clientv3.EventTypeDelete {
						delete(s.alive, id)
					} else {
						s.alive[id] = true
					}
				}
				s.mu.Unlock()
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("gateway watch interrupted; relisting", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}
