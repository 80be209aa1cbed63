package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gochat/gochat/bench/internal/report"
	"github.com/gochat/gochat/bench/internal/stats"
)

// runFanout measures the world room: N receivers online, one sender posting at -rate;
// every delivery's latency, deliveries per second, and for each message the time until
// the last receiver had it.
func runFanout(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fanout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	n := fs.Int("receivers", 10000, "sockets in the world room besides the sender")
	msgs := fs.Int("messages", 100, "messages the sender posts")
	rateS := fs.String("rate", "10", "messages per second (each one is delivered to every receiver)")
	wait := fs.Duration("wait", 10*time.Second, "how long after the last send to wait for stragglers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if err := c.parse(); err != nil {
		return err
	}
	rate, err := parseRate(*rateS)
	if err != nil {
		return err
	}
	if *n < 1 || *msgs < 1 {
		return errors.New("-receivers and -messages must be positive")
	}
	ctx := context.Background()
	start := time.Now()
	r := report.New("fanout")
	c.config(r)
	r.Config["receivers"], r.Config["messages"], r.Config["rate"], r.Config["wait"] = *n, *msgs, rate, wait.String()

	perDelivery := stats.NewHistogram()
	got := make([]atomic.Int64, *msgs)  // deliveries per message
	last := make([]atomic.Int64, *msgs) // latest delivery latency per message, ns
	var delivered, lastAt atomic.Int64
	onFrame := func(_ *peer, typ string, data json.RawMessage) {
		if typ != "new-message" {
			return
		}
		now := time.Now().UnixNano()
		var d pushData
		if json.Unmarshal(data, &d) != nil || d.ConversationID != "world" {
			return
		}
		i, at, ok := parseContent(d.Message.Content)
		if !ok || i < 0 || i >= len(got) {
			return // another run's or a person's message
		}
		lat := now - at
		perDelivery.Record(time.Duration(lat))
		got[i].Add(1)
		for {
			old := last[i].Load()
			if lat <= old || last[i].CompareAndSwap(old, lat) {
				break
			}
		}
		delivered.Add(1)
		lastAt.Store(now)
	}
	f, err := newFleet(&c, onFrame)
	if err != nil {
		return err
	}
	defer f.close()
	accts, err := makeAccounts(ctx, &c, *n, syntheticBase())
	if err != nil {
		return fmt.Errorf("receivers: %w", err)
	}
	sender, err := c.apiFor(0).guest(ctx)
	if err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	accts = append(accts, sender)
	fmt.Fprintf(stderr, "fanout: opening %d sockets\n", len(accts))
	peers, err := f.open(ctx, &c, accts, 512)
	if err != nil {
		return err
	}
	sp := peers[len(peers)-1]

	pace, err := stats.NewPacer(rate, time.Now().Add(50*time.Millisecond))
	if err != nil {
		return err
	}
	meter := stats.NewMeter()
	prog := report.NewProgress(stderr, time.Second, func() string {
		d := delivered.Load()
		meter.Add(d - meter.Total())
		return fmt.Sprintf("fanout: delivered %d of %d (%.0f/s) lost sockets %d", d, int64(*n)*int64(*msgs), meter.Rate(), f.lostSocket.Load())
	})
	firstSend := time.Now()
	for i := range *msgs {
		at, err := pace.Wait(ctx, int64(i))
		if err != nil {
			break
		}
		if i == 0 {
			firstSend = at
		}
		if err := sp.send("world", content(i, at), "f"+strconv.Itoa(i)); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	want := int64(*n) * int64(*msgs)
	deadline := time.Now().Add(*wait)
	for delivered.Load() < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	prog.Stop()

	toAll := stats.NewHistogram()
	incomplete := 0
	for i := range got {
		if got[i].Load() < int64(*n) {
			incomplete++
			continue
		}
		toAll.Record(time.Duration(last[i].Load()))
	}
	span := time.Duration(lastAt.Load() - firstSend.UnixNano())
	dps := 0.0
	if span > 0 {
		dps = float64(delivered.Load()) / span.Seconds()
	}
	r.Metrics["deliveries"] = delivered.Load()
	r.Metrics["deliveries_expected"] = want
	r.Metrics["deliveries_per_s"] = dps
	r.Metrics["per_delivery"] = perDelivery.Snapshot()
	r.Metrics["time_to_all_receivers"] = toAll.Snapshot()
	r.Metrics["messages_not_reaching_all"] = incomplete
	r.Metrics["lost_sockets"] = f.lostSocket.Load()
	r.Metrics["error_frames"] = f.errFrames.Load()
	if p := f.lastErr.Load(); p != nil {
		r.Notes = append(r.Notes, "last error: "+*p)
	}
	r.AddTarget("deliveries missing", "<=", 0, float64(want-delivered.Load()), "deliveries")
	r.AddTarget("world deliveries/s", ">=", 100000, dps, "deliveries/s")
	name := "one message to all receivers p99"
	if *n >= 10000 {
		name = "one message to a 10,000-socket room p99"
	} else {
		r.Notes = append(r.Notes, fmt.Sprintf("%d receivers: the 100 ms target is for a 10,000-socket room", *n))
	}
	r.AddTarget(name, "<=", 100, ms(toAll.Quantile(0.99)), "ms")
	return c.finish(r, start, stdout)
}
