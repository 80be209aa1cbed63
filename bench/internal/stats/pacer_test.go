package stats

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"
)

func mustPacer(t *testing.T, rate float64, start time.Time) *Pacer {
	t.Helper()
	p, err := NewPacer(rate, start)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPacerNext(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		rate float64
		i    int64
		want time.Duration
	}{
		{1000, 0, 0},
		{1000, 1, time.Millisecond},
		{1000, 1500, 1500 * time.Millisecond},
		{1, 7, 7 * time.Second},
		{3, 1, 333333333 * time.Nanosecond},
		{3, 2, 666666667 * time.Nanosecond},
		{3, 3_000_000_000, 1_000_000_000 * time.Second}, // no drift over 3e9 events
		{0.5, 3, 6 * time.Second},
		{250000, 1, 4 * time.Microsecond},
		{250000, 1_000_000, 4 * time.Second},
		{1e9, 123, 123 * time.Nanosecond},
	} {
		p := mustPacer(t, c.rate, start)
		if got := p.Next(c.i).Sub(start); got != c.want {
			t.Errorf("rate %v: Next(%d) = start+%v, want start+%v", c.rate, c.i, got, c.want)
		}
	}
}

func TestPacerInvalidRate(t *testing.T) {
	for _, r := range []float64{0, -1, math.NaN(), math.Inf(1), math.Inf(-1)} {
		if p, err := NewPacer(r, time.Now()); err == nil || p != nil {
			t.Errorf("NewPacer(%v) = %v, %v; want error", r, p, err)
		}
	}
	if _, err := NewPacer(0.001, time.Now()); err != nil {
		t.Errorf("NewPacer(0.001): %v", err)
	}
}

func TestPacerBehind(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := mustPacer(t, 100, start)
	if got := p.Behind(start.Add(time.Second), 50); got != 500*time.Millisecond {
		t.Errorf("Behind = %v, want 500ms", got)
	}
	if got := p.Behind(start.Add(time.Second), 100); got != 0 {
		t.Errorf("on time: Behind = %v, want 0", got)
	}
	if got := p.Behind(start, 100); got != 0 {
		t.Errorf("ahead: Behind = %v, want 0", got)
	}
}

func TestPacerWaitLateReturnsImmediately(t *testing.T) {
	start := time.Now().Add(-time.Hour)
	p := mustPacer(t, 10, start)
	p.timer = func(time.Duration) (<-chan time.Time, func() bool) {
		t.Fatal("Wait slept although the event was already late")
		return nil, nil
	}
	got, err := p.Wait(context.Background(), 5)
	if err != nil {
		t.Fatal(err)
	}
	if want := start.Add(500 * time.Millisecond); !got.Equal(want) {
		t.Fatalf("Wait returned %v, want intended %v", got, want)
	}
}

// fakeClock lets Wait's sleeping be checked without real sleeps.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	slept []time.Duration
	fire  chan time.Time
	armed chan struct{}
	stops int
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, fire: make(chan time.Time, 1), armed: make(chan struct{}, 1)}
}

func (f *fakeClock) install(p *Pacer) {
	p.now = func() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
	p.timer = func(d time.Duration) (<-chan time.Time, func() bool) {
		f.mu.Lock()
		f.slept = append(f.slept, d)
		f.mu.Unlock()
		f.armed <- struct{}{}
		return f.fire, func() bool { f.mu.Lock(); f.stops++; f.mu.Unlock(); return true }
	}
}

func TestPacerWaitSleepsUntilIntended(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := newFakeClock(start.Add(250 * time.Millisecond))
	p := mustPacer(t, 4, start)
	clk.install(p)

	type res struct {
		t   time.Time
		err error
	}
	done := make(chan res, 1)
	go func() {
		got, err := p.Wait(context.Background(), 3) // intended start+750ms
		done <- res{got, err}
	}()
	<-clk.armed
	select {
	case r := <-done:
		t.Fatalf("Wait returned %v before its timer fired", r)
	default:
	}
	clk.fire <- start.Add(750 * time.Millisecond)
	r := <-done
	if r.err != nil || !r.t.Equal(start.Add(750*time.Millisecond)) {
		t.Fatalf("Wait = %v, %v; want start+750ms", r.t, r.err)
	}
	clk.mu.Lock()
	defer clk.mu.Unlock()
	if len(clk.slept) != 1 || clk.slept[0] != 500*time.Millisecond {
		t.Fatalf("slept %v, want exactly [500ms]", clk.slept)
	}
	if clk.stops != 1 {
		t.Fatalf("timer stopped %d times, want 1", clk.stops)
	}
}

func TestPacerWaitCancel(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := newFakeClock(start)
	p := mustPacer(t, 1, start)
	clk.install(p)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := p.Wait(ctx, 10) // the fake timer never fires
		errc <- err
	}()
	<-clk.armed
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait after cancel = %v, want context.Canceled", err)
	}

	// A loop that has fallen behind must still see cancellation.
	late := mustPacer(t, 1, time.Now().Add(-time.Hour))
	intended, err := late.Wait(ctx, 0)
	if !errors.Is(err, context.Canceled) || !intended.Equal(late.Start()) {
		t.Fatalf("late Wait with cancelled ctx = %v, %v", intended, err)
	}
}

func TestPacerWaitRealClockNeverEarly(t *testing.T) {
	// Real timers: only the lower bound is guaranteed, so only it is checked.
	start := time.Now()
	p := mustPacer(t, 2000, start)
	for i := int64(0); i < 20; i++ {
		intended, err := p.Wait(context.Background(), i)
		if err != nil {
			t.Fatal(err)
		}
		if now := time.Now(); now.Before(intended) {
			t.Fatalf("Wait(%d) returned at %v, before intended %v", i, now.Sub(start), intended.Sub(start))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if _, err := p.Wait(ctx, 2000*3600); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait an hour ahead with a 5ms deadline = %v", err)
	}
}
