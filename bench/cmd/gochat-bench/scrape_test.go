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
