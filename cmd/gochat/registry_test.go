package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cloudwego/kitex/pkg/discovery"
	"github.com/cloudwego/kitex/pkg/registry"
	etcdreg "github.com/kitex-contrib/registry-etcd"
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

// TestKitexRegistry: the registry writes what registry-etcd's resolver reads, takes
// a key back at once on Deregister, and, when its lease is lost (here revoked from
// outside, as when keepalives starve past the TTL), registers again as soon as the
// etcd client sees the loss (about a second here) instead of registry-etcd's 30 s.
func TestKitexRegistry(t *testing.T) {
	e, err := startEmbeddedEtcd(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	r := newKitexRegistry(cli, time.Second, testLogger(t, "registry"))
	info := &registry.Info{
		ServiceName: "gochat.test",
		Addr:        &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4321},
		Weight:      7,
		Tags:        map[string]string{"zone": "a"},
	}
	if err := r.Register(info); err != nil {
		t.Fatalf("Register: %v", err)
	}
	if err := r.Register(info); err == nil {
		t.Error("a second Register of the same server succeeded")
	}
	res, err := etcdreg.NewEtcdResolver([]string{e.Endpoint()})
	if err != nil {
		t.Fatal(err)
	}
	got, err := res.Resolve(ctx, "gochat.test")
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if len(got.Instances) != 1 {
		t.Fatalf("resolved %d instances, want 1", len(got.Instances))
	}
	if in := got.Instances[0]; in.Address().String() != "127.0.0.1:4321" || in.Weight() != 7 || !hasTag(in, "zone", "a") {
		t.Fatalf("resolved %+v; want one instance 127.0.0.1:4321, weight 7, zone a", got.Instances)
	}

	const key = kitexRegistryPrefix + "gochat.test/127.0.0.1:4321"
	lease := func() clientv3.LeaseID {
		t.Helper()
		resp, err := cli.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return clientv3.NoLease
		}
		return clientv3.LeaseID(resp.Kvs[0].Lease)
	}
	old := lease()
	if old == clientv3.NoLease {
		t.Fatal("key not registered")
	}
	lost := time.Now()
	if _, err := cli.Revoke(ctx, old); err != nil {
		t.Fatal(err)
	}
	var back clientv3.LeaseID
	for back == clientv3.NoLease || back == old {
		if ctx.Err() != nil {
			t.Fatal("not registered again within 30 s of losing its lease")
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not a wait for luck
		back = lease()
	}
	if took := time.Since(lost); took > 3*time.Second {
		t.Errorf("registered again %v after losing its lease, want about a second", took)
	} else {
		t.Logf("registered again %v after losing its lease", took)
	}

	if err := r.Deregister(info); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	if l := lease(); l != clientv3.NoLease {
		t.Errorf("key still held (lease %x) after Deregister", l)
	}
	if err := r.Deregister(info); err == nil {
		t.Error("Deregister of a server not registered succeeded")
	}
}

func TestKitexEntry(t *testing.T) {
	key, val, err := kitexEntry(&registry.Info{ServiceName: "s", Addr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 80}, Weight: 10})
	if err != nil || key != "kitex/registry-etcd/s/10.1.2.3:80" || val != `{"network":"tcp","address":"10.1.2.3:80","weight":10,"tags":null}` {
		t.Errorf("kitexEntry = %q, %q, %v", key, val, err)
	}
	for _, a := range []string{"0.0.0.0", "::"} {
		key, _, err := kitexEntry(&registry.Info{ServiceName: "s", Addr: &net.TCPAddr{IP: net.ParseIP(a), Port: 80}})
		if err != nil {
			t.Logf("%s: %v (no non-loopback IPv4 here)", a, err)
			continue
		}
		if strings.Contains(key, "/0.0.0.0:") || strings.Contains(key, "[::]") {
			t.Errorf("unspecified host %s registered as %q", a, key)
		}
	}
	for _, info := range []*registry.Info{nil, {Addr: &net.TCPAddr{}}, {ServiceName: "s"}} {
		if _, _, err := kitexEntry(info); err == nil {
			t.Errorf("kitexEntry(%+v) accepted it", info)
		}
	}
}

func hasTag(in discovery.Instance, key, want string) bool {
	v, ok := in.Tag(key)
	return ok && v == want
}
