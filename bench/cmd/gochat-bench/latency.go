package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gochat/gochat/bench/internal/report"
	"github.com/gochat/gochat/bench/internal/stats"
)

// convo is one conversation the harness sends into.
type convo struct {
	id     string
	kind   int // kindDirect or kindGroup
	sender *peer
}

const (
	kindDirect = iota
	kindGroup
)

var kindNames = [...]string{"direct", "group"}

// traffic is the shared measuring state of latency and throughput: which send index was
// meant to go out when, and the histograms its acks and deliveries land in.
type traffic struct {
	intended []atomic.Int64 // send index → intended (or actual) send time, UnixNano
	acked    []atomic.Bool
	tags     []atomic.Uint32 // send index → kind | bucket<<1 (throughput's step)
	from     atomic.Int64    // sends with an intended time before this (warm-up) are not recorded; read by the loops while a step sets it
	ack      [][2]*stats.Histogram
	deliver  [][2]*stats.Histogram
	acks     stats.Meter
	delivers stats.Meter
	dupAcks  atomic.Int64
	onAck    func(p *peer, i int) // throughput's closed loop sends the next message here
}

func newTraffic(n, buckets int) *traffic {
	t := &traffic{intended: make([]atomic.Int64, n), acked: make([]atomic.Bool, n), tags: make([]atomic.Uint32, n)}
	t.ack, t.deliver = make([][2]*stats.Histogram, buckets), make([][2]*stats.Histogram, buckets)
	for b := range buckets {
		for k := range 2 {
			t.ack[b][k], t.deliver[b][k] = stats.NewHistogram(), stats.NewHistogram()
		}
	}
	return t
}

// mark records send i before it goes out.
func (t *traffic) mark(i, kind, bucket int, at time.Time) {
	t.tags[i].Store(uint32(kind | bucket<<1))
	t.intended[i].Store(at.UnixNano())
}

func (t *traffic) tag(i int) (kind, bucket int) {
	v := int(t.tags[i].Load())
	return v & 1, v >> 1
}

// content carries the send index and the send time, so a recipient can measure
// send→recipient without any shared state but the clock.
func content(i int, at time.Time) string {
	return "bench " + strconv.Itoa(i) + " " + strconv.FormatInt(at.UnixNano(), 10)
}

func parseContent(s string) (int, int64, bool) {
	rest, ok := strings.CutPrefix(s, "bench ")
	if !ok {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(rest, " ")
	if !ok {
		return 0, 0, false
	}
	i, err1 := strconv.Atoi(a)
	ns, err2 := strconv.ParseInt(b, 10, 64)
	return i, ns, err1 == nil && err2 == nil
}

func (t *traffic) onFrame(p *peer, typ string, data json.RawMessage) {
	now := time.Now().UnixNano()
	switch typ {
	case "message-ack":
		id, ok := readAck(data)
		if !ok {
			return
		}
		i, err := strconv.Atoi(id)
		if err != nil || i < 0 || i >= len(t.intended) {
			return
		}
		if t.acked[i].Swap(true) {
			t.dupAcks.Add(1)
			return
		}
		at := t.intended[i].Load()
		t.acks.Add(1)
		if at >= t.from.Load() {
			k, b := t.tag(i)
			t.ack[b][k].Record(time.Duration(now - at))
		}
		if t.onAck != nil {
			t.onAck(p, i)
		}
	case "new-message":
		_, text, ok := readPush(data)
		if !ok {
			return
		}
		i, at, ok := parseContent(text)
		if !ok || i < 0 || i >= len(t.tags) {
			return
		}
		t.delivers.Add(1)
		if at >= t.from.Load() {
			k, b := t.tag(i)
			t.deliver[b][k].Record(time.Duration(now - at))
		}
	}
}

// runLatency drives paced open-loop traffic: sends go out at -rate on a fixed schedule
// and latency counts from the scheduled time, so a stall shows up in the percentiles
// instead of silently slowing the senders (no coordinated omission).
func runLatency(args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("latency", stderr)
	pairs := fs.Int("pairs", 100, "1:1 conversations (a registered sender and a guest recipient each)")
	groups := fs.Int("groups", 10, "group conversations")
	groupSize := fs.Int("group-size", 10, "members per group, owner included")
	idle := fs.Int("idle", 1000, "idle sockets kept open beside the traffic")
	rateS := fs.String("rate", "1000", "sends per second over all conversations (e.g. 1000, 10k)")
	dur := fs.Duration("duration", 20*time.Second, "measured time")
	warm := fs.Duration("warmup", 3*time.Second, "time before measuring (sends happen, latencies are not recorded)")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	rate, err := parseRate(*rateS)
	if err != nil {
		return err
	}
	if *pairs < 0 || *groups < 0 || *pairs+*groups == 0 || (*groups > 0 && *groupSize < 2) || *idle < 0 {
		return errors.New("need -pairs or -groups > 0, -group-size >= 2 and -idle >= 0")
	}
	ctx := context.Background()
	start := time.Now()
	r := report.New("latency")
	c.config(r)
	r.Config["pairs"], r.Config["groups"], r.Config["group_size"] = *pairs, *groups, *groupSize
	r.Config["idle"], r.Config["rate"], r.Config["duration"], r.Config["warmup"] = *idle, rate, dur.String(), warm.String()

	total := int(rate*(*dur+*warm).Seconds()) + 1
	t := newTraffic(total, 1)
	f, err := newFleet(c, t.onFrame)
	if err != nil {
		return err
	}
	defer f.close()
	convs, err := setupConversations(ctx, c, f, *pairs, *groups, *groupSize)
	if err != nil {
		return err
	}
	if *idle > 0 {
		accts, err := makeAccounts(ctx, c, *idle, syntheticBase())
		if err != nil {
			return fmt.Errorf("idle accounts: %w", err)
		}
		f.measuring.Store(false)
		if _, err := f.open(ctx, c, accts, 256); err != nil {
			return fmt.Errorf("idle sockets: %w", err)
		}
	}
	fmt.Fprintf(stderr, "latency: %d conversations, %d idle sockets; sending %.0f/s for %s after %s warm-up\n", len(convs), *idle, rate, *dur, *warm)

	pace, err := stats.NewPacer(rate, time.Now().Add(50*time.Millisecond))
	if err != nil {
		return err
	}
	t.from.Store(pace.Next(int64(rate * warm.Seconds())).UnixNano())
	prog := report.NewProgress(stderr, time.Second, func() string {
		return fmt.Sprintf("latency: acked %d delivered %d (%.0f acks/s) errors %d lost sockets %d",
			t.acks.Total(), t.delivers.Total(), t.acks.Rate(), f.errFrames.Load(), f.lostSocket.Load())
	})
	var sendErrs int64
	machine0 := readMachine()
	for i := range total {
		at, err := pace.Wait(ctx, int64(i))
		if err != nil {
			break
		}
		cv := convs[i%len(convs)]
		t.mark(i, cv.kind, 0, at)
		if cv.sender.send(cv.id, content(i, at), strconv.Itoa(i)) != nil {
			sendErrs++
		}
	}
	sentAt := time.Now()
	machine1 := readMachine()
	// Acks are due within the client's 5 s; give stragglers that long.
	for time.Since(sentAt) < 5*time.Second && t.acks.Total()+sendErrs < int64(total) {
		time.Sleep(20 * time.Millisecond)
	}
	prog.Stop()
	unacked := int64(total) - t.acks.Total() - sendErrs
	lateBy := pace.Behind(sentAt, int64(total-1))

	for k, name := range kindNames {
		if t.ack[0][k].Count() == 0 {
			continue
		}
		r.Metrics[name+"_send_to_ack"] = t.ack[0][k].Snapshot()
		r.Metrics[name+"_send_to_recipient"] = t.deliver[0][k].Snapshot()
	}
	r.Metrics["sent"] = total
	r.Metrics["acked"] = t.acks.Total()
	r.Metrics["unacked"] = unacked
	r.Metrics["duplicate_acks"] = t.dupAcks.Load()
	r.Metrics["deliveries"] = t.delivers.Total()
	r.Metrics["error_frames"] = f.errFrames.Load()
	r.Metrics["send_errors"] = sendErrs
	r.Metrics["lost_sockets"] = f.lostSocket.Load()
	r.Metrics["pacer_behind_ms"] = float64(lateBy) / 1e6
	if steal, err := machine0.stealTo(machine1); err != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("steal not measured: %v", err))
	} else {
		r.Metrics["steal_pct"] = steal // while sending, warm-up included
	}
	if p := f.lastErr.Load(); p != nil {
		r.Notes = append(r.Notes, "last error: "+*p)
	}
	r.AddTarget("unacked sends", "<=", 0, float64(unacked), "msgs")
	if h := t.deliver[0][kindDirect]; h.Count() > 0 {
		if rate >= 10000 {
			r.AddTarget("1:1 send→recipient p99 at ≥10k/s", "<", 50, ms(h.Quantile(0.99)), "ms")
			r.AddTarget("1:1 send→recipient p50 at ≥10k/s", "<", 5, ms(h.Quantile(0.50)), "ms")
		} else {
			r.AddTarget("1:1 send→recipient p99", "<", 50, ms(h.Quantile(0.99)), "ms")
			r.Notes = append(r.Notes, fmt.Sprintf("rate %.0f/s is below the 10k/s of the 1:1 target; its p99/p50 targets apply at -rate 10k", rate))
		}
	}
	return c.finish(r, start, stdout)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// setupConversations creates the accounts and conversations of a run and opens their
// sockets: per pair a registered sender and a guest recipient; per group a registered
// owner (the sender) and guest members.
func setupConversations(ctx context.Context, c *common, f *fleet, pairs, groups, groupSize int) ([]convo, error) {
	run := strconv.FormatInt(time.Now().UnixMilli()%1e8, 36)
	type plan struct {
		owner   account
		members []account
		kind    int
		conv    string
	}
	plans, err := parallel(ctx, pairs+groups, 16, func(ctx context.Context, i int) (plan, error) {
		a := c.apiFor(i)
		owner, err := a.member(ctx, fmt.Sprintf("b%s_%d", run, i))
		if err != nil {
			return plan{}, fmt.Errorf("register sender: %w", err)
		}
		n, kind := 1, kindDirect
		if i >= pairs {
			n, kind = groupSize-1, kindGroup
		}
		pl := plan{owner: owner, kind: kind}
		for range n {
			g, err := a.guest(ctx)
			if err != nil {
				return plan{}, fmt.Errorf("guest: %w", err)
			}
			pl.members = append(pl.members, g)
		}
		if kind == kindDirect {
			pl.conv, err = a.direct(ctx, owner, pl.members[0].ID)
		} else {
			ids := make([]string, len(pl.members))
			for j, m := range pl.members {
				ids[j] = m.ID
			}
			pl.conv, err = a.group(ctx, owner, "bench "+strconv.Itoa(i), ids)
		}
		if err != nil {
			return plan{}, fmt.Errorf("conversation: %w", err)
		}
		return pl, nil
	})
	if err != nil {
		return nil, err
	}
	var accts []account
	var senderAt []int
	for _, pl := range plans {
		senderAt = append(senderAt, len(accts))
		accts = append(accts, pl.owner)
		accts = append(accts, pl.members...)
	}
	peers, err := f.open(ctx, c, accts, 256)
	if err != nil {
		return nil, err
	}
	convs := make([]convo, len(plans))
	for i, pl := range plans {
		convs[i] = convo{id: pl.conv, kind: pl.kind, sender: peers[senderAt[i]]}
	}
	return convs, nil
}
