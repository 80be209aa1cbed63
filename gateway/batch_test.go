package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a batch call that answers "r<req>" for each request and records the
// batch sizes it saw. gate, when set, holds every call until it is closed.
type recorder struct {
	mu    sync.Mutex
	sizes []int
	gate  chan struct{}
	fail  error
}

func (r *recorder) call(_ context.Context, reqs []int) ([]string, error) {
	r.mu.Lock()
	r.sizes = append(r.sizes, len(reqs))
	r.mu.Unlock()
	if r.gate != nil {
		<-r.gate
	}
	if r.fail != nil {
		return nil, r.fail
	}
	out := make([]string, len(reqs))
	for i, q := range reqs {
		out[i] = fmt.Sprint("r", q)
	}
	return out, nil
}

func (r *recorder) batchSizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.sizes...)
}

func startBatcher(t *testing.T, workers, maxBatch int, call func(context.Context, []int) ([]string, error)) *batcher[int, string] {
	t.Helper()
	b := newBatcher(workers, maxBatch, call)
	b.start()
	t.Cleanup(b.close)
	return b
}

// TestBatcherIdleSendsAtOnce: on an idle batcher a single request is a batch of
// one, sent straight away: nothing waits for company.
func TestBatcherIdleSendsAtOnce(t *testing.T) {
	rec := &recorder{}
	b := startBatcher(t, 4, 256, rec.call)
	for i := range 3 {
		got, err := b.Do(t.Context(), i)
		if err != nil || got != fmt.Sprint("r", i) {
			t.Fatalf("Do(%d) = %q, %v", i, got, err)
		}
	}
	sizes := rec.batchSizes()
	if len(sizes) != 3 || sizes[0] != 1 || sizes[1] != 1 || sizes[2] != 1 {
		t.Fatalf("batch sizes = %v, want [1 1 1]", sizes)
	}
}

// TestBatcherConcurrent: many callers at once each get their own answer, and no
// batch exceeds maxBatch. While the single worker is held in a call, the queue
// fills, so later batches carry many requests.
func TestBatcherConcurrent(t *testing.T) {
	const n, maxBatch = 2000, 64
	rec := &recorder{gate: make(chan struct{})}
	b := startBatcher(t, 1, maxBatch, rec.call)
	var wg sync.WaitGroup
	var bad atomic.Int32
	for i := range n {
		wg.Go(func() {
			got, err := b.Do(t.Context(), i)
			if err != nil || got != fmt.Sprint("r", i) {
				bad.Add(1)
				t.Errorf("Do(%d) = %q, %v", i, got, err)
			}
		})
	}
	// Let the worker go once the queue holds a full batch.
	deadline := time.Now().Add(10 * time.Second)
	for len(b.queue) < maxBatch && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(rec.gate)
	wg.Wait()
	if bad.Load() > 0 {
		return
	}
	total, largest := 0, 0
	for _, s := range rec.batchSizes() {
		if s > maxBatch {
			t.Errorf("batch of %d exceeds maxBatch %d", s, maxBatch)
		}
		total += s
		largest = max(largest, s)
	}
	if total != n {
		t.Errorf("batches carried %d requests, want %d", total, n)
	}
	if largest < 2 {
		t.Errorf("largest batch = %d: a backlog was never batched", largest)
	}
}

// TestBatcherCallError: a failed call is every caller's error in that batch.
func TestBatcherCallError(t *testing.T) {
	boom := errors.New("boom")
	rec := &recorder{gate: make(chan struct{}), fail: boom}
	b := startBatcher(t, 1, 16, rec.call)
	var wg sync.WaitGroup
	errs := make([]error, 10)
	for i := range errs {
		wg.Go(func() { _, errs[i] = b.Do(t.Context(), i) })
	}
	for deadline := time.Now().Add(10 * time.Second); len(b.queue) < len(errs)-1 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond) // the first request is in the held call, the rest queued
	}
	close(rec.gate)
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, boom) {
			t.Errorf("caller %d err = %v, want the call's error", i, err)
		}
	}
}

// TestBatcherShortAnswer: a call that answers fewer requests than it got fails the
// batch rather than handing out misaligned answers.
func TestBatcherShortAnswer(t *testing.T) {
	b := startBatcher(t, 1, 8, func(context.Context, []int) ([]string, error) { return nil, nil })
	if _, err := b.Do(t.Context(), 1); err == nil {
		t.Fatal("Do succeeded on a call that answered nothing")
	}
}

// TestBatcherCallerCancel: a caller whose ctx ends stops waiting with ctx.Err();
// the batch it was in still completes for the others.
func TestBatcherCallerCancel(t *testing.T) {
	rec := &recorder{gate: make(chan struct{})}
	b := startBatcher(t, 1, 8, rec.call)
	other := make(chan error, 1)
	go func() {
		_, err := b.Do(t.Context(), 1) // held in the call
		other <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); len(rec.batchSizes()) == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := b.Do(ctx, 2) // queued behind the held call
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Do err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancelled Do still waiting")
	}
	close(rec.gate)
	if err := <-other; err != nil {
		t.Fatalf("the other caller's Do = %v", err)
	}
}

// TestBatcherClose: close waits for the workers; a Do after it fails at once.
func TestBatcherClose(t *testing.T) {
	rec := &recorder{}
	b := newBatcher(2, 8, rec.call)
	b.start()
	if _, err := b.Do(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	b.close()
	b.close() // idempotent
	if _, err := b.Do(t.Context(), 2); !errors.Is(err, errBatcherClosed) {
		t.Fatalf("Do after close err = %v, want errBatcherClosed", err)
	}
	never := newBatcher(2, 8, rec.call)
	never.close() // a batcher that never started closes too
}

// TestBatcherCloseWithQueued: a Do queued behind a call in flight when close
// starts (a socket closing while the gateway stops) is answered, by the call or
// with errBatcherClosed, once that call returns: it never waits forever.
func TestBatcherCloseWithQueued(t *testing.T) {
	rec := &recorder{gate: make(chan struct{})}
	b := newBatcher(1, 8, rec.call)
	b.start()
	first := make(chan error, 1)
	go func() {
		_, err := b.Do(context.Background(), 1) // held in the call
		first <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); len(rec.batchSizes()) == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	queued := make(chan error, 1)
	go func() {
		_, err := b.Do(context.Background(), 2) // no deadline of its own
		queued <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); len(b.queue) == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan struct{})
	go func() {
		b.close()
		close(closed)
	}()
	close(rec.gate)
	for name, ch := range map[string]chan error{"in the call": first, "queued": queued} {
		select {
		case err := <-ch:
			if err != nil && !errors.Is(err, errBatcherClosed) {
				t.Errorf("Do %s err = %v, want nil or errBatcherClosed", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Do %s still waiting after close", name)
		}
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("close still waiting")
	}
}
