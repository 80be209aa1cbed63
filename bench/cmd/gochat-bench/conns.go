package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gochat/gochat/bench/internal/report"
	"github.com/gochat/gochat/bench/internal/stats"
	"github.com/gochat/gochat/bench/internal/wsc"
)

// perProcess is how many sockets one harness process opens: this machine caps a
// process at 20,000 open files, and a few are needed for everything else.
const perProcess = 19000

// workerEnv marks a harness process started by conns as its worker (tests re-run
// their own binary the same way).
const workerEnv = "GOCHAT_BENCH_WORKER"

// workerReport is what a conns worker writes to its stdout, one JSON object per line:
// progress while dialing, then a final line once every dial finished.
type workerReport struct {
	Done      bool            `json:"done"`
	Open      int64           `json:"open"`
	Failed    int64           `json:"failed"`
	FirstDial int64           `json:"first_dial_ns,omitempty"`
	LastOpen  int64           `json:"last_open_ns,omitempty"`
	Handshake json.RawMessage `json:"handshake,omitempty"` // stats.Histogram
	Errors    map[string]int  `json:"errors,omitempty"`    // failure reasons, counted
	Lost      int64           `json:"lost,omitempty"`      // sockets closed by the other side after opening
	CPU       float64         `json:"cpu_s,omitempty"`     // the worker's CPU seconds (user+system) from its first dial to its last handshake
}

// runConns is the connection storm and density test: N authenticated sockets over
// several gateways, opened by worker processes (≤19,000 sockets each) with frugal epoll
// clients from many source addresses; then held idle while gateway memory is read.
func runConns(args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("conns", stderr)
	n := fs.Int("n", 1000, "sockets to open in all")
	procs := fs.Int("procs", 0, "worker processes (0 = enough for 19,000 sockets each)")
	users := fs.Int("users", 200, "accounts to spread the sockets over when tokens come from the guest API (no -secret)")
	inflight := fs.Int("inflight", 256, "handshakes in flight per worker: more than the servers answer within the gateway's 5 s handshake deadline come back 503 (16 workers × 512 did at 180k sockets on 2 cores)")
	hold := fs.Duration("hold", 5*time.Second, "idle time after the storm before memory is read")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *n < 1 || *users < 1 || *inflight < 1 || *procs < 0 {
		return errors.New("-n, -users and -inflight must be positive")
	}
	if *procs == 0 {
		*procs = (*n + perProcess - 1) / perProcess
	}
	if (*n+*procs-1) / *procs > perProcess {
		return fmt.Errorf("-procs %d: %d sockets per process exceed the %d this machine's open-file cap allows", *procs, (*n+*procs-1) / *procs, perProcess)
	}
	ctx := context.Background()
	start := time.Now()
	stderr = &lockedWriter{w: stderr} // workers' stderr and the progress line share it
	r := report.New("conns")
	c.config(r)
	r.Config["n"], r.Config["procs"], r.Config["inflight"], r.Config["hold"] = *n, *procs, *inflight, hold.String()
	workerEnvs := []string{workerEnv + "=1", "GOCHAT_BENCH_SECRET=" + c.secret}
	if mp := workerProcs(*procs, runtime.NumCPU(), os.Getenv("GOMAXPROCS")); mp > 0 {
		workerEnvs = append(workerEnvs, "GOMAXPROCS="+strconv.Itoa(mp))
		r.Config["worker_gomaxprocs"] = mp
	}

	var tokens []string
	if c.secret == "" {
		r.Config["users"] = *users
		accts, err := makeAccounts(ctx, c, *users, 0)
		if err != nil {
			return fmt.Errorf("guest accounts: %w", err)
		}
		for _, a := range accts {
			tokens = append(tokens, a.Token)
		}
	}
	before := make([]gwMetrics, len(c.adm))
	for i, a := range c.adm {
		m, err := scrape(ctx, a)
		if err != nil {
			return err
		}
		before[i] = m
	}

	// The servers' CPU over the storm, per socket opened: steadier than the rate on a
	// shared machine, so changes to the connect path compare by it.
	cpu0, cpuErr := serverCPU(ctx, c.adm)
	machine0 := readMachine()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	tokFile := ""
	if tokens != nil {
		f, err := os.CreateTemp("", "gochat-bench-tokens-*")
		if err != nil {
			return err
		}
		tokFile = f.Name()
		defer os.Remove(tokFile)
		_, err = f.WriteString(strings.Join(tokens, "\n"))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		last  atomic.Pointer[workerReport]
		done  chan workerReport
		fail  chan error
	}
	kids := make([]*child, *procs)
	base := syntheticBase()
	offset := 0
	for w := range *procs {
		share := *n / *procs
		if w < *n%*procs {
			share++
		}
		wargs := []string{"conns-worker", "-n", strconv.Itoa(share), "-offset", strconv.Itoa(offset),
			"-uid-base", strconv.FormatInt(base, 10), "-inflight", strconv.Itoa(*inflight),
			"-gateways", c.gateways, "-loops", strconv.Itoa(c.loops), "-sources", strconv.Itoa(c.sources),
			"-tokens", tokFile}
		offset += share
		cmd := exec.Command(exe, wargs...)
		cmd.Env = append(os.Environ(), workerEnvs...)
		cmd.Stderr = stderr
		k := &child{cmd: cmd, done: make(chan workerReport, 1), fail: make(chan error, 1)}
		if k.stdin, err = cmd.StdinPipe(); err != nil {
			return err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start worker: %w", err)
		}
		defer func() { _ = k.stdin.Close(); _ = cmd.Wait() }()
		go func() {
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 1<<20), 16<<20)
			for sc.Scan() {
				var wr workerReport
				if json.Unmarshal(sc.Bytes(), &wr) != nil {
					continue
				}
				k.last.Store(&wr)
				if wr.Done {
					k.done <- wr
				}
			}
			k.fail <- fmt.Errorf("worker %d exited before reporting", w)
		}()
		kids[w] = k
	}
	meter := stats.NewMeter()
	prog := report.NewProgress(stderr, time.Second, func() string {
		var open, failed int64
		for _, k := range kids {
			if wr := k.last.Load(); wr != nil {
				open, failed = open+wr.Open, failed+wr.Failed
			}
		}
		meter.Add(open - meter.Total())
		return fmt.Sprintf("conns: open %d/%d failed %d (%.0f connects/s)", open, *n, failed, meter.Rate())
	})
	hs := stats.NewHistogram()
	var open, failed int64
	var first, last int64
	var workerCPU float64
	reasons := map[string]int{}
	for w, k := range kids {
		var wr workerReport
		select {
		case wr = <-k.done:
		case err := <-k.fail:
			prog.Stop()
			return err
		}
		open, failed = open+wr.Open, failed+wr.Failed
		if first == 0 || (wr.FirstDial != 0 && wr.FirstDial < first) {
			first = wr.FirstDial
		}
		last = max(last, wr.LastOpen)
		workerCPU += wr.CPU
		h := stats.NewHistogram()
		if err := json.Unmarshal(wr.Handshake, h); err != nil {
			prog.Stop()
			return fmt.Errorf("worker %d histogram: %w", w, err)
		}
		hs.Merge(h)
		for k, v := range wr.Errors {
			reasons[k] += v
		}
	}
	prog.Stop()
	if steal, err := machine0.stealTo(readMachine()); err != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("steal not measured: %v", err))
	} else {
		r.Metrics["storm_steal_pct"] = steal
	}
	if len(c.adm) > 0 && cpuErr == nil {
		var cpu1 float64
		if cpu1, cpuErr = serverCPU(ctx, c.adm); cpuErr == nil && open > 0 {
			r.Metrics["server_cpu_us_per_conn"] = (cpu1 - cpu0) / float64(open) * 1e6
		}
	}
	if cpuErr != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("server CPU not measured: %v", cpuErr))
	}
	if open > 0 {
		r.Metrics["harness_cpu_us_per_conn"] = workerCPU / float64(open) * 1e6
	}
	storm := time.Duration(last - first)
	rate := 0.0
	if storm > 0 {
		rate = float64(open) / storm.Seconds()
	}
	fmt.Fprintf(stderr, "conns: %d open, %d failed, storm %s (%.0f connects/s); holding %s\n", open, failed, storm.Round(time.Millisecond), rate, *hold)
	time.Sleep(*hold)

	type gwRow struct {
		Admin         string  `json:"admin"`
		Connections   float64 `json:"connections"`
		RSSDeltaMB    float64 `json:"rss_delta_mb"`
		HeapDeltaMB   float64 `json:"heap_inuse_delta_mb"`
		RSSPerConnKB  float64 `json:"rss_per_conn_kb"`
		HeapPerConnKB float64 `json:"heap_per_conn_kb"`
		Goroutines    float64 `json:"goroutines"`
	}
	var rows []gwRow
	worstRSS, worstHeap := 0.0, 0.0
	var unmeasured []string // why a gateway's memory per socket is unknown
	for i, a := range c.adm {
		m, err := scrape(ctx, a)
		if err != nil {
			unmeasured = append(unmeasured, err.Error())
			continue
		}
		row := gwRow{Admin: a, Connections: m.Connections, Goroutines: m.Goroutines,
			RSSDeltaMB: (m.RSS - before[i].RSS) / 1e6, HeapDeltaMB: (m.HeapInuse - before[i].HeapInuse) / 1e6}
		if conns := m.Connections - before[i].Connections; conns > 0 {
			row.RSSPerConnKB = (m.RSS - before[i].RSS) / conns / 1024
			row.HeapPerConnKB = (m.HeapInuse - before[i].HeapInuse) / conns / 1024
			worstRSS, worstHeap = max(worstRSS, row.RSSPerConnKB), max(worstHeap, row.HeapPerConnKB)
			if row.RSSPerConnKB <= 0 {
				unmeasured = append(unmeasured, fmt.Sprintf("%s: RSS fell by %.1f MB while it gained %.0f sockets", a, -row.RSSDeltaMB, conns))
			}
		}
		rows = append(rows, row)
	}
	r.Metrics["open"] = open
	r.Metrics["failed"] = failed
	r.Metrics["storm_s"] = storm.Seconds()
	r.Metrics["connects_per_s"] = rate
	r.Metrics["handshake"] = hs.Snapshot()
	if len(reasons) > 0 {
		r.Metrics["failure_reasons"] = reasons
	}
	if rows != nil {
		r.Metrics["gateways"] = rows
	}
	r.AddTarget("failed connections", "<=", 0, float64(failed), "conns")
	r.AddTarget("connect storm incl. auth and upgrade", ">=", 10000, rate, "conns/s")
	if *n >= 300000 {
		r.AddTarget("idle connections held", ">=", 300000, float64(open), "conns")
	} else {
		r.Notes = append(r.Notes, fmt.Sprintf("-n %d: the 300,000-connection target needs -n 300000", *n))
	}
	switch {
	case len(unmeasured) > 0:
		r.AddUnmeasured("gateway RSS per idle socket (worst gateway)", "<=", 2, "KiB", strings.Join(unmeasured, "; "))
	case rows != nil:
		r.AddTarget("gateway RSS per idle socket (worst gateway)", "<=", 2, worstRSS, "KiB")
		r.Notes = append(r.Notes, fmt.Sprintf("Go heap in use per idle socket (worst gateway): %.2f KiB", worstHeap))
	default:
		r.Notes = append(r.Notes, "no -admins: gateway memory not measured")
	}
	for _, k := range kids {
		_ = k.stdin.Close() // workers close their sockets and exit
	}
	return c.finish(r, start, stdout)
}

// runConnsWorker opens its share of a conns run, reports, and holds the sockets until
// its stdin closes.
func runConnsWorker(args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("conns-worker", stderr)
	n := fs.Int("n", 0, "sockets")
	offset := fs.Int("offset", 0, "index of the first socket in the whole run")
	uidBase := fs.Int64("uid-base", 0, "synthetic user id of socket 0 (minted tokens)")
	inflight := fs.Int("inflight", 2048, "handshakes in flight")
	tokFile := fs.String("tokens", "", "file of tokens, one per line (instead of minting with the secret in $GOCHAT_BENCH_SECRET)")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	c.secret = os.Getenv("GOCHAT_BENCH_SECRET")
	var tokens []string
	var m *minter
	if *tokFile != "" {
		b, err := os.ReadFile(*tokFile)
		if err != nil {
			return err
		}
		tokens = strings.Split(strings.TrimSpace(string(b)), "\n")
	} else {
		var err error
		if m, err = newMinter(c.secret); err != nil {
			return err
		}
	}
	hs := stats.NewHistogram()
	var open, failed, lastOpen atomic.Int64
	var mu sync.Mutex
	reasons := map[string]int{}
	sem := make(chan struct{}, *inflight)
	h := &stormHandler{
		open: func(cn *wsc.Conn) {
			hs.Record(cn.OpenedAt().Sub(cn.DialedAt()))
			open.Add(1)
			lastOpen.Store(cn.OpenedAt().UnixNano())
			<-sem
		},
		fail: func(cn *wsc.Conn, err error) {
			failed.Add(1)
			mu.Lock()
			reasons[reason(err)]++
			mu.Unlock()
			<-sem
		},
	}
	cl, err := wsc.New(wsc.Config{Loops: c.loops, SourceIPs: c.sourceIPs()}, h)
	if err != nil {
		return err
	}
	defer cl.Close()
	enc := json.NewEncoder(stdout) // used by the progress goroutine, then by us after it stopped
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = enc.Encode(workerReport{Open: open.Load(), Failed: failed.Load()})
			case <-stopProgress:
				return
			}
		}
	}()
	// Every request path, token minted, before the storm: a real client comes with
	// its token, and minting one (JSON, HMAC) was ~5% of a worker's CPU per dial.
	paths := make([]string, *n)
	for i := range *n {
		g := *offset + i
		var tok string
		if tokens != nil {
			tok = tokens[g%len(tokens)]
		} else if tok, err = m.token(*uidBase + int64(g)); err != nil {
			return err
		}
		paths[i] = "/ws?token=" + url.QueryEscape(tok)
	}
	first := time.Now()
	cpu0, err := processCPU()
	if err != nil {
		return err
	}
	for i, path := range paths {
		g := *offset + i
		sem <- struct{}{}
		gw := c.gw[g%len(c.gw)]
		if _, err := cl.Dial(gw, gw.String(), path, nil); err != nil {
			failed.Add(1)
			mu.Lock()
			reasons[reason(err)]++
			mu.Unlock()
			<-sem
		}
	}
	for range *inflight { // every handshake finished
		sem <- struct{}{}
	}
	close(stopProgress)
	<-progressDone
	cpu1, err := processCPU()
	if err != nil {
		return err
	}
	wr := workerReport{Done: true, Open: open.Load(), Failed: failed.Load(), FirstDial: first.UnixNano(), LastOpen: lastOpen.Load(), CPU: cpu1 - cpu0}
	b, err := json.Marshal(hs)
	if err != nil {
		return err
	}
	wr.Handshake = b
	mu.Lock()
	wr.Errors = reasons
	mu.Unlock()
	if err := enc.Encode(wr); err != nil {
		return err
	}
	// Hold until the parent is done measuring (it closes our stdin), then say how many
	// sockets the gateways dropped meanwhile.
	_, _ = io.Copy(io.Discard, os.Stdin)
	return enc.Encode(workerReport{Done: true, Lost: h.lost.Load()})
}

// reason shortens an error to a countable failure class.
func reason(err error) string {
	s := err.Error()
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

// stormHandler counts opens, failures and sockets lost after opening; frames (the
// connected greeting, pings) need nothing from a conns run, and the client answers
// pings itself.
type stormHandler struct {
	open func(*wsc.Conn)
	fail func(*wsc.Conn, error)
	lost atomic.Int64
}

func (h *stormHandler) OnOpen(c *wsc.Conn) { h.open(c) }

func (h *stormHandler) OnMessage(*wsc.Conn, byte, []byte) {}

func (h *stormHandler) OnClose(c *wsc.Conn, err error) {
	if !c.OpenedAt().IsZero() {
		if err != nil { // a nil error is our own Close at the end
			h.lost.Add(1)
		}
		return
	}
	if err == nil {
		err = errors.New("closed before the handshake finished")
	}
	h.fail(c, err)
}

// lockedWriter serialises writes from several goroutines (worker stderr copiers and the
// progress line) to one writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// workerProcs is the GOMAXPROCS for each of procs workers sharing cpus cores: the
// cores divided among them, at least 1, so that many workers (16 for 300,000 sockets
// on 2 cores) do not each run a scheduler for every core and wake idle threads to
// look for work. Five alternating pairs at 100,000 sockets on 16 gateways (6 workers),
// GOMAXPROCS 2 → 1: the workers' CPU per socket 170 → 123 µs on average, connects/s
// 3,177 → 4,069. 0 leaves the runtime's choice: one worker, or a GOMAXPROCS the
// caller set (env).
func workerProcs(procs, cpus int, env string) int {
	if env != "" || procs <= 1 {
		return 0
	}
	return max(1, cpus/procs)
}
