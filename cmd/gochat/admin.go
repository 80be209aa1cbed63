package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// admin is the per-process operator listener: /metrics, /healthz, /readyz,
// /debug/pprof/, /debug/config (redacted) and /log_level (GET, or PUT level=debug).
type admin struct {
	n   *node
	ln  net.Listener
	srv *http.Server
}

func newAdmin(n *node) (*admin, error) {
	ln, err := net.Listen("tcp", n.cfg.Admin.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin listen %s: %w", n.cfg.Admin.Addr, err)
	}
	a := &admin{n: n, ln: ln}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.HandleFunc("GET /debug/config", a.config)
	mux.HandleFunc("/log_level", a.logLevel)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return a, nil
}

func (a *admin) readyz(w http.ResponseWriter, _ *http.Request) {
	select {
	case <-a.n.draining:
	case <-a.n.ready:
		_, _ = w.Write([]byte("ready\n"))
		return
	default:
	}
	http.Error(w, "not ready", http.StatusServiceUnavailable)
}

func (a *admin) config(w http.ResponseWriter, _ *http.Request) {
	b, err := a.n.cfg.Redacted()
	if err != nil {
		http.Error(w, "cannot render config", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(b)
}

func (a *admin) logLevel(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut || r.Method == http.MethodPost {
		var l slog.Level
		if err := l.UnmarshalText([]byte(strings.TrimSpace(r.FormValue("level")))); err != nil {
			http.Error(w, "level must be debug, info, warn or error", http.StatusBadRequest)
			return
		}
		a.n.levels.Set(l)
	}
	_, _ = fmt.Fprintln(w, a.n.levels.Level().String())
}

// Run serves until ctx is done.
func (a *admin) Run(ctx context.Context) error {
	errCh := make(chan error, 1)
	go func() { errCh <- a.srv.Serve(a.ln) }()
	select {
	case err := <-errCh:
		return fmt.Errorf("admin: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := a.srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin shutdown: %w", err)
	}
	return nil
}
