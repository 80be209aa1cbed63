package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A gauge missing from /metrics (a process out of file descriptors drops the
// process collector's) must be an error, never read as zero.
func TestScrapeMissingGauge(t *testing.T) {
	full := "process_resident_memory_bytes 1.5e+08\ngo_memstats_heap_inuse_bytes 1e+08\ngo_goroutines 42\ngochat_gateway_connections 7\n"
	for _, tt := range []struct {
		name, body, wantErr string
	}{
		{"complete", full, ""},
		{"no rss", strings.Replace(full, "process_resident_memory_bytes 1.5e+08\n", "", 1), "lacks process_resident_memory_bytes"},
		{"no connections", strings.Replace(full, "gochat_gateway_connections 7\n", "", 1), "lacks gochat_gateway_connections"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/metrics" {
					fmt.Fprint(w, "# HELP x y\n"+tt.body)
				}
			}))
			defer srv.Close()
			m, err := scrape(context.Background(), strings.TrimPrefix(srv.URL, "http://"))
			if tt.wantErr == "" {
				if err != nil || m.RSS != 1.5e8 || m.HeapInuse != 1e8 || m.Goroutines != 42 || m.Connections != 7 {
					t.Fatalf("scrape = %+v, %v", m, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("scrape err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// serverCPU sums process_cpu_seconds_total over the admins and fails when one
// lacks it.
func TestServerCPU(t *testing.T) {
	serve := func(body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/metrics" {
				fmt.Fprint(w, "# HELP process_cpu_seconds_total x\n"+body)
			}
		}))
		t.Cleanup(srv.Close)
		return strings.TrimPrefix(srv.URL, "http://")
	}
	a := serve("process_cpu_seconds_total 1.25\ngo_goroutines 3\n")
	b := serve("process_cpu_seconds_total 40\n")
	none := serve("go_goroutines 3\n")
	if got, err := serverCPU(context.Background(), []string{a, b}); err != nil || got != 41.25 {
		t.Fatalf("serverCPU = %v, %v; want 41.25", got, err)
	}
	if _, err := serverCPU(context.Background(), []string{a, none}); err == nil || !strings.Contains(err.Error(), "lacks process_cpu_seconds_total") {
		t.Fatalf("serverCPU with a server lacking the counter: err = %v", err)
	}
}
