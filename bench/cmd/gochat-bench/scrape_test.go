package main

import (
	"context"
	"errors"
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

// TestMachineCPU: the cpu line's first eight fields are the total (guest time is
// already in user), the eighth is steal; anything else is an error, not a zero.
func TestMachineCPU(t *testing.T) {
	stat := func(fields string) []byte {
		return []byte("cpu  " + fields + "\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 12345\n")
	}
	a, err := parseProcStat(stat("100 5 50 800 10 0 20 15 40 0"))
	if err != nil || a.total != 1000 || a.steal != 15 {
		t.Fatalf("parse = %+v, %v; want total 1000 (guest not added again), steal 15", a, err)
	}
	b, err := parseProcStat(stat("300 5 100 1405 10 0 40 140 90 0"))
	if err != nil {
		t.Fatal(err)
	}
	if got := stealPct(a, b); got != 12.5 { // 125 of 1,000 ticks
		t.Errorf("steal between = %v%%, want 12.5", got)
	}
	if got := stealPct(b, b); got != 0 {
		t.Errorf("steal over no time = %v, want 0", got)
	}
	if got, err := (machineReading{cpu: a}).stealTo(machineReading{cpu: b}); err != nil || got != 12.5 {
		t.Errorf("stealTo = %v, %v; want 12.5", got, err)
	}
	unread := machineReading{err: errors.New("no /proc")}
	if _, err := (machineReading{cpu: a}).stealTo(unread); err == nil {
		t.Error("stealTo a reading that failed: no error")
	}
	for _, bad := range []string{"", "intr 1 2 3\n", "cpu  1 2 3 4 5 6 7\n", "cpu  1 2 3 4 5 6 7 x 9 10\n"} {
		if m, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parse %q = %+v, want an error", bad, m)
		}
	}
	if _, err := readMachineCPU(); err != nil {
		t.Errorf("this machine's /proc/stat: %v", err)
	}
}
