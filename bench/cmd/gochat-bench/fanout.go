package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gochat/gochat/bench/internal/report"
	"github.com/gochat/gochat/bench/internal/stats"
)

// runFanout measures the world room with N receivers online and one sender, in two
// phases: probes (one message at a time in the room, -probe-rate) give the time until
// the last receiver had a message; the flood (-messages at -rate) gives deliveries per
// second when the room is kept busy.
func runFanout(args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("fanout", stderr)
	n := fs.Int("receivers", 10000, "sockets in the world room besides the sender")
	probes := fs.Int("probes", 20, "latency phase: messages sent at -probe-rate")
	probeRateS := fs.String("probe-rate", "2", "latency phase: messages per second")
	msgs := fs.Int("messages", 100, "flood phase: messages the sender posts (0 = no flood)")
	rateS := fs.String("rate", "20", "flood phase: messages per second (each one goes to every receiver)")
	wait := fs.Duration("wait", 10*time.Second, "after a phase's last send, how long without a new delivery before the missing ones count as lost")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	rate, err := parseRate(*rateS)
	if err != nil {
		return err
	}
	probeRate, err := parseRate(*probeRateS)
	if err != nil {
		return err
	}
	if *n < 1 || *probes < 1 || *msgs < 0 {
		return errors.New("-receivers and -probes must be positive, -messages not negative")
	}
	ctx := context.Background()
	start := time.Now()
	r := report.New("fanout")
	c.config(r)
	r.Config["receivers"], r.Config["probes"], r.Config["probe_rate"] = *n, *probes, probeRate
	r.Config["messages"], r.Config["rate"], r.Config["wait"] = *msgs, rate, wait.String()

	total := *probes + *msgs                // message i < probes is a probe
	perDelivery := stats.NewHistogram()     // probes' deliveries
	got := make([]atomic.Int64, total)      // deliveries per message
	last := make([]atomic.Int64, total)     // latest delivery latency per message, ns
	earliest := make([]atomic.Int64, total) // earliest delivery latency per message, ns (0: none yet)
	var delivered, lastAt atomic.Int64
	onFrame := func(_ *peer, typ string, data json.RawMessage) {
		if typ != "new-message" {
			return
		}
		now := time.Now().UnixNano()
		conv, text, ok := readPush(data)
		if !ok || conv != "world" {
			return
		}
		i, at, ok := parseContent(text)
		if !ok || i < 0 || i >= len(got) {
			return // another run's or a person's message
		}
		lat := now - at
		if i < *probes {
			perDelivery.Record(time.Duration(lat))
		}
		got[i].Add(1)
		keepIf(&last[i], lat, func(old int64) bool { return lat > old })
		keepIf(&earliest[i], lat, func(old int64) bool { return old == 0 || lat < old })
		delivered.Add(1)
		lastAt.Store(now)
	}
	f, err := newFleet(c, onFrame)
	if err != nil {
		return err
	}
	defer f.close()
	accts, err := makeAccounts(ctx, c, *n, syntheticBase())
	if err != nil {
		return fmt.Errorf("receivers: %w", err)
	}
	sender, err := c.apiFor(0).guest(ctx)
	if err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	accts = append(accts, sender)
	fmt.Fprintf(stderr, "fanout: opening %d sockets\n", len(accts))
	peers, err := f.open(ctx, c, accts, 512)
	if err != nil {
		return err
	}
	sp := peers[len(peers)-1]

	meter := stats.NewMeter()
	prog := report.NewProgress(stderr, time.Second, func() string {
		d := delivered.Load()
		meter.Add(d - meter.Total())
		return fmt.Sprintf("fanout: delivered %d of %d (%.0f/s) lost sockets %d", d, int64(*n)*int64(total), meter.Rate(), f.lostSocket.Load())
	})
	// phase sends messages [from, from+count) at rate and waits until the room has them
	// (or none arrived for -wait); it returns the first send time and how many were
	// delivered.
	phase := func(from, count int, rate float64) (time.Time, int64, error) {
		pace, err := stats.NewPacer(rate, time.Now().Add(50*time.Millisecond))
		if err != nil {
			return time.Time{}, 0, err
		}
		before := delivered.Load()
		first := pace.Next(0)
		for k := range count {
			at, err := pace.Wait(ctx, int64(k))
			if err != nil {
				return first, 0, err
			}
			i := from + k
			if err := sp.send("world", content(i, at), "f"+strconv.Itoa(i)); err != nil {
				return first, 0, fmt.Errorf("send: %w", err)
			}
		}
		// Slow is not lost: wait while deliveries keep coming, and count what is still
		// missing once none arrived for -wait.
		want := before + int64(*n)*int64(count)
		seen, deadline := delivered.Load(), time.Now().Add(*wait)
		for seen < want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
			if d := delivered.Load(); d > seen {
				seen, deadline = d, time.Now().Add(*wait)
			}
		}
		return first, delivered.Load() - before, nil
	}
	// CPU per delivery, the servers' (behind -admins) and this harness's, per phase:
	// on a shared machine it moves less than the timings, and one message's time to
	// reach every socket is bounded below by its CPU (both sides) over the cores.
	cpuPhase := func(name string, before cpuReading, deliveries int64) {
		after := readCPU(ctx, c.adm)
		if steal, err := before.machine.stealTo(after.machine); err != nil {
			r.Notes = append(r.Notes, fmt.Sprintf("%s steal not measured: %v", name, err))
		} else {
			r.Metrics[name+"_steal_pct"] = steal
		}
		if before.err != nil || after.err != nil {
			r.Notes = append(r.Notes, fmt.Sprintf("%s CPU not measured: %v", name, errors.Join(before.err, after.err)))
			return
		}
		if deliveries <= 0 {
			return
		}
		r.Metrics[name+"_harness_cpu_us_per_delivery"] = (after.harness - before.harness) * 1e6 / float64(deliveries)
		if len(c.adm) > 0 {
			r.Metrics[name+"_server_cpu_us_per_delivery"] = (after.servers - before.servers) * 1e6 / float64(deliveries)
		}
	}
	cpu0 := readCPU(ctx, c.adm)
	_, probeDelivered, err := phase(0, *probes, probeRate)
	if err != nil {
		prog.Stop()
		return err
	}
	cpuPhase("probe", cpu0, probeDelivered)
	// A probe's time to its first receiver is the send path before the fan-out
	// (gateway, logic, the store's commit, the bus); the rest of its time to all is
	// the fan-out's writes.
	toAll, toFirst := stats.NewHistogram(), stats.NewHistogram()
	incomplete := 0
	for i := range *probes {
		if got[i].Load() < int64(*n) {
			incomplete++
			continue
		}
		toAll.Record(time.Duration(last[i].Load()))
		toFirst.Record(time.Duration(earliest[i].Load()))
	}
	dps, floodDelivered := 0.0, int64(0)
	if *msgs > 0 {
		cpu0 := readCPU(ctx, c.adm)
		first, d, err := phase(*probes, *msgs, rate)
		if err != nil {
			prog.Stop()
			return err
		}
		cpuPhase("flood", cpu0, d)
		floodDelivered = d
		if span := time.Duration(lastAt.Load() - first.UnixNano()); span > 0 {
			dps = float64(d) / span.Seconds()
		}
		for i := *probes; i < total; i++ {
			if got[i].Load() < int64(*n) {
				incomplete++
			}
		}
	}
	prog.Stop()
	want := int64(*n) * int64(total)
	r.Metrics["deliveries"] = delivered.Load()
	r.Metrics["deliveries_expected"] = want
	r.Metrics["flood_deliveries"] = floodDelivered
	r.Metrics["flood_deliveries_per_s"] = dps
	r.Metrics["probe_per_delivery"] = perDelivery.Snapshot()
	r.Metrics["probe_time_to_all_receivers"] = toAll.Snapshot()
	r.Metrics["probe_time_to_first_receiver"] = toFirst.Snapshot()
	r.Metrics["messages_not_reaching_all"] = incomplete
	r.Metrics["lost_sockets"] = f.lostSocket.Load()
	r.Metrics["error_frames"] = f.errFrames.Load()
	if p := f.lastErr.Load(); p != nil {
		r.Notes = append(r.Notes, "last error: "+*p)
	}
	r.AddTarget("deliveries missing", "<=", 0, float64(want-delivered.Load()), "deliveries")
	if *msgs > 0 {
		r.AddTarget("world deliveries/s (flood)", ">=", 100000, dps, "deliveries/s")
	}
	name := "one message to all receivers p99 (probes)"
	if *n >= 10000 {
		name = "one message to a 10,000-socket room p99 (probes)"
	} else {
		r.Notes = append(r.Notes, fmt.Sprintf("%d receivers: the 100 ms target is for a 10,000-socket room", *n))
	}
	if k := toAll.Count(); k < 100 {
		// The histogram's p99 of fewer than 100 samples is the largest one.
		r.Notes = append(r.Notes, fmt.Sprintf("time to all receivers of %d probes: their p99 is their maximum; -probes 100 or more gives a p99 that one slow probe does not decide", k))
	}
	r.AddTarget(name, "<=", 100, ms(toAll.Quantile(0.99)), "ms")
	return c.finish(r, start, stdout)
}

// keepIf stores v in a when better(a's value) holds, retrying when another delivery
// changed a in between: the latest latency (better: larger) or the earliest (smaller).
func keepIf(a *atomic.Int64, v int64, better func(old int64) bool) {
	for {
		old := a.Load()
		if !better(old) || a.CompareAndSwap(old, v) {
			return
		}
	}
}
