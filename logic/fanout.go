package logic

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gochat/gochat/kitex_gen/repoapi"
	"github.com/gochat/gochat/kitex_gen/taskapi"
	"github.com/gochat/gochat/logic/pushq"
)

// pushJob is one fan-out decision to carry out: a stored message (world or a
// conversation's members) or a presence change (the user's friends and 1:1 peers).
type pushJob struct {
	key    []byte
	msg    *repoapi.Message // message jobs
	origin string           // the sending socket, skipped by its gateway
	// dup marks the push of a resend that found the message stored. A resend that
	// raced the first send completes in the same group commit; its push must not go
	// first, or gateways would deliver to every socket of the sender (a resend over
	// HTTP has no origin to skip) and drop the first push as already made. Jobs
	// queued from different gateways' batches can still arrive in either order, so a
	// resend's push also leaves the sender out of its recipients: the sender's other
	// sockets get the message from the first push, and a gateway that saw only the
	// resend's push does not count the sender as served.
	dup      bool
	presence *pushq.Presence // presence jobs
	// recipients and routes, when set, came with the append (knownRecipients):
	// the message's members and their gateways, read after the commit. The batch
	// then looks up routes only for the jobs without them.
	recipients []int64
	routes     map[int64][]string
	// alone: when this push was queued, no other append of its conversation was in
	// flight in this logic, so no push of the same group commit can come after it
	// (appends.queued). Its shard publishes it without lingering. False for every
	// other push, presence included: the shard waits pushLinger for company.
	alone bool
}

func messageJob(m *repoapi.Message, origin string) pushJob {
	return pushJob{key: []byte(m.ConversationId), msg: m, origin: origin}
}

func presenceJob(userID int64, online bool) pushJob {
	p := &pushq.Presence{UserID: userID, Online: online}
	return pushJob{key: pushq.Push{Kind: pushq.KindPresence, Presence: p}.Key(), presence: p}
}

// fanout carries out pushes off the send path: Send enqueues and returns (the ack
// does not wait for the bus). A key (conversation, or user for presence) always maps
// to the same shard, and a shard works in FIFO order, so one conversation's pushes
// leave logic in the order their appends returned.
//
// World messages are one record on the broadcast topic. Other messages resolve the
// conversation's members and their routes (user → gateways) and publish one record
// per gateway that holds a recipient, carrying the message once and that gateway's
// recipients. A publish that keeps failing for PushRetry is handed to task, which
// retries longer. Pushes are best effort: a recipient recovers by seq.
type fanout struct {
	repo       Repo
	gateways   GatewaySet // nil: every routed gateway counts as alive
	bus        Publisher
	task       Task
	log        *slog.Logger
	retry      time.Duration
	deferFor   time.Duration
	largeGroup int // more members than this: hand the fan-out to task
	singles    memberCache
	groups     *groupCache
	peers      peersLookup
	appends    appends
	linger     time.Duration // pushLinger; tests make it long

	shards []chan pushJob

	// base bounds every publish and hand-over; cancelled ShutdownDrain after close so
	// a dead bus cannot hold shutdown hostage.
	base       context.Context
	baseCancel context.CancelFunc

	// mu guards closed; held for reading while enqueueing so close never races a send
	// on a closed channel.
	mu     sync.RWMutex
	closed bool

	// dropLogged is when a drop was last logged (UnixNano); dropsUnlogged counts the
	// drops since then that were not.
	dropLogged, dropsUnlogged atomic.Int64

	published, deferred, dropped, deadRoutes prometheus.Counter
	publishSeconds                           prometheus.Histogram
}

func newFanout(cfg Config, repo Repo, bus Publisher, task Task, gateways GatewaySet, log *slog.Logger, reg prometheus.Registerer) (*fanout, error) {
	f := &fanout{
		repo: repo, gateways: gateways, bus: bus, task: task, log: log, retry: cfg.PushRetry, deferFor: cfg.DeferDeadline, largeGroup: cfg.LargeGroup,
		singles: memberCache{max: max(cfg.UserCacheSize, 1)},
		groups:  newGroupCache(cfg.MemberCacheTTL, max(cfg.UserCacheSize, 1)),
		linger:  pushLinger,
		shards:  make([]chan pushJob, cfg.PushShards),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gochat_logic_pushes_published_total", Help: "Push records published to the bus.",
		}),
		deferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gochat_logic_pushes_deferred_total", Help: "Push records handed to task after publishing kept failing.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gochat_logic_pushes_dropped_total", Help: "Pushes given up on (recipients recover by seq).",
		}),
		deadRoutes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gochat_logic_dead_gateway_routes_total", Help: "Routes skipped because their gateway is no longer registered.",
		}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gochat_logic_publish_seconds", Help: "Time to publish one push record.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	for i := range f.shards {
		f.shards[i] = make(chan pushJob, cfg.PushQueue)
	}
	f.base, f.baseCancel = context.WithCancel(context.Background())
	for _, c := range []prometheus.Collector{f.published, f.deferred, f.dropped, f.deadRoutes, f.publishSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("logic: register metrics: %w", err)
		}
	}
	return f, nil
}

func (f *fanout) enqueue(j pushJob) {
	h := fnv.New32a()
	h.Write(j.key)
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		f.drop(j, "logic is shutting down", nil)
		return
	}
	select {
	case f.shards[h.Sum32()%uint32(len(f.shards))] <- j:
	default:
		f.drop(j, "publish queue full", nil)
	}
}

// drop gives up on a push. Drops come in floods when logic is overloaded (a full
// queue drops every job for a while), and a log line per job would add to the
// overload: the first drop of a second is logged with its details, the rest of that
// second only counted, and the next logged line says how many went unlogged.
func (f *fanout) drop(j pushJob, why string, err error) {
	f.dropped.Inc()
	now := time.Now().UnixNano()
	if last := f.dropLogged.Load(); now-last < int64(time.Second) || !f.dropLogged.CompareAndSwap(last, now) {
		f.dropsUnlogged.Add(1)
		return
	}
	more := f.dropsUnlogged.Swap(0)
	if j.msg != nil {
		f.log.Warn("push dropped: "+why, "conv", j.msg.ConversationId, "seq", j.msg.Seq, "err", err, "unlogged_drops", more)
	} else {
		f.log.Warn("presence push dropped: "+why, "user", j.presence.UserID, "err", err, "unlogged_drops", more)
	}
}

// run works until close is called and the queues are drained.
func (f *fanout) run() {
	var wg sync.WaitGroup
	for _, ch := range f.shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := make([]pushJob, 0, 64)
			for j := range ch {
				f.doBatch(f.collect(ch, append(batch[:0], j)))
			}
		}()
	}
	wg.Wait()
}

// pushLinger is how long a shard waits for company after its first job.
const pushLinger = time.Millisecond

// collect adds what reaches ch within pushLinger (up to the batch's capacity) and
// sorts the batch by key, then seq. Sends committed in one group-commit batch return
// at the same moment and reach the queue in any order; this puts them back in seq
// order per conversation before they are published, so a recipient normally sees
// seqs ascending and a gap means a lost push, not a late one. While every job taken
// is alone (pushJob.alone), nothing can be out of order and collect takes only what
// is already queued: under load the linger's timer fired 2.6 ms late on average.
func (f *fanout) collect(ch <-chan pushJob, batch []pushJob) []pushJob {
	var linger *time.Timer // nil while every job taken is alone
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	for {
		if j := batch[len(batch)-1]; linger == nil && !j.alone {
			linger = time.NewTimer(f.linger)
		}
		if len(batch) == cap(batch) {
			return sortJobs(batch)
		}
		var j pushJob
		var ok bool
		if linger == nil {
			select {
			case j, ok = <-ch:
			default:
				return sortJobs(batch) // all alone: what is queued, without waiting
			}
		} else {
			select {
			case j, ok = <-ch:
			case <-linger.C:
				return sortJobs(batch)
			}
		}
		if !ok {
			return sortJobs(batch)
		}
		batch = append(batch, j)
	}
}

func sortJobs(batch []pushJob) []pushJob {
	slices.SortStableFunc(batch, func(a, b pushJob) int {
		if c := bytes.Compare(a.key, b.key); c != 0 {
			return c
		}
		if a.msg == nil || b.msg == nil {
			return 0
		}
		if c := cmp.Compare(a.msg.Seq, b.msg.Seq); c != 0 {
			return c
		}
		return compareBool(a.dup, b.dup) // the first store's push before its resends'
	})
	return batch
}

// close stops accepting pushes; run returns once what is queued was published, or
// after drain, when the rest is dropped.
func (f *fanout) close(drain time.Duration) {
	f.mu.Lock()
	f.closed = true
	for _, ch := range f.shards {
		close(ch)
	}
	f.mu.Unlock()
	time.AfterFunc(drain, f.baseCancel)
}

// retrying runs op until it succeeds or f.retry has passed.
func (f *fanout) retrying(op func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(f.base, f.retry)
	defer cancel()
	backoff := 10 * time.Millisecond
	for {
		err := op(ctx)
		if err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// doBatch carries out a collected batch with as few repo calls as it can: recipients
// per job (1:1 members come from a cache: they never change), then ONE route lookup
// for every recipient of the batch, then the records in batch order. One lookup per
// message was the push path's limit: at ~3,000 sends/s its queue grew without bound.
func (f *fanout) doBatch(batch []pushJob) {
	recipients := make([][]int64, len(batch))
	skip := make([]bool, len(batch))
	peers, peersErr := f.presencePeers(batch)
	var union []int64
	for i, j := range batch {
		if j.msg != nil && j.msg.ConversationId == WorldID {
			continue
		}
		if j.routes != nil {
			recipients[i] = j.recipients
			continue
		}
		var large bool
		var err error
		if j.msg == nil {
			recipients[i], err = peers[j.presence.UserID], peersErr
		} else {
			err = f.retrying(func(ctx context.Context) error {
				var err error
				recipients[i], large, err = f.members(ctx, j.msg.ConversationId)
				return err
			})
		}
		switch {
		case err != nil:
			f.drop(j, "recipients unavailable", err)
			skip[i] = true
		case large:
			f.handToTask(j)
			skip[i] = true
		default:
			union = append(union, recipients[i]...)
		}
	}
	var routes map[int64][]string
	var routesErr error
	if len(union) > 0 {
		routesErr = f.retrying(func(ctx context.Context) error {
			var err error
			routes, err = f.routes(ctx, union)
			return err
		})
	}
	var out []pushq.Record
	for i, j := range batch {
		switch {
		case j.msg != nil && j.msg.ConversationId == WorldID:
			out = f.record(out, pushq.TopicBroadcast, pushq.Push{Message: pushMessage(j.msg), OriginConn: j.origin})
		case skip[i]:
		case j.routes != nil:
			out = f.routed(out, j, recipients[i], j.routes)
		case routesErr != nil:
			f.drop(j, "routes unavailable", routesErr)
		default:
			out = f.routed(out, j, recipients[i], routes)
		}
	}
	f.publishAll(out)
}

// publishAll publishes a batch's records in one pipelined round when the bus can
// (Kafka: one SendMessages instead of a produce round trip per record, which held
// pushes to ~2,000 records/s per logic); a record that fails there goes the
// one-at-a-time way, with its retries and the hand-over to task.
func (f *fanout) publishAll(recs []pushq.Record) {
	if len(recs) == 0 {
		return
	}
	bp, ok := f.bus.(batchPublisher)
	if !ok || len(recs) == 1 {
		for _, r := range recs {
			f.publishValue(r.Topic, r.Key, r.Value)
		}
		return
	}
	ctx, cancel := context.WithTimeout(f.base, f.retry)
	start := time.Now()
	errs := bp.PublishMany(ctx, recs)
	cancel()
	for i, r := range recs {
		if errs[i] != nil {
			f.publishValue(r.Topic, r.Key, r.Value)
			continue
		}
		f.published.Inc()
	}
	f.publishSeconds.Observe(sinceSeconds(start))
}

// batchPublisher is a bus that publishes many records in one round (pushq.Kafka,
// pushq.Memory); errs[i] answers recs[i].
type batchPublisher interface {
	PublishMany(ctx context.Context, recs []pushq.Record) (errs []error)
}

// presencePeers looks up the friends and 1:1 peers of every user whose presence
// changed in batch, in one call shared with the other shards' lookups (a connect
// storm announces thousands of users a second; a query each was the push path's
// limit then).
func (f *fanout) presencePeers(batch []pushJob) (map[int64][]int64, error) {
	var users []int64
	for _, j := range batch {
		if j.msg == nil {
			users = append(users, j.presence.UserID)
		}
	}
	if len(users) == 0 {
		return nil, nil
	}
	return f.peers.get(users, f.listPeers)
}

// listPeers is one presence lookup for users, in calls of at most 1,000 (repo's
// limit), each retried as a publish is.
func (f *fanout) listPeers(users []int64) (map[int64][]int64, error) {
	peers := make(map[int64][]int64)
	for chunk := range slices.Chunk(users, maxRepoIDs) {
		err := f.retrying(func(ctx context.Context) error {
			resp, err := f.repo.ListPeersBatch(ctx, &repoapi.ListPeersBatchReq{UserIds: chunk})
			if err == nil {
				maps.Copy(peers, resp.Peers)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return peers, nil
}

// peersLookup merges the presence lookups of the shards into as few repo calls as
// it can, without a timer: a shard that finds a lookup running queues its users,
// and when that lookup ends the first shard queued makes one call for everyone
// queued by then. In a connect storm each shard's batch held ~17 users, and one
// ListPeersBatch per batch cost ~50 µs in the store alone however few users it
// carried, plus two Kitex hops.
type peersLookup struct {
	mu      sync.Mutex
	running bool // a lookup is in flight; its caller hands over to queue[0]
	queue   []*peersWait
}

// peersWait is one shard's lookup. done gets one value: either the answer is in
// peers/err, or lead is set and this shard makes the next call.
type peersWait struct {
	users []int64
	done  chan struct{}
	lead  bool
	peers map[int64][]int64
	err   error
}

// get returns the peers of users (and of other shards' users: the caller reads only
// its own), from a call made by this caller or by the one it waited for.
func (p *peersLookup) get(users []int64, call func([]int64) (map[int64][]int64, error)) (map[int64][]int64, error) {
	w := &peersWait{users: users, done: make(chan struct{}, 1)}
	p.mu.Lock()
	p.queue = append(p.queue, w)
	if p.running {
		p.mu.Unlock()
		<-w.done
		if !w.lead {
			return w.peers, w.err
		}
		p.mu.Lock()
	}
	p.running = true
	batch := p.queue
	p.queue = nil
	p.mu.Unlock()

	var all []int64
	for _, b := range batch {
		all = append(all, b.users...)
	}
	slices.Sort(all)
	peers, err := call(slices.Compact(all))
	for _, b := range batch {
		if b != w {
			b.peers, b.err = peers, err
			b.done <- struct{}{}
		}
	}
	p.mu.Lock()
	if len(p.queue) > 0 {
		p.queue[0].lead = true
		p.queue[0].done <- struct{}{}
	} else {
		p.running = false
	}
	p.mu.Unlock()
	return peers, err
}

// handToTask publishes a large group's message as a fan-out job: too many members to
// resolve here without holding up this shard, so task pages through them (design.md
// §2 step 5).
func (f *fanout) handToTask(j pushJob) {
	job := pushq.FanoutJob{Message: pushMessage(j.msg), OriginConn: j.origin, Resend: j.dup}
	value, err := job.Encode()
	if err != nil {
		f.drop(j, "encode fan-out job", err)
		return
	}
	f.publishValue(pushq.TopicJobs, job.Key(), value)
}

// routes looks up the gateways of users (duplicates allowed), 1,000 per call.
func (f *fanout) routes(ctx context.Context, users []int64) (map[int64][]string, error) {
	slices.Sort(users)
	users = slices.Compact(users)
	out := make(map[int64][]string, len(users))
	for chunk := range slices.Chunk(users, maxRepoIDs) {
		resp, err := f.repo.GetRoutes(ctx, &repoapi.GetRoutesReq{UserIds: chunk})
		if err != nil {
			return nil, err
		}
		for uid, gws := range resp.Routes {
			out[uid] = gws
		}
	}
	return out, nil
}

// routed adds one record per live gateway that holds a recipient.
func (f *fanout) routed(out []pushq.Record, j pushJob, recipients []int64, routes map[int64][]string) []pushq.Record {
	byGateway := map[string][]int64{}
	for _, uid := range recipients {
		if j.dup && uid == j.msg.SenderId {
			continue // see pushJob.dup
		}
		for _, gw := range routes[uid] {
			if f.gateways != nil && !f.gateways.Alive(gw) {
				f.deadRoutes.Inc()
				continue
			}
			byGateway[gw] = append(byGateway[gw], uid)
		}
	}
	for gw, uids := range byGateway {
		topic := pushq.GatewayTopic(gw)
		if topic == "" {
			f.log.Warn("route names an invalid gateway id", "gateway", gw)
			continue
		}
		slices.Sort(uids)
		uids = slices.Compact(uids)
		p := pushq.Push{Recipients: uids}
		if j.msg != nil {
			p.Message, p.OriginConn = pushMessage(j.msg), j.origin
		} else {
			p.Kind, p.Presence = pushq.KindPresence, j.presence
		}
		out = f.record(out, topic, p)
	}
	return out
}

// members lists the members of a conversation (the sender included: their other
// sockets get the message too), or reports large when it has more than largeGroup.
// A 1:1 conversation's members are kept for good, a group's for the group cache's
// ttl; large groups are asked about every time.
func (f *fanout) members(ctx context.Context, convID string) (ids []int64, large bool, err error) {
	single := strings.HasPrefix(convID, singlePrefix)
	group := strings.HasPrefix(convID, groupPrefix)
	if single {
		if ids, ok := f.singles.get(convID); ok {
			return ids, false, nil
		}
	}
	if group {
		if ids, ok := f.groups.get(convID); ok {
			return ids, false, nil
		}
	}
	at, epoch := f.groups.begin()
	resp, err := f.repo.ListMembers(ctx, &repoapi.ListMembersReq{ConversationId: convID, Limit: int32(f.largeGroup + 1)})
	if err != nil {
		return nil, false, err
	}
	if len(resp.Members) > f.largeGroup {
		return nil, true, nil
	}
	ids = make([]int64, len(resp.Members))
	for i, m := range resp.Members {
		ids[i] = m.UserId
	}
	switch {
	case single && len(ids) == 2:
		f.singles.put(convID, ids)
	case group:
		slices.Sort(ids) // repo lists them by user id already; knownMember searches them
		f.groups.put(convID, ids, at, epoch)
	}
	return ids, false, nil
}

// appends counts, per conversation, the appends in flight in this logic from the
// call to repo until their pushes are queued, for pushJob.alone.
type appends struct {
	mu       sync.Mutex
	inflight map[string]int
}

// begin counts an append of the conversations in convs (each once).
func (a *appends) begin(convs []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.inflight == nil {
		a.inflight = make(map[string]int)
	}
	for _, c := range convs {
		a.inflight[c]++
	}
}

// queued marks the jobs of an append that begin counted, whose pushes go next to
// their shards: a job is alone when its append is the only one of its conversation
// in flight. An append that returned but has not queued yet still counts, so of two
// appends of a conversation in one group commit the first to queue lingers and the
// second queues behind it.
func (a *appends) queued(jobs []pushJob) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range jobs {
		if jobs[i].msg != nil {
			jobs[i].alone = a.inflight[jobs[i].msg.ConversationId] == 1
		}
	}
}

// end uncounts an append begin counted, after its pushes were queued.
func (a *appends) end(convs []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range convs {
		if a.inflight[c]--; a.inflight[c] <= 0 {
			delete(a.inflight, c)
		}
	}
}

// knownRecipients returns, for each message of an append batch, its members when
// the 1:1 cache knows them (nil otherwise), and those members once each: at most
// 1,000, what GetRoutes takes, so a batch's later messages may go without.
func (f *fanout) knownRecipients(batch []*repoapi.Message) (known [][]int64, users []int64) {
	known = make([][]int64, len(batch))
	seen := make(map[int64]struct{})
	for k, m := range batch {
		if !strings.HasPrefix(m.ConversationId, singlePrefix) {
			continue
		}
		ids, ok := f.singles.get(m.ConversationId)
		if !ok {
			continue
		}
		fresh := 0
		for _, id := range ids {
			if _, ok := seen[id]; !ok {
				fresh++
			}
		}
		if len(seen)+fresh > maxRepoIDs {
			break
		}
		for _, id := range ids {
			if _, ok := seen[id]; !ok {
				seen[id] = struct{}{}
				users = append(users, id)
			}
		}
		known[k] = ids
	}
	return known, users
}

// maxRepoIDs is how many ids repo takes in one call: users of a GetRoutes or a
// ListPeersBatch, AppendBatch's route_users.
const maxRepoIDs = 1000

// singlePrefix starts every 1:1 conversation id (SingleID), groupPrefix every
// group's (groupConvID).
const (
	singlePrefix = "single_"
	groupPrefix  = "group_"
)

// memberCache holds the two members of 1:1 conversations: fixed by the conversation
// id, so an entry is never stale. Bounded: when full it starts over.
type memberCache struct {
	max int
	mu  sync.RWMutex // guards m
	m   map[string][]int64
}

func (c *memberCache) get(id string) ([]int64, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ids, ok := c.m[id]
	return ids, ok
}

func (c *memberCache) put(id string, ids []int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= c.max {
		c.m = make(map[string][]int64)
	}
	c.m[id] = ids
}

func pushMessage(m *repoapi.Message) pushq.Message {
	return pushq.Message{
		ID: m.Id, ConversationID: m.ConversationId, Seq: m.Seq, SenderID: m.SenderId, SenderName: m.SenderName,
		Type: m.Type, Content: m.Content, ClientMsgID: m.ClientMsgId, CreatedAtMs: m.CreatedAtMs,
	}
}

// record encodes p for topic and adds it to out.
func (f *fanout) record(out []pushq.Record, topic string, p pushq.Push) []pushq.Record {
	value, err := p.Encode()
	if err != nil {
		f.dropped.Inc()
		f.log.Error("push dropped: encode", "err", err)
		return out
	}
	return append(out, pushq.Record{Topic: topic, Key: p.Key(), Value: value})
}

// publishValue publishes with retries, then hands the record to task.
func (f *fanout) publishValue(topic string, key, value []byte) {
	err := f.retrying(func(ctx context.Context) error {
		start := time.Now()
		err := f.bus.Publish(ctx, topic, key, value)
		if err == nil {
			f.publishSeconds.Observe(sinceSeconds(start))
		}
		return err
	})
	if err == nil {
		f.published.Inc()
		return
	}
	f.handOver(topic, key, value, err)
}

// handOver gives a record logic could not publish to task.
func (f *fanout) handOver(topic string, key, value []byte, cause error) {
	ctx, cancel := context.WithTimeout(f.base, 2*time.Second)
	defer cancel()
	_, err := f.task.DeferPush(ctx, &taskapi.DeferPushReq{
		Topic: topic, Key: key, Value: value, DeadlineMs: time.Now().Add(f.deferFor).UnixMilli(),
	})
	if err != nil {
		f.dropped.Inc()
		f.log.Error("push dropped: publish and hand-over to task failed", "topic", topic, "err", errors.Join(cause, err))
		return
	}
	f.deferred.Inc()
	f.log.Warn("push handed to task after publish failures", "topic", topic, "err", cause)
}
