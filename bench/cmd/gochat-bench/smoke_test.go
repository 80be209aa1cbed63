package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gochat/gochat/bench/internal/report"
	"github.com/gochat/gochat/bench/internal/stats"
)

// TestMain lets conns re-run this test binary as its worker process.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// gochatAll builds cmd/gochat and runs it in all mode on loopback ports for the test;
// it returns the gateway and admin addresses and the auth secret.
func gochatAll(t *testing.T) (gw, admin, secret string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "gochat")
	build := exec.Command("go", "build", "-o", bin, "./cmd/gochat")
	build.Dir = "../../.." // the repository root (the workspace holds both modules)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build gochat: %v\n%s", err, out)
	}
	ports := freePorts(t, 5)
	gw, admin = ports[0], ports[1]
	secret = "smoke-secret-0123456789abcdef"
	cmd := exec.Command(bin, "-gateway.addr="+gw, "-admin.addr="+admin, "-logic.rpc_addr="+ports[2],
		"-task.rpc_addr="+ports[3], "-repo.rpc_addr="+ports[4], "-log.level=warn")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOCHAT_AUTH_SECRET="+secret, "GOCHAT_LOGIC_BCRYPT_COST=4")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed once Wait has returned (exitErr set, logs complete): both the
	// readiness loop and the cleanup wait on it, so neither can take the other's news.
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("gochat output:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return gw, admin, secret
			}
		}
		select {
		case <-exited:
			t.Fatalf("gochat exited: %v", exitErr) // the cleanup logs its output
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("gochat not ready after 60 s") // the cleanup logs its output
		}
	}
}

// freePorts returns n loopback addresses free now, for the gochat process to bind
// later. The ports are below the kernel's ephemeral range (32768–60999 here): a port
// picked by listening on :0 comes from that range, and before gochat binds it any
// outgoing connection of a test package running beside this one can take it as its
// local port (seen in CI: gochat exited at start; cmd/gochat's foFreeAddr has the
// same reason).
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	seen := map[string]bool{}
	for range 1000 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+rand.IntN(12000)))
		if seen[addr] {
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken: try another
		}
		l.Close()
		seen[addr] = true
		if addrs = append(addrs, addr); len(addrs) == n {
			return addrs
		}
	}
	t.Fatalf("only %d free ports in 20000–31999", len(addrs))
	return nil
}

// runSub runs one subcommand against the server and returns its decoded result file.
func runSub(t *testing.T, out string, args ...string) *report.Result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := run(append(args, "-out", out), &stdout, &stderr); err != nil {
		t.Fatalf("gochat-bench %s: %v\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if !strings.Contains(stderr.String(), args[0]+":") {
		t.Errorf("no progress line in stderr:\n%s", stderr.String())
	}
	files, err := filepath.Glob(filepath.Join(out, "*-"+args[0]+".json"))
	if err != nil || len(files) != 1 {
		t.Fatalf("result files for %s: %v %v", args[0], files, err)
	}
	md := strings.TrimSuffix(files[0], ".json") + ".md"
	mdb, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mdb), "PASS ") && !strings.Contains(string(mdb), "FAIL ") {
		t.Errorf("markdown summary has no PASS/FAIL line:\n%s", mdb)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var r report.Result
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Name != args[0] || len(r.Targets) == 0 {
		t.Errorf("result %s: name %q, %d targets", files[0], r.Name, len(r.Targets))
	}
	return &r
}

func metric(t *testing.T, r *report.Result, name string) float64 {
	t.Helper()
	v, ok := r.Metrics[name].(float64)
	if !ok {
		t.Fatalf("%s: metric %q missing or not a number: %#v", r.Name, name, r.Metrics[name])
	}
	return v
}

// summary decodes a histogram metric of a result file.
func summary(t *testing.T, r *report.Result, name string) stats.Summary {
	t.Helper()
	b, err := json.Marshal(r.Metrics[name])
	var s stats.Summary
	if err == nil {
		err = json.Unmarshal(b, &s)
	}
	if err != nil || r.Metrics[name] == nil {
		t.Fatalf("%s: metric %q missing or not a histogram: %#v (%v)", r.Name, name, r.Metrics[name], err)
	}
	return s
}

func target(t *testing.T, r *report.Result, name string) report.Target {
	t.Helper()
	for _, tg := range r.Targets {
		if tg.Name == name {
			return tg
		}
	}
	t.Fatalf("%s: no target %q in %+v", r.Name, name, r.Targets)
	return report.Target{}
}

// TestSmoke runs every subcommand at a tiny size against a real gochat (all mode) and
// checks what each one counted: nothing lost, every socket open, every delivery made.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gochat")
	}
	gw, admin, secret := gochatAll(t)
	common := []string{"-gateways", gw, "-admins", admin, "-sources", "4"}

	t.Run("conns minted tokens, two worker processes", func(t *testing.T) {
		r := runSub(t, t.TempDir(), append([]string{"conns", "-n", "60", "-procs", "2", "-hold", "100ms", "-secret", secret}, common...)...)
		if open, failed := metric(t, r, "open"), metric(t, r, "failed"); open != 60 || failed != 0 {
			t.Errorf("open %v failed %v, want 60 and 0", open, failed)
		}
		if tg := target(t, r, "failed connections"); !tg.Pass {
			t.Errorf("target %+v", tg)
		}
		// The servers' CPU is read in 10 ms ticks, too coarse for 60 sockets to be
		// sure of a nonzero reading; the workers' own is exact.
		if cpu := metric(t, r, "server_cpu_us_per_conn"); cpu < 0 {
			t.Errorf("server CPU per connection %v µs", cpu)
		}
		if cpu := metric(t, r, "harness_cpu_us_per_conn"); cpu <= 0 {
			t.Errorf("harness CPU per connection %v µs, want > 0", cpu)
		}
		checkSteal(t, metric(t, r, "storm_steal_pct"))
		gws, ok := r.Metrics["gateways"].([]any)
		if !ok || len(gws) != 1 {
			t.Fatalf("gateways metric: %#v", r.Metrics["gateways"])
		}
		if c := gws[0].(map[string]any)["connections"].(float64); c < 60 {
			t.Errorf("gateway reported %v connections while 60 were held", c)
		}
	})
	t.Run("conns guest tokens", func(t *testing.T) {
		r := runSub(t, t.TempDir(), append([]string{"conns", "-n", "20", "-users", "3", "-hold", "0s"}, common...)...)
		if open := metric(t, r, "open"); open != 20 {
			t.Errorf("open %v, want 20", open)
		}
	})
	t.Run("latency", func(t *testing.T) {
		r := runSub(t, t.TempDir(), append([]string{"latency", "-rate", "200", "-pairs", "3", "-groups", "1", "-group-size", "3",
			"-idle", "10", "-duration", "1s", "-warmup", "200ms", "-secret", secret}, common...)...)
		sent, acked := metric(t, r, "sent"), metric(t, r, "acked")
		if sent < 200 || acked != sent || metric(t, r, "unacked") != 0 {
			t.Errorf("sent %v acked %v unacked %v", sent, acked, metric(t, r, "unacked"))
		}
		// 3 of 4 conversations are 1:1 (one recipient), one is a group of 3 (two).
		if d := metric(t, r, "deliveries"); d < acked {
			t.Errorf("deliveries %v < acked %v", d, acked)
		}
		if metric(t, r, "duplicate_acks") != 0 || metric(t, r, "error_frames") != 0 {
			t.Errorf("duplicates or errors: %+v", r.Metrics)
		}
		checkSteal(t, metric(t, r, "steal_pct"))
	})
	t.Run("throughput", func(t *testing.T) {
		// 2 in flight: two of the three conversations with one send each; 5: all
		// three with two each.
		r := runSub(t, t.TempDir(), append([]string{"throughput", "-pairs", "3", "-inflight", "2,5", "-step", "1s", "-warmup", "200ms"}, common...)...)
		steps, ok := r.Metrics["steps"].([]any)
		if !ok || len(steps) != 2 {
			t.Fatalf("steps: %#v", r.Metrics["steps"])
		}
		want := []struct{ convs, window, inflight float64 }{{2, 1, 2}, {3, 2, 6}}
		for i, s := range steps {
			st := s.(map[string]any)
			if st["acked"].(float64) <= 0 || st["unacked"].(float64) != 0 {
				t.Errorf("step %v", st)
			}
			if w := want[i]; st["conversations"] != w.convs || st["window"] != w.window || st["in_flight"] != w.inflight {
				t.Errorf("step %d ran %v conversations × window %v = %v in flight, want %+v", i, st["conversations"], st["window"], st["in_flight"], w)
			}
			// All mode: every stage is behind the one admin.
			for _, k := range []string{"gateway_send_ms", "logic_send_ms", "commit_ms", "commit_messages", "writer_busy"} {
				if v, _ := st[k].(float64); v <= 0 {
					t.Errorf("step %d: %s = %v, want > 0", i, k, st[k])
				}
			}
			steal, ok := st["steal_pct"].(float64)
			if !ok {
				t.Errorf("step %d: steal_pct missing: %v", i, st)
			}
			checkSteal(t, steal)
		}
	})
	t.Run("fanout", func(t *testing.T) {
		r := runSub(t, t.TempDir(), append([]string{"fanout", "-receivers", "20", "-probes", "3", "-probe-rate", "20", "-messages", "5", "-rate", "20", "-secret", secret}, common...)...)
		if d, want := metric(t, r, "deliveries"), metric(t, r, "deliveries_expected"); d != want || want != 160 {
			t.Errorf("deliveries %v of %v, want 160 (20 receivers × 8 messages)", d, want)
		}
		if d := metric(t, r, "flood_deliveries"); d != 100 {
			t.Errorf("flood deliveries %v, want 100", d)
		}
		if metric(t, r, "messages_not_reaching_all") != 0 {
			t.Errorf("some messages missed receivers")
		}
		if !slices.ContainsFunc(r.Notes, func(n string) bool { return strings.Contains(n, "3 probes: their p99 is their maximum") }) {
			t.Errorf("no note that the p99 of 3 probes is their maximum: %q", r.Notes)
		}
		all, first := summary(t, r, "probe_time_to_all_receivers"), summary(t, r, "probe_time_to_first_receiver")
		// Each probe reaches its first receiver before its last of 20: the means
		// (exact, unlike the bucketed quantiles) differ.
		if all.Count != 3 || first.Count != 3 || first.Mean <= 0 || first.Mean >= all.Mean || first.Max > all.Max {
			t.Errorf("probes' time to first receiver %+v, to all %+v: want 3 each, first > 0 and before all", first, all)
		}
		for _, phase := range []string{"probe", "flood"} {
			if cpu := metric(t, r, phase+"_server_cpu_us_per_delivery"); cpu < 0 {
				t.Errorf("%s: server CPU per delivery %v µs", phase, cpu)
			}
			if cpu := metric(t, r, phase+"_harness_cpu_us_per_delivery"); cpu <= 0 {
				t.Errorf("%s: harness CPU per delivery %v µs, want > 0", phase, cpu)
			}
			checkSteal(t, metric(t, r, phase+"_steal_pct"))
		}
	})
}

// checkSteal: a share of the machine's CPU time, read from /proc/stat on Linux.
func checkSteal(t *testing.T, pct float64) {
	t.Helper()
	if pct < 0 || pct > 100 {
		t.Errorf("steal %v%%, want 0–100", pct)
	}
}
