package store

import (
	"context"
	"testing"
	"time"
)

// fakeClock is a clock that only sleep moves.
type fakeClock struct {
	t      time.Time
	slices []time.Duration
}

func (c *fakeClock) now() time.Time { return c.t }
func (c *fakeClock) sleep(d time.Duration) {
	c.slices = append(c.slices, d)
	c.t = c.t.Add(d)
}

// TestSlicedSleepsTheWindow: a window nothing cuts short is slept whole, in slices
// of at most windowSlice, so the batch's end is looked at every windowSlice.
func TestSlicedSleepsTheWindow(t *testing.T) {
	for _, window := range []time.Duration{time.Microsecond, windowSlice, 200 * time.Microsecond, 230 * time.Microsecond, 999 * time.Microsecond} {
		c := &fakeClock{t: time.Unix(0, 0)}
		sliced(window, func() bool { return false }, c.sleep, c.now)
		var total time.Duration
		for _, d := range c.slices {
			if d <= 0 || d > windowSlice {
				t.Errorf("window %v: slice %v, want (0, %v]", window, d, windowSlice)
			}
			total += d
		}
		if want := int((window + windowSlice - 1) / windowSlice); total != window || len(c.slices) != want {
			t.Errorf("window %v: slept %v in %d slices, want %v in %d", window, total, len(c.slices), window, want)
		}
	}
}

// TestSlicedStops: the window ends at the first check after stopped turns true
// (the batch filled up, the store closes, the caller's ctx ended).
func TestSlicedStops(t *testing.T) {
	for _, after := range []int{0, 1, 3} {
		c := &fakeClock{t: time.Unix(0, 0)}
		checks := 0
		sliced(200*time.Microsecond, func() bool { checks++; return checks > after }, c.sleep, c.now)
		if len(c.slices) != after {
			t.Errorf("stopped after %d checks: %d slices slept, want %d", after, len(c.slices), after)
		}
	}
}

// TestWaitWindowEnds: waitWindow returns without sleeping when the batch is already
// full, the store is closing or ctx has ended: on the sub-millisecond path, whose
// clock here never moves (so only stopping can end it), and on the timer path, whose
// window here is an hour.
func TestWaitWindowEnds(t *testing.T) {
	closing := make(chan struct{})
	close(closing)
	ended, cancel := context.WithCancel(t.Context())
	cancel()
	for _, window := range []time.Duration{200 * time.Microsecond, time.Hour} {
		for name, tc := range map[string]struct {
			full, closing bool
			ctx           context.Context
		}{
			"full":    {full: true, ctx: t.Context()},
			"closing": {closing: true, ctx: t.Context()},
			"ctx":     {ctx: ended},
		} {
			s := &Store{cfg: Config{BatchWindow: window}, closing: make(chan struct{})}
			if tc.closing {
				s.closing = closing
			}
			b := &batch{full: make(chan struct{})}
			if tc.full {
				close(b.full)
			}
			var slept []time.Duration
			frozen := time.Unix(0, 0)
			done := make(chan struct{})
			go func() {
				defer close(done)
				s.waitWindowOn(tc.ctx, b, func(d time.Duration) { slept = append(slept, d) }, func() time.Time { return frozen })
			}()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("window %v, %s: waitWindow still waiting", window, name)
			}
			if len(slept) != 0 {
				t.Errorf("window %v, %s: slept %d slices after the batch's end", window, name, len(slept))
			}
		}
	}
}

// TestSleepThreadSleeps: sleepThread sleeps at least what it is asked. A signal
// may end one nanosleep early, so one of three tries must; a sleep that does not
// sleep fails all three.
func TestSleepThreadSleeps(t *testing.T) {
	var got []time.Duration
	for range 3 {
		start := time.Now()
		sleepThread(300 * time.Microsecond)
		el := time.Since(start)
		if el >= 300*time.Microsecond {
			return
		}
		got = append(got, el)
	}
	t.Fatalf("asked for 300 µs, slept %v", got)
}
