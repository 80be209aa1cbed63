package store

import (
	"context"
	"time"
)

// waitWindow waits until b is full, the store closes, ctx ends or the batch window
// passes. The leader parks on a runtime timer, so its P runs other goroutines
// meanwhile.
//
// A runtime timer alone is late for a window under a millisecond in a process with
// nothing else to run: that process waits for its next timer in epoll_wait, whose
// timeout the runtime rounds up to whole milliseconds (runtime/netpoll_epoll.go), and
// at 20 sends/s the 200 µs default took 1.13 ms, a third of a send's time to its ack.
// So the store's alarm (a timerfd in the runtime's poller, window_linux.go) is set to
// ring at the same moment: its expiry ends the poller's epoll_wait, and the runtime
// then finds the expired timer. Under load the timer needs no alarm: a busy P runs
// the timers due each time it schedules.
//
// Before, a sub-millisecond window was slept in 50 µs nanosleep(2) slices (5ca65ad).
// A thread in a system call keeps its P until sysmon takes it back, which it does
// only after seeing the same call on two of its ticks, and sysmon backs off to 10 ms
// ticks while it finds nothing to take. So each slice held a P: in a runtime trace at
// 100 sends in flight the slices took 735 calls and 159 ms a second (a slice lasted
// 217 µs on average, waiting for a CPU to wake on), 8% of the process's two Ps.
func (s *Store) waitWindow(ctx context.Context, b *batch) {
	window := s.cfg.BatchWindow
	if window < time.Millisecond {
		s.alarm.ring(window)
	}
	t := time.NewTimer(window)
	defer t.Stop()
	select {
	case <-b.full:
	case <-t.C:
	case <-s.closing:
	case <-ctx.Done():
	}
}
