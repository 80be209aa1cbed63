package main

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestRegistryLeases: every Kitex server registers in etcd under its service name,
// at the address it really listens on, with a lease of etcd.lease_ttl (not the 60 s
// default).
func TestRegistryLeases(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a topology")
	}
	cfg := baseConfig(t)
	n, stop := startNodeStoppable(t, cfg, "all")
	waitReady(t, n)
	cli, err := clientv3.New(clientv3.Config{Endpoints: n.etcd, DialTimeout: 5 * time.Second})
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
		for _, svc := range []string{"gochat.repo", "gochat.logic", "gochat.task"} {
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
	if len(seen) != 3 {
		t.Fatalf("registered services %v in %d keys, want repo, logic and task", seen, len(resp.Kvs))
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
