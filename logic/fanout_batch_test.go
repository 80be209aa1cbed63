package logic

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cloudwego/kitex/client/callopt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gochat/gochat/kitex_gen/repoapi"
	"github.com/gochat/gochat/logic/pushq"
)

// countingRepo answers the fan-out's lookups from fixed tables and counts the calls;
// the embedded Repo is nil (any other call would fail the test by panicking).
type countingRepo struct {
	Repo
	members map[string][]int64
	routes  map[int64][]string

	peers map[int64][]int64

	mu          sync.Mutex
	listMembers map[string]int
	getRoutes   [][]int64
	listPeers   [][]int64
}

func (r *countingRepo) ListPeersBatch(_ context.Context, req *repoapi.ListPeersBatchReq, _ ...callopt.Option) (*repoapi.ListPeersBatchResp, error) {
	r.mu.Lock()
	r.listPeers = append(r.listPeers, slices.Clone(req.UserIds))
	r.mu.Unlock()
	resp := &repoapi.ListPeersBatchResp{Peers: map[int64][]int64{}}
	for _, id := range req.UserIds {
		if p, ok := r.peers[id]; ok {
			resp.Peers[id] = p
		}
	}
	return resp, nil
}

func (r *countingRepo) ListMembers(_ context.Context, req *repoapi.ListMembersReq, _ ...callopt.Option) (*repoapi.ListMembersResp, error) {
	r.mu.Lock()
	r.listMembers[req.ConversationId]++
	r.mu.Unlock()
	resp := &repoapi.ListMembersResp{}
	for _, id := range r.members[req.ConversationId] {
		resp.Members = append(resp.Members, &repoapi.Member{UserId: id})
	}
	return resp, nil
}

func (r *countingRepo) GetRoutes(_ context.Context, req *repoapi.GetRoutesReq, _ ...callopt.Option) (*repoapi.GetRoutesResp, error) {
	r.mu.Lock()
	r.getRoutes = append(r.getRoutes, slices.Clone(req.UserIds))
	r.mu.Unlock()
	resp := &repoapi.GetRoutesResp{Routes: map[int64][]string{}}
	for _, id := range req.UserIds {
		if gws, ok := r.routes[id]; ok {
			resp.Routes[id] = gws
		}
	}
	return resp, nil
}

// capturePub records what is published, per topic, in order.
type capturePub struct {
	mu     sync.Mutex
	topics map[string][]pushq.Push
}

func (c *capturePub) Publish(_ context.Context, topic string, _, value []byte) error {
	p, err := pushq.DecodePush(value)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.topics[topic] = append(c.topics[topic], p)
	return nil
}

// A batch costs one route lookup for all its recipients, 1:1 members are looked up
// once per conversation ever, and each gateway still gets its records in batch order
// with only its own recipients.
func TestDoBatchOneRouteLookup(t *testing.T) {
	repo := &countingRepo{
		members: map[string][]int64{
			"single_aaaa": {1, 2}, "single_bbbb": {3, 4}, "group_9": {1, 3},
		},
		routes:      map[int64][]string{1: {"gw-a"}, 2: {"gw-b"}, 3: {"gw-a"}},
		listMembers: map[string]int{},
	}
	pub := &capturePub{topics: map[string][]pushq.Push{}}
	f := testFanout(t, repo, pub)
	msg := func(conv string, seq int64) pushJob {
		return messageJob(&repoapi.Message{Id: seq, ConversationId: conv, Seq: seq}, "")
	}
	f.doBatch([]pushJob{msg("single_aaaa", 1), msg("single_aaaa", 2), msg("group_9", 1), msg("world", 7), msg("single_bbbb", 1), msg("single_aaaa", 3)})

	if len(repo.getRoutes) != 1 || !slices.Equal(repo.getRoutes[0], []int64{1, 2, 3, 4}) {
		t.Fatalf("GetRoutes calls %v, want one for users [1 2 3 4]", repo.getRoutes)
	}
	type rec struct {
		conv string
		seq  int64
		to   []int64
	}
	got := func(topic string) []rec {
		var out []rec
		for _, p := range pub.topics[topic] {
			out = append(out, rec{p.Message.ConversationID, p.Message.Seq, p.Recipients})
		}
		return out
	}
	wantA := []rec{{"single_aaaa", 1, []int64{1}}, {"single_aaaa", 2, []int64{1}}, {"group_9", 1, []int64{1, 3}}, {"single_bbbb", 1, []int64{3}}, {"single_aaaa", 3, []int64{1}}}
	wantB := []rec{{"single_aaaa", 1, []int64{2}}, {"single_aaaa", 2, []int64{2}}, {"single_aaaa", 3, []int64{2}}}
	for topic, want := range map[string][]rec{pushq.GatewayTopic("gw-a"): wantA, pushq.GatewayTopic("gw-b"): wantB} {
		g := got(topic)
		if len(g) != len(want) {
			t.Fatalf("%s got %+v, want %+v", topic, g, want)
		}
		for i := range want {
			if g[i].conv != want[i].conv || g[i].seq != want[i].seq || !slices.Equal(g[i].to, want[i].to) {
				t.Fatalf("%s record %d = %+v, want %+v", topic, i, g[i], want[i])
			}
		}
	}
	if w := pub.topics[pushq.TopicBroadcast]; len(w) != 1 || w[0].Message.Seq != 7 {
		t.Fatalf("broadcast records %+v, want the world message once", w)
	}

	// Next batch: the 1:1 members come from their cache, and so do the group's
	// while they are younger than logic.member_cache_ttl.
	now := time.Now()
	f.groups.now = func() time.Time { return now }
	f.doBatch([]pushJob{msg("single_aaaa", 4), msg("single_bbbb", 2), msg("group_9", 2)})
	if repo.listMembers["single_aaaa"] != 1 || repo.listMembers["single_bbbb"] != 1 || repo.listMembers["group_9"] != 1 {
		t.Fatalf("ListMembers calls %v, want each conversation once", repo.listMembers)
	}
	if len(repo.getRoutes) != 2 {
		t.Fatalf("GetRoutes calls %d, want one per batch", len(repo.getRoutes))
	}
	// A membership change made through this logic forgets the group at once.
	f.groups.forget("group_9")
	f.doBatch([]pushJob{msg("group_9", 3)})
	if repo.listMembers["group_9"] != 2 {
		t.Fatalf("ListMembers calls %v after a forget, want the group asked again", repo.listMembers)
	}
	// One made through another logic instance shows once the list is ttl old.
	f.doBatch([]pushJob{msg("group_9", 4)})
	now = now.Add(Default().MemberCacheTTL)
	f.doBatch([]pushJob{msg("group_9", 5)})
	if repo.listMembers["group_9"] != 3 {
		t.Fatalf("ListMembers calls %v, want the group asked again once its list was ttl old (and not before)", repo.listMembers)
	}
}

// A resend's push leaves the sender out: whichever of the two pushes of a message a
// gateway sees first, the sender's other sockets get it from the first store's push
// only (in TestFailureConcurrentResend/split the resend's push came first on one
// gateway and the sender's two sockets both got the message).
func TestDoBatchResendSkipsSender(t *testing.T) {
	repo := &countingRepo{
		members:     map[string][]int64{"single_aaaa": {1, 2}, "group_9": {1, 2, 3}},
		routes:      map[int64][]string{1: {"gw-a", "gw-b"}, 2: {"gw-b"}, 3: {"gw-a"}},
		listMembers: map[string]int{},
	}
	pub := &capturePub{topics: map[string][]pushq.Push{}}
	f := testFanout(t, repo, pub)
	job := func(conv string, dup bool) pushJob {
		j := messageJob(&repoapi.Message{Id: 5, ConversationId: conv, Seq: 1, SenderId: 1}, "gw-a/1")
		j.dup = dup
		return j
	}
	f.doBatch([]pushJob{job("single_aaaa", true), job("group_9", true)})
	f.doBatch([]pushJob{job("single_aaaa", false)})
	type rec struct {
		conv string
		to   []int64
	}
	for topic, want := range map[string][]rec{
		// resends: 1:1 only the peer, the group everyone but the sender; then the
		// first store's push reaches the sender's sockets on both gateways
		pushq.GatewayTopic("gw-a"): {{"group_9", []int64{3}}, {"single_aaaa", []int64{1}}},
		pushq.GatewayTopic("gw-b"): {{"single_aaaa", []int64{2}}, {"group_9", []int64{2}}, {"single_aaaa", []int64{1, 2}}},
	} {
		got := pub.topics[topic]
		if len(got) != len(want) {
			t.Fatalf("%s: %d records %+v, want %+v", topic, len(got), got, want)
		}
		for i, w := range want {
			if got[i].Message.ConversationID != w.conv || !slices.Equal(got[i].Recipients, w.to) {
				t.Errorf("%s record %d: %s to %v, want %s to %v", topic, i, got[i].Message.ConversationID, got[i].Recipients, w.conv, w.to)
			}
		}
	}
}

// Presence changes of one batch cost one peers lookup and one route lookup; each
// user's gateways get a presence record for exactly that user's peers.
func TestDoBatchPresenceOneLookup(t *testing.T) {
	repo := &countingRepo{
		peers:       map[int64][]int64{10: {1, 2}, 11: {2}},
		routes:      map[int64][]string{1: {"gw-a"}, 2: {"gw-b"}},
		listMembers: map[string]int{},
	}
	pub := &capturePub{topics: map[string][]pushq.Push{}}
	f := testFanout(t, repo, pub)
	f.doBatch([]pushJob{presenceJob(10, true), presenceJob(11, true), presenceJob(12, false)})
	if len(repo.listPeers) != 1 || !slices.Equal(repo.listPeers[0], []int64{10, 11, 12}) {
		t.Fatalf("ListPeersBatch calls %v, want one for [10 11 12]", repo.listPeers)
	}
	if len(repo.getRoutes) != 1 {
		t.Fatalf("GetRoutes calls %v, want one", repo.getRoutes)
	}
	type rec struct {
		user int64
		to   []int64
	}
	for topic, want := range map[string][]rec{
		pushq.GatewayTopic("gw-a"): {{10, []int64{1}}},
		pushq.GatewayTopic("gw-b"): {{10, []int64{2}}, {11, []int64{2}}},
	} {
		got := pub.topics[topic]
		if len(got) != len(want) {
			t.Fatalf("%s: %d records, want %d", topic, len(got), len(want))
		}
		for i, w := range want {
			if got[i].Kind != pushq.KindPresence || got[i].Presence.UserID != w.user || !slices.Equal(got[i].Recipients, w.to) {
				t.Fatalf("%s record %d = %+v, want presence of %d to %v", topic, i, got[i], w.user, w.to)
			}
		}
	}
}

// batchPub publishes a batch in one PublishMany, failing the records whose topic is
// in fail; single Publish calls (the fallback) always succeed.
type batchPub struct {
	capturePub
	fail    map[string]bool
	batches int
	single  []string // topics of records published one at a time
}

func (b *batchPub) PublishMany(ctx context.Context, recs []pushq.Record) []error {
	b.batches++
	errs := make([]error, len(recs))
	for i, r := range recs {
		if b.fail[r.Topic] {
			errs[i] = errors.New("broker said no")
			continue
		}
		errs[i] = b.capturePub.Publish(ctx, r.Topic, r.Key, r.Value)
	}
	return errs
}

func (b *batchPub) Publish(ctx context.Context, topic string, key, value []byte) error {
	b.single = append(b.single, topic)
	return b.capturePub.Publish(ctx, topic, key, value)
}

// A batch's records go out in one PublishMany; a record it failed is published
// again on its own, so nothing is lost.
func TestDoBatchPublishesOnceAndRetriesFailures(t *testing.T) {
	repo := &countingRepo{
		members:     map[string][]int64{"single_aaaa": {1, 2}},
		routes:      map[int64][]string{1: {"gw-a"}, 2: {"gw-b"}},
		listMembers: map[string]int{},
	}
	pub := &batchPub{capturePub: capturePub{topics: map[string][]pushq.Push{}}, fail: map[string]bool{pushq.GatewayTopic("gw-b"): true}}
	f := testFanout(t, repo, pub)
	msg := func(seq int64) pushJob {
		return messageJob(&repoapi.Message{Id: seq, ConversationId: "single_aaaa", Seq: seq}, "")
	}
	f.doBatch([]pushJob{msg(1), msg(2)})
	if pub.batches != 1 {
		t.Fatalf("PublishMany calls %d, want 1", pub.batches)
	}
	if want := []string{pushq.GatewayTopic("gw-b"), pushq.GatewayTopic("gw-b")}; !slices.Equal(pub.single, want) {
		t.Fatalf("published one at a time: %v, want the two failed records %v", pub.single, want)
	}
	for _, gw := range []string{"gw-a", "gw-b"} {
		if got := pub.topics[pushq.GatewayTopic(gw)]; len(got) != 2 || got[0].Message.Seq != 1 || got[1].Message.Seq != 2 {
			t.Fatalf("%s got %+v, want seqs 1 and 2", gw, got)
		}
	}
}

// countHandler counts log records.
type countHandler struct {
	slog.Handler
	n *int
}

func (h countHandler) Handle(context.Context, slog.Record) error { *h.n++; return nil }

// A flood of drops logs one line a second, not one per drop; the metric counts all.
func TestDropLogsAtMostOncePerSecond(t *testing.T) {
	var lines int
	f, err := newFanout(Default(), &countingRepo{}, &capturePub{}, nil, nil, slog.New(countHandler{slog.NewTextHandler(io.Discard, nil), &lines}), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		f.drop(presenceJob(1, true), "publish queue full", nil)
	}
	if lines != 1 || f.dropsUnlogged.Load() != 999 {
		t.Fatalf("%d lines and %d unlogged drops for 1000 drops, want 1 and 999", lines, f.dropsUnlogged.Load())
	}
	if got := testutil.ToFloat64(f.dropped); got != 1000 {
		t.Fatalf("dropped counter %v, want 1000", got)
	}
}

// testFanout is a fan-out with default settings over repo and bus, without task or
// gateway set.
func testFanout(t *testing.T, repo Repo, bus Publisher) *fanout {
	t.Helper()
	f, err := newFanout(Default(), repo, bus, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// blockingPeersRepo holds its first ListPeersBatch until release is closed.
type blockingPeersRepo struct {
	countingRepo
	started, release chan struct{}
	once             sync.Once
}

func (r *blockingPeersRepo) ListPeersBatch(ctx context.Context, req *repoapi.ListPeersBatchReq, opts ...callopt.Option) (*repoapi.ListPeersBatchResp, error) {
	first := false
	r.once.Do(func() { first = true })
	if first {
		close(r.started)
		<-r.release
	}
	return r.countingRepo.ListPeersBatch(ctx, req, opts...)
}

// Shards that look up peers while a lookup is running wait for it and then share
// one call: 8 shards cost 2 calls, not 8, and each gets its own users' peers.
func TestPresenceLookupsOfShardsShareACall(t *testing.T) {
	repo := &blockingPeersRepo{
		countingRepo: countingRepo{peers: map[int64][]int64{}},
		started:      make(chan struct{}), release: make(chan struct{}),
	}
	for u := int64(1); u <= 8; u++ {
		repo.peers[u] = []int64{100 + u}
	}
	f := testFanout(t, repo, &capturePub{topics: map[string][]pushq.Push{}})
	type answer struct {
		user  int64
		peers map[int64][]int64
		err   error
	}
	answers := make(chan answer, 8)
	lookup := func(u int64) {
		peers, err := f.presencePeers([]pushJob{presenceJob(u, true)})
		answers <- answer{u, peers, err}
	}
	go lookup(1)
	<-repo.started
	for u := int64(2); u <= 8; u++ {
		go lookup(u)
	}
	waitUntil(t, "7 lookups queued behind the running one", func() bool {
		f.peers.mu.Lock()
		defer f.peers.mu.Unlock()
		return len(f.peers.queue) == 7
	})
	close(repo.release)
	for range 8 {
		a := <-answers
		if a.err != nil || !slices.Equal(a.peers[a.user], []int64{100 + a.user}) {
			t.Errorf("user %d: peers %v, err %v", a.user, a.peers[a.user], a.err)
		}
	}
	repo.mu.Lock()
	defer repo.mu.Unlock()
	if len(repo.listPeers) != 2 || !slices.Equal(repo.listPeers[0], []int64{1}) || !slices.Equal(repo.listPeers[1], []int64{2, 3, 4, 5, 6, 7, 8}) {
		t.Fatalf("ListPeersBatch calls %v, want [1] then [2 … 8]", repo.listPeers)
	}
	if f.peers.running || len(f.peers.queue) != 0 {
		t.Fatalf("after the lookups: running %v, %d queued", f.peers.running, len(f.peers.queue))
	}
}

// waitUntil polls cond until it holds, failing the test after 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// collect waits for company only while a job it took is not alone: with the linger
// made an hour long, a collect that lingered when it should not would hang the test.
func TestCollectLingersOnlyForJobsNotAlone(t *testing.T) {
	f := testFanout(t, &countingRepo{}, &capturePub{topics: map[string][]pushq.Push{}})
	f.linger = time.Hour
	job := func(conv string, seq int64, alone bool) pushJob {
		j := messageJob(&repoapi.Message{Id: seq, ConversationId: conv, Seq: seq}, "")
		j.alone = alone
		return j
	}
	seqs := func(b []pushJob) []int64 {
		var out []int64
		for _, j := range b {
			out = append(out, j.msg.Seq)
		}
		return out
	}
	collect := func(ch chan pushJob, first pushJob) <-chan []pushJob {
		done := make(chan []pushJob, 1)
		go func() { done <- f.collect(ch, append(make([]pushJob, 0, 64), first)) }()
		return done
	}

	// Alone, nothing queued: back at once.
	if got := seqs(<-collect(make(chan pushJob, 8), job("c", 1, true))); !slices.Equal(got, []int64{1}) {
		t.Fatalf("alone job: batch %v", got)
	}
	// Alone, with alone company already queued: takes it, sorted, without waiting.
	ch := make(chan pushJob, 8)
	ch <- job("c", 3, true)
	ch <- job("c", 2, true)
	if got := seqs(<-collect(ch, job("c", 1, true))); !slices.Equal(got, []int64{1, 2, 3}) {
		t.Fatalf("alone jobs: batch %v", got)
	}
	// A queued job that is not alone starts the linger: a later job joins.
	ch = make(chan pushJob, 8)
	ch <- job("c", 3, false)
	done := collect(ch, job("c", 1, true))
	waitUntil(t, "collect to take the job that is not alone", func() bool { return len(ch) == 0 })
	ch <- job("c", 2, true)
	close(ch) // ends the linger, as a closed queue does
	if got := seqs(<-done); !slices.Equal(got, []int64{1, 2, 3}) {
		t.Fatalf("after a job not alone: batch %v, want the later job 2 in it", got)
	}
	// A first job that is not alone lingers too.
	ch = make(chan pushJob, 8)
	done = collect(ch, job("c", 5, false))
	ch <- job("c", 4, true)
	close(ch)
	if got := seqs(<-done); !slices.Equal(got, []int64{4, 5}) {
		t.Fatalf("first job not alone: batch %v", got)
	}
}

// An append's pushes are alone only while no other append of their conversation is
// in flight, the other counting until its own pushes are queued.
func TestAppendsMarkJobsAlone(t *testing.T) {
	var a appends
	msg := func(conv string) []pushJob {
		return []pushJob{messageJob(&repoapi.Message{ConversationId: conv}, ""), presenceJob(1, true)}
	}
	a.begin([]string{"x", "y"})
	a.begin([]string{"x"})
	jobs := msg("x")
	if a.queued(jobs); jobs[0].alone || jobs[1].alone {
		t.Fatalf("x with two appends in flight: alone %v, presence %v; want neither", jobs[0].alone, jobs[1].alone)
	}
	jobs = msg("y")
	if a.queued(jobs); !jobs[0].alone {
		t.Fatal("y with one append in flight: not alone")
	}
	a.end([]string{"x"})
	jobs = msg("x")
	if a.queued(jobs); !jobs[0].alone || jobs[1].alone {
		t.Fatalf("x after the other append ended: alone %v, presence %v; want only x", jobs[0].alone, jobs[1].alone)
	}
	a.end([]string{"x", "y"})
	if len(a.inflight) != 0 {
		t.Fatalf("after every append ended: %v", a.inflight)
	}
}
