//go:build linux

package store

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWaitWindowEnds: waitWindow returns when the batch is full, the store is
// closing or ctx has ended, long before its window (an hour here) would.
func TestWaitWindowEnds(t *testing.T) {
	closing := make(chan struct{})
	close(closing)
	ended, cancel := context.WithCancel(t.Context())
	cancel()
	for name, tc := range map[string]struct {
		full, closing bool
		ctx           context.Context
	}{
		"full":    {full: true, ctx: t.Context()},
		"closing": {closing: true, ctx: t.Context()},
		"ctx":     {ctx: ended},
	} {
		s := &Store{cfg: Config{BatchWindow: time.Hour}, closing: make(chan struct{})}
		if tc.closing {
			s.closing = closing
		}
		b := &batch{full: make(chan struct{})}
		if tc.full {
			close(b.full)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.waitWindow(tc.ctx, b)
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: waitWindow still waiting", name)
		}
	}
}

// TestWaitWindowWaits: with nothing to cut it short, waitWindow waits out its window,
// with the alarm (sub-millisecond) and without.
func TestWaitWindowWaits(t *testing.T) {
	a, err := newAlarm()
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	for _, window := range []time.Duration{300 * time.Microsecond, 2 * time.Millisecond} {
		s := &Store{cfg: Config{BatchWindow: window}, closing: make(chan struct{}), alarm: a}
		start := time.Now()
		s.waitWindow(t.Context(), &batch{full: make(chan struct{})})
		if el := time.Since(start); el < window {
			t.Errorf("window %v: returned after %v", window, el)
		}
	}
}

// TestAlarmRings: each ring expires the alarm once, so one timerfd serves every
// window. A nil alarm (none could be made) is a no-op.
func TestAlarmRings(t *testing.T) {
	a, err := newAlarm()
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	for range 3 {
		a.ring(200 * time.Microsecond)
		// poll(2) beside the runtime's poller, which also has the descriptor.
		pfd := []unix.PollFd{{Fd: int32(a.fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(pfd, 5000); err != nil || n != 1 {
			t.Fatalf("alarm did not ring within 5 s: poll = %d, %v", n, err)
		}
		var buf [8]byte
		if _, err := unix.Read(a.fd, buf[:]); err != nil {
			t.Fatalf("read the alarm: %v", err)
		}
		if n := binary.NativeEndian.Uint64(buf[:]); n != 1 {
			t.Fatalf("alarm expired %d times, want 1", n)
		}
	}
	var none *alarm
	none.ring(time.Millisecond)
	if err := none.close(); err != nil {
		t.Errorf("nil alarm close: %v", err)
	}
}

// TestStoreClosesAlarm: a store with a sub-millisecond window has an alarm, and
// Close closes it; a window of a millisecond or more needs none.
func TestStoreClosesAlarm(t *testing.T) {
	h := &harness{driver: DriverSQLite, dsn: "file:" + t.TempDir() + "/alarm.db"}
	s := h.open(t, window(200*time.Microsecond))
	if s.alarm == nil {
		t.Fatal("a 200 µs window and no alarm")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.alarm.f.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("alarm after Close: closing it again gave %v, want os.ErrClosed", err)
	}
	if s := h.open(t, window(time.Millisecond)); s.alarm != nil {
		t.Error("a 1 ms window made an alarm")
	}
}
