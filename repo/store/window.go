package store

import (
	"context"
	"time"
)

// windowSlice is how long each sleep of a sub-millisecond batch window lasts; the
// batch filling up, the store closing and ctx ending are looked at between them.
const windowSlice = 50 * time.Microsecond

// waitWindow waits until b is full, the store closes, ctx ends or the batch window
// passes.
//
// A window under a millisecond is slept in short nanosleep(2) slices instead of on
// a runtime timer. A Go process with nothing else to run waits for its next timer in
// epoll_wait, whose timeout the runtime rounds up to whole milliseconds
// (runtime/netpoll_epoll.go): at 20 sends/s the 200 µs default took 1.13 ms, a
// third of a send's time to its ack. A sleeping slice holds a thread, not the
// others' work: the runtime hands its P to another thread when there is work waiting.
func (s *Store) waitWindow(ctx context.Context, b *batch) {
	s.waitWindowOn(ctx, b, sleepThread, time.Now)
}

// waitWindowOn is waitWindow with the sub-millisecond path's sleep and clock given.
func (s *Store) waitWindowOn(ctx context.Context, b *batch, sleep func(time.Duration), now func() time.Time) {
	window := s.cfg.BatchWindow
	if window >= time.Millisecond {
		t := time.NewTimer(window)
		defer t.Stop()
		select {
		case <-b.full:
		case <-t.C:
		case <-s.closing:
		case <-ctx.Done():
		}
		return
	}
	stopped := func() bool {
		select {
		case <-b.full:
		case <-s.closing:
		case <-ctx.Done():
		default:
			return false
		}
		return true
	}
	sliced(window, stopped, sleep, now)
}

// sliced sleeps window in slices of at most windowSlice, until window has passed on
// now's clock or stopped reports true (asked before each slice).
func sliced(window time.Duration, stopped func() bool, sleep func(time.Duration), now func() time.Time) {
	deadline := now().Add(window)
	for !stopped() {
		left := deadline.Sub(now())
		if left <= 0 {
			return
		}
		sleep(min(left, windowSlice))
	}
}
