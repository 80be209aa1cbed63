package stats

import (
	"context"
	"fmt"
	"math"
	"time"
)

// Pacer schedules events open-loop: event i is due at start + i/rate no matter
// how long earlier events took. A closed loop ("send, wait for the reply, send
// the next") slows down exactly when the server does, so the slow period
// produces fewer samples and the percentiles look better than what users
// would see — coordinated omission. With a Pacer the schedule keeps going and
// a stall shows up as late events.
//
// For that to work callers must measure each event's latency from the
// INTENDED time returned by Next or Wait, not from the moment the request
// was actually sent: time spent queued behind a slow server is latency too.
//
// A Pacer holds no mutable state, so one instance can be shared by any number
// of goroutines that split the event indexes among themselves.
type Pacer struct {
	rate  float64
	start time.Time

	// Hooks for tests; nil means the real clock.
	now   func() time.Time
	timer func(d time.Duration) (<-chan time.Time, func() bool)
}

// NewPacer returns a Pacer issuing rate events per second, event 0 being due
// at start. The rate usually comes from a flag, so an invalid one (not a
// positive finite number) is reported as an error rather than a panic.
//
// Pass a start obtained from time.Now so that it carries a monotonic clock
// reading: intended times then do not jump when the wall clock is adjusted.
func NewPacer(rate float64, start time.Time) (*Pacer, error) {
	if !(rate > 0) || math.IsInf(rate, 1) {
		return nil, fmt.Errorf("stats: pacer rate must be a positive finite number, got %v", rate)
	}
	return &Pacer{rate: rate, start: start}, nil
}

// Rate is the configured events per second.
func (p *Pacer) Rate() float64 { return p.rate }

// Start is the intended time of event 0.
func (p *Pacer) Start() time.Time { return p.start }

// Next returns the intended time of the i-th event (i counts from 0). It is
// computed from i directly instead of by adding intervals, so rounding never
// accumulates into drift over millions of events.
func (p *Pacer) Next(i int64) time.Time {
	// i*1e9 is exact in a float64 up to i ≈ 9e6, so the result is correctly
	// rounded to the nanosecond there and within a fraction of one beyond.
	ns := math.Round(float64(i) * float64(time.Second) / p.rate)
	return p.start.Add(time.Duration(ns))
}

// Wait sleeps until the intended time of event i and returns that intended
// time, which is where the caller must start the latency clock. If the
// schedule is already late it returns immediately so the caller can catch up
// (the lag is still charged to the event's latency). If ctx is done, Wait
// returns the intended time and ctx.Err(), even when late, so that a loop
// that has fallen behind still stops on cancellation.
func (p *Pacer) Wait(ctx context.Context, i int64) (intended time.Time, err error) {
	intended = p.Next(i)
	if err := ctx.Err(); err != nil {
		return intended, err
	}
	d := intended.Sub(p.clock())
	if d <= 0 {
		return intended, nil
	}
	c, stop := p.newTimer(d)
	defer stop()
	select {
	case <-c:
		return intended, nil
	case <-ctx.Done():
		return intended, ctx.Err()
	}
}

// Behind reports how far event i's intended time lies before now: zero when
// the schedule is on time or ahead, positive when the generator cannot keep up
// (the client machine, not the server, may be the bottleneck).
func (p *Pacer) Behind(now time.Time, i int64) time.Duration {
	if d := now.Sub(p.Next(i)); d > 0 {
		return d
	}
	return 0
}

func (p *Pacer) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}

func (p *Pacer) newTimer(d time.Duration) (<-chan time.Time, func() bool) {
	if p.timer != nil {
		return p.timer(d)
	}
	t := time.NewTimer(d)
	return t.C, t.Stop
}
