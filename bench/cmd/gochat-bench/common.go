package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gochat/gochat/bench/internal/report"
)

// common holds the flags every subcommand shares.
type common struct {
	gateways string // comma list of gateway host:port (HTTP API and /ws)
	admins   string // comma list of gateway admin host:port (/metrics), same order; optional
	secret   string // the deployment's auth.secret: mint tokens instead of creating guests
	out      string // result directory
	topology string // label recorded in the result: all | split | ...
	loops    int    // client epoll loops per process
	sources  int    // source addresses 127.0.0.2 ... used round-robin
	strict   bool   // exit non-zero when a target fails

	gw   []netip.AddrPort
	adm  []string
	apis []*api // one per gateway: setup reuses their connections
}

// newFlags is a subcommand's flag set, errors to stderr, with the common flags.
func newFlags(name string, stderr io.Writer) (*flag.FlagSet, *common) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &common{}
	c.register(fs)
	return fs, c
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.gateways, "gateways", "127.0.0.1:8080", "comma list of gateway host:port (HTTP API and /ws); sockets are spread round-robin")
	fs.StringVar(&c.admins, "admins", "", "comma list of the gateways' admin host:port, same order, for RSS and heap from /metrics (empty: not measured)")
	fs.StringVar(&c.secret, "secret", "", "the deployment's auth.secret: mint tokens for synthetic users instead of creating guests through the API (bench only)")
	fs.StringVar(&c.out, "out", "bench/results", "directory for the <timestamp>-<name>.json and .md result files")
	fs.StringVar(&c.topology, "topology", "all", "topology label recorded with the result (all, split, ...)")
	fs.IntVar(&c.loops, "loops", 0, "client epoll loops per process (0 = GOMAXPROCS)")
	fs.IntVar(&c.sources, "sources", 32, "source addresses 127.0.0.2... to spread client ports over (IP_BIND_ADDRESS_NO_PORT); 0 = kernel's choice")
	fs.BoolVar(&c.strict, "strict", false, "exit with an error when a target fails")
}

// parse parses a subcommand's flags (no positional arguments) and the shared ones.
func (c *common) parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	c.gw, c.apis = nil, nil
	for s := range strings.SplitSeq(c.gateways, ",") {
		ap, err := netip.ParseAddrPort(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-gateways %q: %w", s, err)
		}
		c.gw = append(c.gw, ap)
		c.apis = append(c.apis, newAPI("http://"+ap.String()))
	}
	c.adm = nil
	if c.admins != "" {
		for s := range strings.SplitSeq(c.admins, ",") {
			c.adm = append(c.adm, strings.TrimSpace(s))
		}
		if len(c.adm) != len(c.gw) {
			return fmt.Errorf("-admins lists %d addresses for %d gateways", len(c.adm), len(c.gw))
		}
	}
	if c.sources < 0 || c.sources > 250 {
		return errors.New("-sources must be 0..250")
	}
	return nil
}

func (c *common) sourceIPs() []netip.Addr {
	ips := make([]netip.Addr, c.sources)
	for i := range ips {
		ips[i] = netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)})
	}
	return ips
}

func (c *common) apiFor(i int) *api { return c.apis[i%len(c.apis)] }

// config records the shared flags in a result.
func (c *common) config(r *report.Result) {
	r.Topology = c.topology
	r.Config["gateways"] = c.gateways
	r.Config["admins"] = c.admins
	r.Config["minted_tokens"] = c.secret != ""
	r.Config["loops"] = c.loops
	r.Config["sources"] = c.sources
}

// finish writes the result files, prints the summary and, with -strict, fails on a
// missed target.
func (c *common) finish(r *report.Result, start time.Time, stdout io.Writer) error {
	r.Duration = time.Since(start).Seconds()
	js, md, err := r.Write(c.out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%s\nresult: %s\nsummary: %s\n", r.Markdown(), js, md)
	if c.strict && !r.Passed() {
		return errors.New("a target was missed")
	}
	return nil
}

// gwMetrics is what the harness reads from a gateway's /metrics.
type gwMetrics struct {
	RSS         float64 `json:"rss_bytes"`
	HeapInuse   float64 `json:"heap_inuse_bytes"`
	Goroutines  float64 `json:"goroutines"`
	Connections float64 `json:"connections"`
}

// scrape collects a gateway's metrics after a forced GC (pprof's heap endpoint runs
// one when asked), so heap and RSS say what the sockets hold, not garbage.
func scrape(ctx context.Context, admin string) (gwMetrics, error) {
	hc := &http.Client{Timeout: 20 * time.Second}
	get := func(path string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+path, nil)
		if err != nil {
			return nil, err
		}
		return hc.Do(req)
	}
	// Twice: sync.Pool (netpoll's buffer cache among them) survives one GC in its
	// victim cache.
	for range 2 {
		if resp, err := get("/debug/pprof/heap?gc=1"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	var m gwMetrics
	err := readGauges(ctx, hc, admin, map[string]*float64{
		"process_resident_memory_bytes": &m.RSS,
		"go_memstats_heap_inuse_bytes":  &m.HeapInuse,
		"go_goroutines":                 &m.Goroutines,
		"gochat_gateway_connections":    &m.Connections,
	})
	return m, err
}

// readGauges reads the named samples of admin's /metrics into want's pointers. A
// sample that is missing is an error, not zero: a process out of file descriptors,
// for one, cannot open /proc/self/stat and drops process_resident_memory_bytes.
func readGauges(ctx context.Context, hc *http.Client, admin string, want map[string]*float64) error {
	got, err := readSamples(ctx, hc, admin, slices.Collect(maps.Keys(want)))
	if err != nil {
		return err
	}
	var missing []string
	for name, p := range want {
		v, ok := got[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		*p = v
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("scrape %s: /metrics lacks %s", admin, strings.Join(missing, ", "))
	}
	return nil
}

// readSamples returns the samples of admin's /metrics named in names, a name
// being the metric with its labels as exposed (`x_sum{result="ok"}`); names the
// process does not expose are absent from the map.
func readSamples(ctx context.Context, hc *http.Client, admin string, names []string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", admin, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", admin, err)
	}
	defer resp.Body.Close()
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	got := make(map[string]float64, len(names))
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || !want[name] {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			got[name] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("scrape %s: %w", admin, err)
	}
	return got, nil
}

// serverCPU is the CPU time in seconds the processes behind admins have used so
// far (process_cpu_seconds_total, summed).
func serverCPU(ctx context.Context, admins []string) (float64, error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	var sum float64
	for _, a := range admins {
		var v float64
		if err := readGauges(ctx, hc, a, map[string]*float64{"process_cpu_seconds_total": &v}); err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// processCPU is this process's CPU time so far (user + system), in seconds.
func processCPU() (float64, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds(), nil
}

// machineCPU is the whole machine's CPU time so far, in clock ticks, from the first
// line of /proc/stat: all of it, and steal, the time the hypervisor gave to other
// guests while this one had work. Steal is how a run on a shared VM tells a slow host
// from a slow GoChat.
type machineCPU struct{ total, steal uint64 }

func readMachineCPU() (machineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, fmt.Errorf("machine CPU: %w", err)
	}
	return parseProcStat(b)
}

// parseProcStat reads "cpu  user nice system idle iowait irq softirq steal [guest
// guest_nice]"; guest time is already part of user, so the first eight are the total.
func parseProcStat(b []byte) (machineCPU, error) {
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return machineCPU{}, fmt.Errorf("machine CPU: /proc/stat begins %q, want the cpu line with 8 or more fields", line)
	}
	var m machineCPU
	for i, v := range f[1:9] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return machineCPU{}, fmt.Errorf("machine CPU: /proc/stat field %d: %w", i+1, err)
		}
		m.total += n
		if i == 7 {
			m.steal = n
		}
	}
	return m, nil
}

// machineReading is readMachineCPU's answer kept with its error, so that a run can
// read it twice and report the steal between, or why it has none.
type machineReading struct {
	cpu machineCPU
	err error
}

func readMachine() machineReading {
	cpu, err := readMachineCPU()
	return machineReading{cpu, err}
}

// stealTo is stealPct from a to b, or the error of either reading.
func (a machineReading) stealTo(b machineReading) (float64, error) {
	if err := errors.Join(a.err, b.err); err != nil {
		return 0, err
	}
	return stealPct(a.cpu, b.cpu), nil
}

// stealPct is the share of the machine's CPU time from a to b that was steal, in
// percent.
func stealPct(a, b machineCPU) float64 {
	if b.total <= a.total || b.steal < a.steal {
		return 0
	}
	return 100 * float64(b.steal-a.steal) / float64(b.total-a.total)
}

// parseRate accepts "1000" or "1k"/"10k"/"1.5m".
func parseRate(s string) (float64, error) {
	mul := 1.0
	switch {
	case strings.HasSuffix(s, "k"):
		mul, s = 1e3, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "m"):
		mul, s = 1e6, strings.TrimSuffix(s, "m")
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("rate %q: want a positive number, e.g. 5000 or 5k", s)
	}
	return v * mul, nil
}
