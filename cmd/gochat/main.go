// Command gochat runs GoChat: with no flags everything in one process on this machine
// (embedded etcd, SQLite, in-process bus and state); with -target=gateway (or logic,
// task, repo, or a comma list) one part of a cluster.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/gochat/gochat/gateway"
)

func main() {
	if err := run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "gochat:", err)
		os.Exit(1)
	}
}

func run(args, environ []string, stdout, stderr io.Writer) error {
	// Before any netpoll connection exists: an idle HTTP keep-alive or Kitex connection
	// would otherwise pin ~12 KiB of netpoll buffers (see gateway.OnDemandBuffers).
	if err := gateway.OnDemandBuffers(); err != nil {
		return fmt.Errorf("netpoll buffers: %w", err)
	}
	cfg, opts, err := Load(args, environ, stderr)
	if err != nil {
		return err
	}
	if opts.listTargets {
		fmt.Fprintln(stdout, strings.Join(allTargets, "\n"))
		return nil
	}
	if opts.printConfig {
		b, err := cfg.Redacted()
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	}
	levels := new(slog.LevelVar)
	log := newLogger(cfg.Log, levels, stderr)
	bridgeFrameworkLogs(log)
	if n, ok := maxProcs(environ); ok {
		runtime.GOMAXPROCS(n)
		log.Info("scheduler", "gomaxprocs", n)
	}
	if p, ok := gcPercent(cfg, environ); ok {
		debug.SetGCPercent(p)
		log.Info("garbage collector", "gogc", p)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	n, err := newNode(cfg, log, levels)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

// newLogger builds the process logger: text for people, JSON for machines.
func newLogger(c LogConfig, levels *slog.LevelVar, w io.Writer) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(c.Level)) // validated by Config.Validate
	levels.Set(l)
	opts := &slog.HandlerOptions{Level: levels}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
