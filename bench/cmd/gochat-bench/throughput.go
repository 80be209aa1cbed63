package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gochat/gochat/bench/internal/report"
)

// step is one closed-loop level of throughput: each of Conversations conversations
// keeps Window sends in flight.
type step struct {
	Conversations int     `json:"conversations"`
	Window        int     `json:"window"`
	InFlight      int     `json:"in_flight"`
	Acked         int64   `json:"acked"`
	AcksPerS      float64 `json:"acks_per_s"`
	AckP50        float64 `json:"ack_p50_ms"`
	AckP99        float64 `json:"ack_p99_ms"`
	RecipP50      float64 `json:"recipient_p50_ms"`
	RecipP99      float64 `json:"recipient_p99_ms"`
	Unacked       int64   `json:"unacked"`
	ErrFrames     int64   `json:"error_frames"`
	// CPU during the step: of the processes behind -admins (process_cpu_seconds_total;
	// absent without -admins) and of this harness, in cores, and the servers' CPU
	// per acked send. On a shared machine the rate moves with the neighbours; the
	// CPU per send moves much less, which makes it the number to compare.
	ServerCores     float64 `json:"server_cores,omitempty"`
	ServerCPUPerAck float64 `json:"server_cpu_us_per_ack,omitempty"`
	HarnessCores    float64 `json:"harness_cores"`
	// StealPct is the share of the machine's CPU time during the step that the
	// hypervisor gave to other guests (/proc/stat): a slow step with steal is the host.
	StealPct float64 `json:"steal_pct"`
	stageMeans
}

// stageMeans is where a send's time went on the servers during a step, from their
// histograms (means over the step; a stage whose process is not behind -admins, such
// as repo in a split topology, is left out): the gateway from frame to ack queued,
// logic's validation and durable append, and the store's group commit.
type stageMeans struct {
	GatewaySendMs  float64 `json:"gateway_send_ms,omitempty"`
	LogicSendMs    float64 `json:"logic_send_ms,omitempty"`
	CommitMs       float64 `json:"commit_ms,omitempty"`
	CommitMessages float64 `json:"commit_messages,omitempty"` // per commit
	WriterBusy     float64 `json:"writer_busy,omitempty"`     // share of the step the store spent committing
}

// The histogram samples stageMeans is computed from.
const (
	gwSendSum     = `gochat_gateway_send_seconds_sum{result="ok"}`
	gwSendCount   = `gochat_gateway_send_seconds_count{result="ok"}`
	logicSendSum  = `gochat_logic_send_seconds_sum`
	logicSendN    = `gochat_logic_send_seconds_count`
	commitSum     = `gochat_repo_commit_seconds_sum{result="ok"}`
	commitCount   = `gochat_repo_commit_seconds_count{result="ok"}`
	commitMsgsSum = `gochat_repo_commit_messages_sum`
)

// serverStages sums the stage samples over admins.
func serverStages(ctx context.Context, admins []string) (map[string]float64, error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	sum := map[string]float64{}
	for _, a := range admins {
		got, err := readSamples(ctx, hc, a, []string{gwSendSum, gwSendCount, logicSendSum, logicSendN, commitSum, commitCount, commitMsgsSum})
		if err != nil {
			return nil, err
		}
		for k, v := range got {
			sum[k] += v
		}
	}
	return sum, nil
}

// stagesBetween turns two serverStages readings dur apart into means.
func stagesBetween(a, b map[string]float64, dur time.Duration) stageMeans {
	d := func(k string) float64 { return b[k] - a[k] }
	var m stageMeans
	if n := d(gwSendCount); n > 0 {
		m.GatewaySendMs = d(gwSendSum) / n * 1e3
	}
	if n := d(logicSendN); n > 0 {
		m.LogicSendMs = d(logicSendSum) / n * 1e3
	}
	if n := d(commitCount); n > 0 {
		m.CommitMs = d(commitSum) / n * 1e3
		m.CommitMessages = d(commitMsgsSum) / n
		m.WriterBusy = d(commitSum) / dur.Seconds()
	}
	return m
}

// level is what one step keeps in flight: conversations senders with window sends each.
type level struct{ conversations, window int }

// levelsFor turns -inflight into steps over pairs conversations: a total up to pairs
// is that many conversations with one send each (fewer senders, not a smaller window,
// so every socket still has one send in flight as an interactive client has); a
// larger total is every conversation with the window that reaches it, rounded up.
func levelsFor(inflight []int, pairs int) []level {
	out := make([]level, len(inflight))
	for i, n := range inflight {
		if n <= pairs {
			out[i] = level{conversations: n, window: 1}
		} else {
			out[i] = level{conversations: pairs, window: (n + pairs - 1) / pairs}
		}
	}
	return out
}

// positiveList parses a comma-separated list of positive numbers.
func positiveList(flag, s string) ([]int, error) {
	var out []int
	for v := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-%s: %q is not a positive number", flag, v)
		}
		out = append(out, n)
	}
	return out, nil
}

// runThroughput finds the highest rate of acked durable sends whose ack p99 stays
// under 50 ms: closed-loop senders in 1:1 conversations, one level of sends in flight
// after another (-inflight, or every conversation at each of -windows).
func runThroughput(args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("throughput", stderr)
	pairs := fs.Int("pairs", 200, "1:1 conversations (a registered sender and a guest recipient each)")
	windowsS := fs.String("windows", "1,4,16,32", "sends in flight per conversation, one step per value, every conversation sending (ignored with -inflight)")
	inflightS := fs.String("inflight", "", "total sends in flight, one step per value: up to -pairs, that many conversations with one send each; above, every conversation with the window that reaches it")
	stepDur := fs.Duration("step", 10*time.Second, "measured time per step")
	warm := fs.Duration("warmup", 2*time.Second, "unmeasured time at the start of each step")
	maxRate := fs.Int("max-rate", 100000, "capacity hint: the most sends per second the run may reach")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *pairs < 1 || *maxRate < 1 {
		return errors.New("-pairs and -max-rate must be positive")
	}
	var levels []level
	if *inflightS != "" {
		inflight, err := positiveList("inflight", *inflightS)
		if err != nil {
			return err
		}
		levels = levelsFor(inflight, *pairs)
	} else {
		windows, err := positiveList("windows", *windowsS)
		if err != nil {
			return err
		}
		for _, w := range windows {
			levels = append(levels, level{conversations: *pairs, window: w})
		}
	}
	ctx := context.Background()
	start := time.Now()
	r := report.New("throughput")
	c.config(r)
	r.Config["pairs"], r.Config["step"], r.Config["warmup"] = *pairs, stepDur.String(), warm.String()
	if *inflightS != "" {
		r.Config["inflight"] = *inflightS
	} else {
		r.Config["windows"] = *windowsS
	}

	capacity := 0
	for _, lv := range levels {
		capacity += int(float64(*maxRate)*(*stepDur+*warm).Seconds()) + lv.conversations*lv.window
	}
	t := newTraffic(capacity, len(levels))
	var next atomic.Int64 // next send index
	var stopAt atomic.Int64
	var bucket atomic.Int32
	var inflight sync.WaitGroup
	var bySender sync.Map // *peer → conversation id
	var sendErrs, overflow atomic.Int64
	sendOne := func(p *peer, conv string) {
		if time.Now().UnixNano() >= stopAt.Load() {
			return
		}
		i := int(next.Add(1)) - 1
		if i >= capacity {
			overflow.Add(1)
			return
		}
		now := time.Now()
		inflight.Add(1)
		t.mark(i, kindDirect, int(bucket.Load()), now)
		if p.send(conv, content(i, now), strconv.Itoa(i)) != nil {
			sendErrs.Add(1)
			t.acked[i].Store(true)
			inflight.Done()
		}
	}
	t.onAck = func(p *peer, i int) {
		defer inflight.Done()
		if conv, ok := bySender.Load(p); ok {
			sendOne(p, conv.(string))
		}
	}
	f, err := newFleet(c, t.onFrame)
	if err != nil {
		return err
	}
	defer f.close()
	convs, err := setupConversations(ctx, c, f, *pairs, 0, 0)
	if err != nil {
		return err
	}
	for _, cv := range convs {
		bySender.Store(cv.sender, cv.id)
	}
	fmt.Fprintf(stderr, "throughput: %d conversations, %d steps, %s per step\n", len(convs), len(levels), *stepDur)

	steps := make([]step, len(levels))
	for si, lv := range levels {
		w, active := lv.window, convs[:min(lv.conversations, len(convs))]
		bucket.Store(int32(si))
		begin := time.Now()
		from := begin.Add(*warm)
		t.from.Store(from.UnixNano())
		stopAt.Store(begin.Add(*warm + *stepDur).UnixNano())
		acked0, err0 := t.acks.Total(), f.errFrames.Load()
		prog := report.NewProgress(stderr, time.Second, func() string {
			return fmt.Sprintf("throughput: %d in flight: acked %d (%.0f acks/s) errors %d", w*len(active), t.acks.Total()-acked0, t.acks.Rate(), f.errFrames.Load()-err0)
		})
		for _, cv := range active {
			for range w {
				sendOne(cv.sender, cv.id)
			}
		}
		time.Sleep(time.Until(from))
		ackedAtFrom := t.acks.Total()
		cpu0 := readCPU(ctx, c.adm)
		stages0, stagesErr0 := serverStages(ctx, c.adm)
		time.Sleep(time.Until(time.Unix(0, stopAt.Load())))
		ackedAtStop := t.acks.Total()
		cpu1 := readCPU(ctx, c.adm)
		stages1, stagesErr1 := serverStages(ctx, c.adm)
		// Let the step's in-flight sends finish (acks are due within 5 s) before the
		// next step starts.
		done := make(chan struct{})
		go func() { inflight.Wait(); close(done) }()
		timedOut := false
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			timedOut = true
		}
		prog.Stop()
		st := step{Conversations: len(active), Window: w, InFlight: w * len(active), Acked: ackedAtStop - ackedAtFrom, ErrFrames: f.errFrames.Load() - err0}
		st.AcksPerS = float64(st.Acked) / stepDur.Seconds()
		if cpu0.err == nil && cpu1.err == nil {
			st.HarnessCores = (cpu1.harness - cpu0.harness) / stepDur.Seconds()
			if len(c.adm) > 0 {
				st.ServerCores = (cpu1.servers - cpu0.servers) / stepDur.Seconds()
				if st.Acked > 0 {
					st.ServerCPUPerAck = (cpu1.servers - cpu0.servers) / float64(st.Acked) * 1e6
				}
			}
		} else {
			r.Notes = append(r.Notes, fmt.Sprintf("%d in flight: CPU not measured: %v", st.InFlight, errors.Join(cpu0.err, cpu1.err)))
		}
		if steal, err := cpu0.machine.stealTo(cpu1.machine); err != nil {
			r.Notes = append(r.Notes, fmt.Sprintf("%d in flight: steal not measured: %v", st.InFlight, err))
		} else {
			st.StealPct = steal
		}
		if err := errors.Join(stagesErr0, stagesErr1); err != nil {
			r.Notes = append(r.Notes, fmt.Sprintf("%d in flight: server stages not measured: %v", st.InFlight, err))
		} else {
			st.stageMeans = stagesBetween(stages0, stages1, *stepDur)
		}
		ah, dh := t.ack[si][kindDirect], t.deliver[si][kindDirect]
		st.AckP50, st.AckP99 = ms(ah.Quantile(0.5)), ms(ah.Quantile(0.99))
		st.RecipP50, st.RecipP99 = ms(dh.Quantile(0.5)), ms(dh.Quantile(0.99))
		if timedOut {
			for i := range min(int(next.Load()), capacity) {
				if !t.acked[i].Load() {
					st.Unacked++
				}
			}
			r.Notes = append(r.Notes, fmt.Sprintf("%d in flight: %d sends unacked 5 s after the step; later steps were not run", st.InFlight, st.Unacked))
			steps[si] = st
			steps = steps[:si+1]
			break
		}
		steps[si] = st
		fmt.Fprintf(stderr, "throughput: %d conversations × window %d (%d in flight): %.0f acked/s, ack p50 %.2f ms p99 %.2f ms, recipient p50 %.2f ms p99 %.2f ms, server %.2f cores (%.0f µs per ack), harness %.2f cores, steal %.1f%%\n",
			st.Conversations, w, st.InFlight, st.AcksPerS, st.AckP50, st.AckP99, st.RecipP50, st.RecipP99, st.ServerCores, st.ServerCPUPerAck, st.HarnessCores, st.StealPct)
		if st.GatewaySendMs > 0 {
			fmt.Fprintf(stderr, "throughput:   mean send %.2f ms on the gateway, %.2f ms in logic; commits of %.1f messages in %.2f ms, writer busy %.0f%%\n",
				st.GatewaySendMs, st.LogicSendMs, st.CommitMessages, st.CommitMs, st.WriterBusy*100)
		}
	}
	r.Metrics["steps"] = steps
	r.Metrics["send_errors"] = sendErrs.Load()
	r.Metrics["lost_sockets"] = f.lostSocket.Load()
	r.Metrics["duplicate_acks"] = t.dupAcks.Load()
	if overflow.Load() > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d sends skipped: raise -max-rate", overflow.Load()))
	}
	if p := f.lastErr.Load(); p != nil {
		r.Notes = append(r.Notes, "last error: "+*p)
	}
	var unackedTotal int64
	for _, st := range steps {
		unackedTotal += st.Unacked
	}
	r.AddTarget("unacked sends", "<=", 0, float64(unackedTotal), "msgs")
	best, at := pickSteps(steps, targetRate)
	if best < 0 {
		r.AddTarget("acked sends/s with ack p99 < 50 ms", ">=", targetRate, 0, "msgs/s")
		r.Notes = append(r.Notes, "no step kept ack p99 under 50 ms")
		return c.finish(r, start, stdout)
	}
	b := steps[best]
	r.Metrics["best_window"] = b.Window
	r.Metrics["best_in_flight"] = b.InFlight
	r.AddTarget("acked sends/s with ack p99 < 50 ms", ">=", targetRate, b.AcksPerS, "msgs/s")
	if at < 0 {
		// No step reached the rate: the latency targets are judged at the best one,
		// and fail with the rate.
		at = best
	}
	a := steps[at]
	r.Metrics["at_target_in_flight"] = a.InFlight
	r.AddTarget(fmt.Sprintf("send→recipient p99 at %.0f acked/s (%d in flight)", a.AcksPerS, a.InFlight), "<", 50, a.RecipP99, "ms")
	r.AddTarget(fmt.Sprintf("send→recipient p50 at %.0f acked/s (%d in flight)", a.AcksPerS, a.InFlight), "<", 5, a.RecipP50, "ms")
	r.AddTarget("acked sends/s with ack p99 < 50 ms (seed's figure)", ">=", 50000, b.AcksPerS, "msgs/s")
	return c.finish(r, start, stdout)
}

// targetRate is the acked sends/s at which recipient latency is judged.
const targetRate = 10000

// pickSteps chooses the steps the targets are judged on. best is the step with the
// most acked sends/s among those with ack p99 under 50 ms and nothing unacked; at is,
// among those same steps that reached rate, the one with the lowest recipient p50
// (then p99): the latency of sending at that rate, which the closed loop's larger
// windows only add queueing to (Little's law: in flight / rate). Either is -1 when no
// step qualifies.
func pickSteps(steps []step, rate float64) (best, at int) {
	best, at = -1, -1
	for i, st := range steps {
		if st.Acked == 0 || st.AckP99 >= 50 || st.Unacked != 0 {
			continue
		}
		if best < 0 || st.AcksPerS > steps[best].AcksPerS {
			best = i
		}
		if st.AcksPerS < rate {
			continue
		}
		if at < 0 || st.RecipP50 < steps[at].RecipP50 || (st.RecipP50 == steps[at].RecipP50 && st.RecipP99 < steps[at].RecipP99) {
			at = i
		}
	}
	return best, at
}

// cpuReading is the CPU time used so far, in seconds, by the servers behind -admins
// and by this process, and the machine's.
type cpuReading struct {
	servers, harness float64
	err              error
	machine          machineReading
}

func readCPU(ctx context.Context, admins []string) cpuReading {
	var r cpuReading
	r.machine = readMachine()
	if r.harness, r.err = processCPU(); r.err != nil {
		return r
	}
	if len(admins) > 0 {
		r.servers, r.err = serverCPU(ctx, admins)
	}
	return r
}
