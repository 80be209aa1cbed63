package report

import (
	"bytes"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// syncBuffer lets the test read what the progress goroutine writes.
type syncBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes chan struct{}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.writes != nil {
		select {
		case b.writes <- struct{}{}:
		default:
		}
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestProgressFinalLineOnStop(t *testing.T) {
	var out syncBuffer
	var n atomic.Int64
	// An interval far beyond the test's life: only Stop can print.
	p := NewProgress(&out, time.Hour, func() string { return "done " + strconv.FormatInt(n.Add(1), 10) })
	p.Stop()
	if got := out.String(); got != "done 1\n" {
		t.Fatalf("output %q, want exactly the final line", got)
	}
	p.Stop() // idempotent: no second final line, no panic
	if got := out.String(); got != "done 1\n" {
		t.Fatalf("second Stop printed again: %q", got)
	}
}

func TestProgressPeriodic(t *testing.T) {
	out := syncBuffer{writes: make(chan struct{}, 1)}
	var calls atomic.Int64
	p := NewProgress(&out, time.Millisecond, func() string {
		calls.Add(1)
		return "tick\n" // an explicit newline must not be doubled
	})
	// Wait for two periodic writes (events, not a guessed sleep).
	for range 2 {
		select {
		case <-out.writes:
		case <-time.After(10 * time.Second):
			t.Fatal("no periodic line within 10s")
		}
	}
	p.Stop()
	n := calls.Load()
	got := out.String()
	if int64(strings.Count(got, "tick\n")) != n || n < 3 || strings.Contains(got, "\n\n") {
		t.Fatalf("%d calls, output %q", n, got)
	}
}

func TestProgressConcurrentStop(t *testing.T) {
	var out syncBuffer
	p := NewProgress(&out, 0, func() string { return "final" })
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(p.Stop)
	}
	wg.Wait()
	if got := out.String(); got != "final\n" {
		t.Fatalf("output %q, want one final line", got)
	}
}
