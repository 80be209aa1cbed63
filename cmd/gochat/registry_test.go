package main

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gochat/gochat/repo/repotest"
)

// TestRegistryLeases is the registry seam's contract, run against both of its
// implementations: the etcd a node embeds (all mode) and an etcd the node only dials
// (split mode). Every Kitex server registers under its service name, at the address
// it really listens on, with a lease of etcd.lease_ttl (not the 60 s default).
func TestRegistryLeases(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a topology")
	}
	tests := []struct {
		name     string
		setup    func(t *testing.T) (cfg Config, endpoints func(*node) []string)
		services []string
		// afterStop: the etcd outlives the node, so deregistration can be observed.
		afterStop bool
	}{
		{
			name: "embedded",
			setup: func(t *testing.T) (Config, func(*node) []string) {
				return baseConfig(t), func(n *node) []string { return n.etcd }
			},
			services: []string{"gochat.repo", "gochat.logic", "gochat.task"},
		},
		{
			name: "external",
			setup: func(t *testing.T) (Config, func(*node) []string) {
				e, err := startEmbeddedEtcd(context.Background(), t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = e.Close() })
				cfg := baseConfig(t)
				cfg.Target = "repo"
				cfg.Etcd.Endpoints = []string{e.Endpoint()}
				cfg.Store.Driver, cfg.Store.DSN = "mysql", repotest.MySQLDSN(t)
				cfg.Redis.Addr, cfg.Redis.Prefix = repotest.RedisAddr(t)
				return cfg, func(*node) []string { return []string{e.Endpoint()} }
			},
			services:  []string{"gochat.repo"},
			afterStop: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, endpoints := tt.setup(t)
			n, stop := startNodeStoppable(t, cfg, tt.name)
			waitReady(t, n)
			cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints(n), DialTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := cli.Get(ctx, "kitex/registry-etcd/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, kv := range resp.Kvs {
				key := string(kv.Key)
				for _, svc := range tt.services {
					if strings.HasPrefix(key, "kitex/registry-etcd/"+svc+"/127.0.0.1:") && !strings.HasSuffix(key, ":0") {
						seen[svc] = true
					}
				}
				ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
				if err != nil {
					t.Fatal(err)
				}
				if want := int64(cfg.Etcd.LeaseTTL / time.Second); ttl.GrantedTTL != want {
					t.Errorf("%s: lease TTL %ds, want %ds", key, ttl.GrantedTTL, want)
				}
			}
			if len(seen) != len(tt.services) {
				t.Fatalf("registered %v in %d keys, want %v", seen, len(resp.Kvs), tt.services)
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if tt.afterStop {
				// Graceful stop deregisters at once instead of waiting for the lease.
				resp, err := cli.Get(ctx, "kitex/registry-etcd/", clientv3.WithPrefix(), clientv3.WithCountOnly())
				if err != nil {
					t.Fatal(err)
				}
				if resp.Count != 0 {
					t.Fatalf("%d registrations left after a graceful stop", resp.Count)
				}
			}
		})
	}
}
