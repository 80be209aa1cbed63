package report

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gochat/gochat/bench/internal/stats"
)

func TestAddTarget(t *testing.T) {
	r := New("conns")
	for _, c := range []struct {
		op             string
		threshold, val float64
		pass           bool
	}{
		{">=", 10000, 12345.6, true},
		{">=", 10000, 10000, true}, // equality passes
		{">=", 10000, 9999.999, false},
		{"<=", 50, 49.9, true},
		{"<=", 50, 50, true}, // equality passes
		{"<=", 50, 50.0001, false},
		{">=", 0, math.NaN(), false},
		{"<=", 1, math.Inf(-1), true},
		{"<", 50, 49.9, true},
		{"<", 50, 50, false}, // strict: equality fails
		{">", 50, 50, false},
		{">", 50, 50.1, true},
	} {
		r.AddTarget("x", c.op, c.threshold, c.val, "u")
		got := r.Targets[len(r.Targets)-1]
		if got.Pass != c.pass {
			t.Errorf("%v %s %v: Pass = %v, want %v", c.val, c.op, c.threshold, got.Pass, c.pass)
		}
		if got.Op != c.op || got.Threshold != c.threshold || got.Unit != "u" || got.Name != "x" {
			t.Errorf("target fields not kept: %+v", got)
		}
	}
	if r.Passed() {
		t.Error("Passed() true with failing targets")
	}
}

func TestAddTargetUnknownOp(t *testing.T) {
	for _, op := range []string{"==", "=>", "≥", "", "=<"} {
		r := New("x")
		r.AddTarget("m", op, 1, 1000, "")
		tg := r.Targets[0]
		if tg.Pass || !strings.Contains(tg.Note, "unknown operator") {
			t.Errorf("op %q: Pass %v Note %q; want fail with a note", op, tg.Pass, tg.Note)
		}
		if r.Passed() {
			t.Errorf("op %q: Passed() = true", op)
		}
	}
}

func TestAddUnmeasured(t *testing.T) {
	r := New("x")
	r.AddUnmeasured("rss", "<=", 2, "KiB", "/metrics lacks process_resident_memory_bytes")
	tg := r.Targets[0]
	if tg.Pass || r.Passed() {
		t.Fatalf("unmeasured target passes: %+v", tg)
	}
	if want := "FAIL rss <= 2: 0 KiB (not measured: /metrics lacks process_resident_memory_bytes)"; tg.Line() != want {
		t.Errorf("Line() = %q, want %q", tg.Line(), want)
	}
	if _, _, err := r.Write(t.TempDir()); err != nil {
		t.Errorf("Write: %v", err)
	}
}

func TestPassed(t *testing.T) {
	r := New("x")
	if !r.Passed() {
		t.Fatal("no targets should pass")
	}
	r.AddTarget("a", ">=", 1, 2, "")
	r.AddTarget("b", "<=", 1, 0, "")
	if !r.Passed() {
		t.Fatal("all passing targets: Passed() = false")
	}
	r.AddTarget("c", "<=", 1, 2, "")
	if r.Passed() {
		t.Fatal("one failing target: Passed() = true")
	}
}

func TestNewFillsFacts(t *testing.T) {
	before := time.Now().UTC()
	r := New("conns")
	if r.Started.Before(before.Add(-time.Second)) || r.Started.Location() != time.UTC {
		t.Errorf("Started = %v", r.Started)
	}
	if r.Commit == "" {
		t.Error("Commit empty; want a hash or \"unknown\"")
	}
	if r.GOMAXPROCS < 1 || r.Machine.Cores < 1 || r.Machine.GoVersion == "" {
		t.Errorf("GOMAXPROCS %d machine %+v", r.GOMAXPROCS, r.Machine)
	}
	if r.Config == nil || r.Metrics == nil {
		t.Error("Config/Metrics must be ready for assignment")
	}
	r.Finish()
	if r.Duration < 0 || r.Duration > 60 {
		t.Errorf("Duration = %v", r.Duration)
	}
}

func sampleResult(t *testing.T) *Result {
	t.Helper()
	r := New("conns")
	r.Topology = "split"
	r.Duration = 12.5
	r.Commit = "abc1234-dirty"
	r.Config["n"] = float64(1000)
	r.Config["url"] = "http://127.0.0.1:8080"
	r.Config["open"] = true
	r.Metrics["connects_per_s"] = 12345.6
	r.Metrics["gateways"] = map[string]any{
		"gw-1": map[string]any{"conns": float64(500), "rss_mb": 12.25},
		"gw-2": map[string]any{"conns": float64(500), "rss_mb": 13.5},
	}
	r.AddTarget("connects/s", ">=", 10000, 12345.6, "conns/s")
	r.AddTarget("handshake p99", "<=", 50, 75.25, "ms")
	r.AddNote("gateway %s restarted", "gw-2")
	return r
}

func TestWriteAndDecode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "results", "nested") // Write must create it
	r := sampleResult(t)
	jp, mp, err := r.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`^\d{8}T\d{6}Z-conns\.(json|md)$`)
	for _, p := range []string{jp, mp} {
		if filepath.Dir(p) != dir || !name.MatchString(filepath.Base(p)) {
			t.Errorf("path %s does not match <dir>/20060102T150405Z-conns.{json,md}", p)
		}
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
	if want := r.Started.UTC().Format(timestampLayout); !strings.HasPrefix(filepath.Base(jp), want) {
		t.Errorf("json name %s does not start with the run's start %s", filepath.Base(jp), want)
	}
	if strings.TrimSuffix(jp, ".json") != strings.TrimSuffix(mp, ".md") {
		t.Errorf("json %s and md %s do not share a stem", jp, mp)
	}

	data, err := os.ReadFile(jp)
	if err != nil {
		t.Fatal(err)
	}
	var got Result
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	want := *r
	want.mono = time.Time{} // process-local, never serialised
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded result differs:\n got %+v\nwant %+v", got, want)
	}

	md, err := os.ReadFile(mp)
	if err != nil {
		t.Fatal(err)
	}
	if string(md) != r.Markdown() {
		t.Error("md file differs from Markdown()")
	}
	// Re-rendering the decoded record must give the same summary.
	if got.Markdown() != r.Markdown() {
		t.Errorf("Markdown of decoded result differs:\n%s\nvs\n%s", got.Markdown(), r.Markdown())
	}
}

func TestWriteNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	r := sampleResult(t)
	j1, m1, err := r.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := os.ReadFile(j1)

	// Same Started, so the same second by construction.
	r.Metrics["connects_per_s"] = 1.0
	j2, m2, err := r.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	if j2 == j1 || m2 == m1 {
		t.Fatalf("second Write reused %s / %s", j1, m1)
	}
	if !strings.HasSuffix(j2, "-conns-2.json") || !strings.HasSuffix(m2, "-conns-2.md") {
		t.Errorf("second write named %s, %s; want -2 suffix", j2, m2)
	}
	if now, _ := os.ReadFile(j1); string(now) != string(orig) {
		t.Error("first JSON file was overwritten")
	}

	// A stray .md for the -3 stem must push both files to -4.
	stem := strings.TrimSuffix(j1, ".json")
	if err := os.WriteFile(stem+"-3.md", []byte("stray"), 0o644); err != nil {
		t.Fatal(err)
	}
	j4, m4, err := r.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	if j4 != stem+"-4.json" || m4 != stem+"-4.md" {
		t.Errorf("third write named %s, %s; want the -4 pair", j4, m4)
	}
	if _, err := os.Stat(stem + "-3.json"); !os.IsNotExist(err) {
		t.Errorf("abandoned -3.json left behind: %v", err)
	}
	if b, _ := os.ReadFile(stem + "-3.md"); string(b) != "stray" {
		t.Error("stray md overwritten")
	}
}

func TestWriteUnsafeName(t *testing.T) {
	r := New("a/b c")
	jp, _, err := r.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(jp, "-a_b_c.json") {
		t.Errorf("path %s", jp)
	}
}

func TestMarkdown(t *testing.T) {
	r := sampleResult(t)
	h := stats.NewHistogram()
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	r.Metrics["handshake"] = h.Snapshot()
	r.Metrics["histogram"] = h
	r.Metrics["per_gw_latency"] = map[string]stats.Summary{"gw-1": h.Snapshot()}
	r.Metrics["rows"] = []struct {
		Gateway string `json:"gateway"`
		Conns   int    `json:"conns"`
	}{{"gw-1", 3}, {"gw-2", 4}}
	r.Config["timeout"] = 5 * time.Second
	md := r.Markdown()
	s := h.Snapshot()
	latencyRow := "| handshake | 1000 | " + strings.Join([]string{
		formatMs(s.P50), formatMs(s.P90), formatMs(s.P99), formatMs(s.P999), "1000.000", "500.500"}, " | ") + " |"

	for _, want := range []string{
		latencyRow,
		"# Benchmark conns: FAIL (1/2 targets)",
		"| Commit | abc1234-dirty |",
		"| Topology | split |",
		"| GOMAXPROCS | ",
		"| Duration | 12.5 s |",
		"| timeout | 5s |",
		"| url | http://127.0.0.1:8080 |",
		"| connects_per_s | 12345.6 |",
		"| gateways | conns | rss_mb |",
		"| gw-1 | 500 | 12.25 |",
		"| histogram | 1000 |",
		"| per_gw_latency.gw-1 | 1000 |",
		"| conns | gateway |",
		"| 3 | gw-1 |",
		"\nPASS connects/s >= 10000: 12345.6 conns/s\n",
		"\nFAIL handshake p99 <= 50: 75.25 ms\n",
		"- gateway gw-2 restarted",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	// Config and metrics keys are sorted.
	if strings.Index(md, "| n |") > strings.Index(md, "| open |") || strings.Index(md, "| open |") > strings.Index(md, "| url |") {
		t.Errorf("config keys not sorted:\n%s", md)
	}
	// Sections in the documented order.
	last := -1
	for _, h := range []string{"| Run |", "## Config", "## Metrics", "## Targets", "## Notes"} {
		i := strings.Index(md, h)
		if i <= last {
			t.Fatalf("section %q out of order", h)
		}
		last = i
	}
}

func TestTargetLine(t *testing.T) {
	for _, c := range []struct {
		t    Target
		want string
	}{
		{Target{Name: "connects/s", Op: ">=", Threshold: 10000, Value: 12345.6, Unit: "conns/s", Pass: true}, "PASS connects/s >= 10000: 12345.6 conns/s"},
		{Target{Name: "p99", Op: "<=", Threshold: 50, Value: 51.123456789, Unit: "ms"}, "FAIL p99 <= 50: 51.1235 ms"},
		{Target{Name: "errors", Op: "<=", Threshold: 0, Value: 0, Pass: true}, "PASS errors <= 0: 0"},
		{Target{Name: "x", Op: "~", Threshold: 1, Value: 2, Note: "unknown operator"}, "FAIL x ~ 1: 2 (unknown operator)"},
	} {
		if got := c.t.Line(); got != c.want {
			t.Errorf("Line() = %q, want %q", got, c.want)
		}
	}
}

func TestFormatFloat(t *testing.T) {
	for in, want := range map[float64]string{
		10000: "10000", 12345.6: "12345.6", 12345.678: "12345.7", 0.00123456789: "0.00123457",
		3.14159265: "3.14159", -2.5: "-2.5", 1234567.89: "1234567.9", 0: "0",
	} {
		if got := formatFloat(in); got != want {
			t.Errorf("formatFloat(%v) = %q, want %q", in, got, want)
		}
	}
}
