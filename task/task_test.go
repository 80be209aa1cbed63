package task_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/cloudwego/kitex/pkg/kerrors"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gochat/gochat/kitex_gen/base"
	"github.com/gochat/gochat/kitex_gen/taskapi"
	"github.com/gochat/gochat/task"
)

// flaky fails the first `fail` publishes, then records what it publishes.
type flaky struct {
	mu        sync.Mutex
	fail      int
	calls     int
	published chan string
}

// ConsumeGroup has no jobs for these tests: it waits for shutdown.
func (f *flaky) ConsumeGroup(ctx context.Context, _ string, _ []string, _ func(context.Context, []byte, []byte) error) error {
	<-ctx.Done()
	return nil
}

func (f *flaky) Publish(_ context.Context, topic string, _, value []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls <= f.fail {
		return errors.New("broker unreachable")
	}
	f.published <- topic + ":" + string(value)
	return nil
}

func deps(bus task.Bus) task.Deps {
	return task.Deps{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: prometheus.NewRegistry(), Bus: bus, Repo: newFakeRepo(0)}
}

func start(t *testing.T, cfg task.Config, bus task.Bus) *task.Task {
	t.Helper()
	tk, err := task.New(cfg, deps(bus))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tk.Run(ctx, func(ctx context.Context) error { <-ctx.Done(); return nil }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return tk
}

func TestDeferredPushRetriedUntilPublished(t *testing.T) {
	cfg := task.Default()
	cfg.MaxBackoff = 20 * time.Millisecond
	bus := &flaky{fail: 3, published: make(chan string, 10)}
	tk := start(t, cfg, bus)
	ctx := context.Background()
	for _, v := range []string{"a", "b"} {
		if _, err := tk.DeferPush(ctx, &taskapi.DeferPushReq{Topic: "t", Value: []byte(v), DeadlineMs: time.Now().Add(time.Minute).UnixMilli()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"t:a", "t:b"} { // in order, despite the failures
		select {
		case got := <-bus.published:
			if got != want {
				t.Fatalf("published %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s not published", want)
		}
	}
	// The counters move right after each Publish returns.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := tk.Stats(ctx, &taskapi.StatsReq{})
		if st.Delivered == 2 && st.Pending == 0 && st.Dropped == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats = %+v, want 2 delivered", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDeferredPushDroppedAtDeadline(t *testing.T) {
	cfg := task.Default()
	cfg.MaxBackoff = 5 * time.Millisecond
	bus := &flaky{fail: 1 << 30, published: make(chan string, 1)}
	tk := start(t, cfg, bus)
	ctx := context.Background()
	if _, err := tk.DeferPush(ctx, &taskapi.DeferPushReq{Topic: "t", Value: []byte("x"), DeadlineMs: time.Now().Add(50 * time.Millisecond).UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := tk.Stats(ctx, &taskapi.StatsReq{})
		if st.Dropped == 1 && st.Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats = %+v, want the push dropped at its deadline", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDeferPushRejects(t *testing.T) {
	cfg := task.Default()
	cfg.QueueSize = 1
	bus := &flaky{fail: 1 << 30, published: make(chan string, 1)}
	tk, err := task.New(cfg, deps(bus))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	code := func(err error) int32 {
		if bse, ok := kerrors.FromBizStatusError(err); ok {
			return bse.BizStatusCode()
		}
		return -1
	}
	if _, err := tk.DeferPush(ctx, &taskapi.DeferPushReq{Topic: "", Value: []byte("x")}); code(err) != int32(base.ErrCode_BAD_REQUEST) {
		t.Fatalf("empty topic err = %v", err)
	}
	// Not running, so the queue of one fills up.
	if _, err := tk.DeferPush(ctx, &taskapi.DeferPushReq{Topic: "t", Value: []byte("1"), DeadlineMs: time.Now().Add(time.Minute).UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.DeferPush(ctx, &taskapi.DeferPushReq{Topic: "t", Value: []byte("2"), DeadlineMs: time.Now().Add(time.Minute).UnixMilli()}); code(err) != int32(base.ErrCode_UNAVAILABLE) {
		t.Fatalf("full queue err = %v, want UNAVAILABLE", err)
	}
}
