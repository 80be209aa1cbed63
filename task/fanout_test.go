package task_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client/callopt"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gochat/gochat/kitex_gen/repoapi"
	"github.com/gochat/gochat/logic/pushq"
	"github.com/gochat/gochat/task"
)

// fakeRepo: members 1..n of every conversation; user u is on gateway gw-(u%3),
// and users divisible by 7 are offline. failAfter > 0 makes ListMembers fail once
// after that many pages (a crash mid-job).
type fakeRepo struct {
	n int64

	mu        sync.Mutex
	cursors   map[string]*repoapi.GetJobCursorResp
	pages     int
	failAfter int
}

func newFakeRepo(n int64) *fakeRepo {
	return &fakeRepo{n: n, cursors: map[string]*repoapi.GetJobCursorResp{}}
}

func (f *fakeRepo) ListMembers(_ context.Context, r *repoapi.ListMembersReq, _ ...callopt.Option) (*repoapi.ListMembersResp, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pages++
	if f.failAfter > 0 && f.pages == f.failAfter+1 {
		return nil, errors.New("repo went away")
	}
	var out []*repoapi.Member
	for u := r.AfterUserId + 1; u <= f.n && len(out) < int(r.Limit); u++ {
		out = append(out, &repoapi.Member{UserId: u, Role: "member"})
	}
	return &repoapi.ListMembersResp{Members: out}, nil
}

func (f *fakeRepo) GetRoutes(_ context.Context, r *repoapi.GetRoutesReq, _ ...callopt.Option) (*repoapi.GetRoutesResp, error) {
	out := map[int64][]string{}
	for _, u := range r.UserIds {
		if u%7 != 0 {
			out[u] = []string{fmt.Sprint("gw-", u%3)}
		}
	}
	return &repoapi.GetRoutesResp{Routes: out}, nil
}

func (f *fakeRepo) GetJobCursor(_ context.Context, r *repoapi.GetJobCursorReq, _ ...callopt.Option) (*repoapi.GetJobCursorResp, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.cursors[r.JobId]; ok {
		return &repoapi.GetJobCursorResp{Cursor: c.Cursor, Done: c.Done}, nil
	}
	return &repoapi.GetJobCursorResp{}, nil
}

func (f *fakeRepo) SaveJobCursor(_ context.Context, r *repoapi.SaveJobCursorReq, _ ...callopt.Option) (*repoapi.SaveJobCursorResp, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cursors[r.JobId] = &repoapi.GetJobCursorResp{Cursor: r.Cursor, Done: r.Done}
	return &repoapi.SaveJobCursorResp{}, nil
}

// deadGateway says gw-2 is gone.
type deadGateway struct{}

func (deadGateway) Alive(id string) bool { return id != "gw-2" }

// received collects the recipients of every push record per gateway topic.
type received struct {
	mu    sync.Mutex
	got   map[string][]int64 // gateway -> recipients of message 77 (or any, for the other tests)
	byMsg map[int64]int      // message id -> recipients pushed
}

// newGateways is a bus with the three gateways' topics followed.
func newGateways(t *testing.T) (*pushq.Memory, *received) {
	t.Helper()
	bus := pushq.NewMemory()
	t.Cleanup(func() { _ = bus.Close() })
	r := &received{got: map[string][]int64{}}
	for _, gw := range []string{"gw-0", "gw-1", "gw-2"} {
		r.sub(t, bus, gw)
	}
	return bus, r
}

func (r *received) sub(t *testing.T, bus *pushq.Memory, gw string) {
	t.Helper()
	s, err := bus.Subscribe(t.Context(), pushq.GatewayTopic(gw), func(v []byte) {
		p, err := pushq.DecodePush(v)
		if err != nil {
			t.Errorf("bad push: %v", err)
			return
		}
		r.mu.Lock()
		if r.byMsg == nil {
			r.byMsg = map[int64]int{}
		}
		r.byMsg[p.Message.ID] += len(p.Recipients)
		if p.Message.ID != 78 {
			r.got[gw] = append(r.got[gw], p.Recipients...)
		}
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
}

func (r *received) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.got {
		n += len(v)
	}
	return n
}

func runFanout(t *testing.T, repo *fakeRepo, bus *pushq.Memory) {
	t.Helper()
	cfg := task.Default()
	cfg.FanoutBatch = 50
	tk, err := task.New(cfg, task.Deps{
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: prometheus.NewRegistry(),
		Bus: bus, Repo: repo, Gateway: deadGateway{},
	})
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
}

func publishJob(t *testing.T, bus *pushq.Memory, id int64) {
	t.Helper()
	publish(t, bus, pushq.FanoutJob{Message: pushq.Message{ID: id, ConversationID: "group_9", Seq: 1, SenderID: 1, Content: "x"}})
}

func publish(t *testing.T, bus *pushq.Memory, j pushq.FanoutJob) {
	t.Helper()
	v, err := j.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Publish(t.Context(), pushq.TopicJobs, j.Key(), v); err != nil {
		t.Fatal(err)
	}
}

// want: every online member on a live gateway, but those in except, exactly once;
// nobody on gw-2.
func wantDelivered(t *testing.T, r *received, n int64, except ...int64) {
	t.Helper()
	var want []int64
	for u := int64(1); u <= n; u++ {
		if u%7 != 0 && u%3 != 2 && !slices.Contains(except, u) {
			want = append(want, u)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.total() < len(want) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var got []int64
	for gw, uids := range r.got {
		for _, u := range uids {
			if fmt.Sprint("gw-", u%3) != gw {
				t.Fatalf("user %d pushed via %s", u, gw)
			}
		}
		got = append(got, uids...)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("delivered %d recipients, want %d (each once)", len(got), len(want))
	}
}

func TestLargeGroupFanout(t *testing.T) {
	bus, r := newGateways(t)
	repo := newFakeRepo(1234)
	runFanout(t, repo, bus)
	publishJob(t, bus, 77)
	wantDelivered(t, r, 1234)
	repo.mu.Lock()
	c := repo.cursors["fanout:77"]
	repo.mu.Unlock()
	if c == nil || !c.Done || c.Cursor != 1234 {
		t.Fatalf("job progress = %+v, want done at 1234", c)
	}
	// A redelivered (finished) job pushes nothing again: job 78, queued behind it on
	// the same key, is fully delivered while 77 stays at one push per recipient.
	before := r.total()
	publishJob(t, bus, 77)
	publishJob(t, bus, 78)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		n78, n77 := r.byMsg[78], r.byMsg[77]
		r.mu.Unlock()
		if n78 == before {
			if n77 != before {
				t.Fatalf("message 77 pushed to %d recipients after its redelivery, want %d", n77, before)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job 78 reached %d of %d recipients", n78, before)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A job that fails half-way is retried and resumes at its cursor: nobody gets the
// message twice except, at most, one page in flight (none here: the failure is
// before the page is pushed).
func TestLargeGroupFanoutResumes(t *testing.T) {
	bus, r := newGateways(t)
	repo := newFakeRepo(300)
	repo.failAfter = 3
	runFanout(t, repo, bus)
	publishJob(t, bus, 5)
	wantDelivered(t, r, 300)
}

// A resend's job reaches every online member but the sender (user 4 here).
func TestLargeGroupResendSkipsSender(t *testing.T) {
	bus, r := newGateways(t)
	runFanout(t, newFakeRepo(600), bus)
	publish(t, bus, pushq.FanoutJob{Resend: true, Message: pushq.Message{ID: 9, ConversationID: "group_9", Seq: 1, SenderID: 4, Content: "x"}})
	wantDelivered(t, r, 600, 4)
}

func TestMalformedJobSkipped(t *testing.T) {
	bus := pushq.NewMemory()
	t.Cleanup(func() { _ = bus.Close() })
	r := &received{got: map[string][]int64{}}
	r.sub(t, bus, "gw-0")
	repo := newFakeRepo(10)
	runFanout(t, repo, bus)
	if err := bus.Publish(t.Context(), pushq.TopicJobs, []byte("group_9"), []byte("{garbage")); err != nil {
		t.Fatal(err)
	}
	publishJob(t, bus, 9) // behind the garbage on the same key: must still run
	deadline := time.Now().Add(10 * time.Second)
	for r.total() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if r.total() == 0 {
		t.Fatal("a malformed job blocked the queue")
	}
}
