// Command devetcd is a DEVELOPMENT tool, not for production: a single-member etcd
// (go.etcd.io/etcd/server/v3/embed) on fixed loopback ports, so scripts/cluster.sh can
// run the split GoChat topology on a machine without the Debian etcd-server package.
//
// It has no authentication, no TLS, one member and no backups. GoChat keeps only
// service registrations and leases in etcd, which are rebuilt at every start, so
// throwing the data directory away is fine. Production runs a real etcd cluster
// (docker-compose.yml uses the official image).
//
//	devetcd -data-dir data/cluster/etcd -client-url http://127.0.0.1:2379 -peer-url http://127.0.0.1:2380
//
// It prints "devetcd ready <endpoint>" on stdout once it serves, and stops cleanly on
// SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "devetcd:", err)
		os.Exit(1)
	}
}

func run() error {
	dataDir := flag.String("data-dir", "data/devetcd", "etcd data directory (created if missing)")
	clientURL := flag.String("client-url", "http://127.0.0.1:2379", "client URL to listen on and advertise")
	peerURL := flag.String("peer-url", "http://127.0.0.1:2380", "peer URL to listen on and advertise")
	name := flag.String("name", "devetcd", "member name")
	logLevel := flag.String("log-level", "warn", "etcd log level: debug, info, warn, error")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", flag.Args())
	}
	cu, err := parseURL("client-url", *clientURL)
	if err != nil {
		return err
	}
	pu, err := parseURL("peer-url", *peerURL)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}

	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dataDir
	cfg.LogLevel = *logLevel
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

	fmt.Fprintln(os.Stderr, "devetcd: DEVELOPMENT etcd, single member, no auth/TLS — not for production")
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = serve(ctx, e, cu)
	e.Close() // graceful: stops serving, then closes the backend
	// etcd logs "server closed" errors while it stops; they are part of a normal stop.
	fmt.Fprintln(os.Stderr, "devetcd: stopped")
	return err
}

// serve waits for readiness, announces it, then runs until a signal or an etcd failure.
func serve(ctx context.Context, e *embed.Etcd, cu url.URL) error {
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		return errors.New("not ready after 60s")
	case err := <-e.Err():
		return fmt.Errorf("etcd: %w", err)
	case <-ctx.Done():
		return nil
	}
	fmt.Printf("devetcd ready %s\n", cu.String())

	select {
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr, "devetcd: signal received, stopping")
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd: %w", err)
	case <-e.Server.StopNotify():
		return errors.New("etcd server stopped")
	}
}

func parseURL(flagName, s string) (url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return url.URL{}, fmt.Errorf("-%s: %w", flagName, err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return url.URL{}, fmt.Errorf("-%s %q: want http://host:port", flagName, s)
	}
	return *u, nil
}
