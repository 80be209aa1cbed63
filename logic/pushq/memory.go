package pushq

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
)

const (
	defaultSubscriberBuffer = 1024
	defaultGroupLimit       = 1 << 16
	// memPartitions is how many ordered lanes a Memory group has: the
	// concurrency of one group, and the unit of assignment to members.
	memPartitions = 8
)

// MemoryOption configures NewMemory.
type MemoryOption func(*Memory)

// WithLogger sets where Memory logs failed group handlers (default: nowhere).
func WithLogger(log *slog.Logger) MemoryOption {
	return func(m *Memory) {
		if log != nil {
			m.log = log
		}
	}
}

// WithSubscriberBuffer sets how many records one subscriber may lag behind
// before records are dropped for it (default 1024).
func WithSubscriberBuffer(n int) MemoryOption {
	return func(m *Memory) {
		if n > 0 {
			m.subBuffer = n
		}
	}
}

// WithGroupLimit sets how many unacknowledged records one group may hold
// before Publish waits for room (default 65536).
func WithGroupLimit(n int) MemoryOption {
	return func(m *Memory) {
		if n > 0 {
			m.groupLimit = n
		}
	}
}

// Memory is the in-process bus used when no Kafka brokers are configured.
//
// Subscribers: Publish hands the record to each subscriber's bounded buffer
// without waiting. A subscriber whose buffer is full loses that record (pushes
// are best effort; clients recover by seq) and Dropped counts it.
//
// Groups: a group exists from its first ConsumeGroup call until the Memory is
// closed. It has no log, so it sees records published after it was first
// joined (Kafka's "oldest" start has no equivalent); from then on records wait
// in the group, even while no member runs, like committed offsets. Records are
// hashed by key onto memPartitions ordered lanes; lane i belongs to member
// i mod n in join order. Publish waits (ctx-bounded) while the group holds
// WithGroupLimit unacknowledged records: work is not dropped. A failing
// handler is retried in place with capped backoff; a record is removed only
// after its handler returned nil. A member that leaves mid-retry leaves the
// record at the head of its lane for the next owner. Unlike Kafka, a member
// that loses a lane to a newcomer finishes the record in hand first.
type Memory struct {
	log        *slog.Logger
	subBuffer  int
	groupLimit int
	dropped    atomic.Uint64
	runs       *runs // subscriptions and group members

	mu     sync.RWMutex
	closed bool                 // guarded by mu
	topics map[string]*memTopic // guarded by mu
	groups map[string]*memGroup // guarded by mu
}

type memTopic struct {
	subs   map[*memSub]struct{} // guarded by Memory.mu
	groups []*memGroup          // append-only; guarded by Memory.mu
	// backlog holds records of the jobs topic published while no group consumed
	// it, for the first group that joins — Kafka's "a new group starts at the oldest offset", so
	// a job published while task is still starting is not lost. Bounded by the
	// group limit (oldest dropped first). Guarded by Memory.mu (written under the
	// write lock only).
	backlog []memRecord
}

// memSub is one subscriber's buffer. Publish sends under Memory.mu (read);
// the channel is never closed, the subscriber goroutine stops on its ctx.
type memSub struct{ ch chan []byte }

type memRecord struct {
	topic      string
	key, value []byte
	offset     int64 // position in its lane, for logs
}

// NewMemory returns an empty in-process bus. It starts no goroutines.
func NewMemory(opts ...MemoryOption) *Memory {
	m := &Memory{
		log:        discardLogger(),
		subBuffer:  defaultSubscriberBuffer,
		groupLimit: defaultGroupLimit,
		runs:       newRuns(),
		topics:     make(map[string]*memTopic),
		groups:     make(map[string]*memGroup),
	}
	for _, o := range opts {
		o(m)
	}
	return m
}

// Dropped is how many records were dropped for subscribers whose buffer was
// full, since NewMemory.
func (m *Memory) Dropped() uint64 { return m.dropped.Load() }

// PublishMany publishes each record in order; errs[i] answers recs[i].
func (m *Memory) PublishMany(ctx context.Context, recs []Record) []error {
	errs := make([]error, len(recs))
	for i, r := range recs {
		errs[i] = m.Publish(ctx, r.Topic, r.Key, r.Value)
	}
	return errs
}

// Publish enqueues the record for every current subscriber and group of
// topic and returns. It waits only for room in a full group.
func (m *Memory) Publish(ctx context.Context, topic string, key, value []byte) error {
	if err := validateTopic(topic); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("publish to %s: %w", topic, context.Cause(ctx))
	}
	rec := memRecord{topic: topic, key: bytes.Clone(key), value: bytes.Clone(value)}

	m.mu.RLock()
	if m.closed {
		m.mu.RUnlock()
		return ErrClosed
	}
	var groups []*memGroup
	if t := m.topics[topic]; t != nil {
		for s := range t.subs {
			select {
			case s.ch <- rec.value:
			default:
				m.dropped.Add(1)
			}
		}
		groups = t.groups // append-only: the prefix we read stays valid
	}
	m.mu.RUnlock()
	if len(groups) == 0 && m.keepForGroups(topic, rec) {
		return nil
	}

	for _, g := range groups {
		if err := g.enqueue(ctx, m.runs.closing, rec); err != nil {
			return fmt.Errorf("publish to %s: group %s: %w", topic, g.name, err)
		}
	}
	return nil
}

// Subscribe registers a subscriber before it returns, so every Publish that
// happens after it is delivered (unless the buffer overflows).
func (m *Memory) Subscribe(ctx context.Context, topic string, h func(value []byte)) (*Subscription, error) {
	if err := validateTopic(topic); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("subscribe to %s: nil handler", topic)
	}
	runCtx, release, err := m.runs.start(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(runCtx)
	s := &memSub{ch: make(chan []byte, m.subBuffer)}
	m.mu.Lock()
	t := m.topicLocked(topic)
	t.subs[s] = struct{}{}
	m.mu.Unlock()

	sub := newSubscription(cancel)
	go func() {
		defer func() {
			m.mu.Lock()
			delete(t.subs, s)
			m.mu.Unlock()
			close(sub.done) // before release, so that a returned Close implies Done
			release()
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case v := <-s.ch:
				if ctx.Err() != nil {
					return
				}
				h(v)
			}
		}
	}()
	return sub, nil
}

// ConsumeGroup joins group (creating it and binding it to topics if needed),
// runs one worker per lane, and returns nil once ctx is done or the Memory is
// closed and every handler call has returned.
func (m *Memory) ConsumeGroup(ctx context.Context, group string, topics []string, h func(ctx context.Context, key, value []byte) error) error {
	if err := validateGroupArgs(group, topics, h); err != nil {
		return err
	}
	ctx, release, err := m.runs.start(ctx)
	if err != nil {
		return err
	}
	defer release()

	g := m.joinGroup(group, topics)
	me := g.join()
	defer g.leave(me)

	var wg sync.WaitGroup
	for p := range memPartitions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.work(ctx, m.log, me, p, h)
		}()
	}
	wg.Wait()
	return nil
}

// EnsureTopics only validates: in-process topics need no creation.
func (m *Memory) EnsureTopics(_ context.Context, _ int, topics ...string) error {
	if err := validateTopics(topics); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	return nil
}

// Close stops every subscription and group member and waits for them.
// Records still queued are discarded. Safe to call more than once.
func (m *Memory) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.runs.close()
	return nil
}

func (m *Memory) topicLocked(name string) *memTopic {
	t := m.topics[name]
	if t == nil {
		t = &memTopic{subs: make(map[*memSub]struct{})}
		m.topics[name] = t
	}
	return t
}

// keepForGroups puts rec in topic's backlog when the topic still has no group,
// and reports whether it did (false: a group joined meanwhile; publish to it).
func (m *Memory) keepForGroups(topic string, rec memRecord) bool {
	if topic != TopicJobs {
		// Only the jobs topic is read by a group; other topics are only tailed by
		// subscribers, and keeping their records would grow without bound.
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.topicLocked(topic)
	if len(t.groups) > 0 {
		return false
	}
	if len(t.backlog) >= m.groupLimit {
		t.backlog = t.backlog[1:]
		m.dropped.Add(1)
	}
	t.backlog = append(t.backlog, rec)
	return true
}

func (m *Memory) joinGroup(name string, topics []string) *memGroup {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.groups[name]
	if g == nil {
		g = newMemGroup(name, m.groupLimit)
		m.groups[name] = g
	}
	for _, topic := range topics {
		if g.topics[topic] {
			continue
		}
		g.topics[topic] = true
		t := m.topicLocked(topic)
		t.groups = append(t.groups, g)
		// Hand the backlog to the first group, in order, before any Publish can
		// reach the group directly (they need Memory.mu, held here). Never wait
		// for room while holding Memory.mu: a record that does not fit is dropped.
		full, cancel := context.WithCancel(context.Background())
		cancel()
		for _, rec := range t.backlog {
			if g.enqueue(full, m.runs.closing, rec) != nil {
				m.dropped.Add(1)
			}
		}
		t.backlog = nil
	}
	return g
}

// groupMembers is for tests: how many members group has right now.
func (m *Memory) groupMembers(name string) int {
	m.mu.RLock()
	g := m.groups[name]
	m.mu.RUnlock()
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.members)
}

// memGroup is a group's queue: memPartitions ordered lanes.
//
// Lock order: Memory.mu before memGroup.mu (joinGroup); Publish releases
// Memory.mu before it takes memGroup.mu.
type memGroup struct {
	name   string
	limit  int
	topics map[string]bool // guarded by Memory.mu

	mu      sync.Mutex
	lanes   [memPartitions]memLane // guarded by mu
	pending int                    // records in all lanes; guarded by mu
	members []uint64               // member ids in join order; guarded by mu
	lastID  uint64                 // guarded by mu
	rr      uint32                 // lane for the next unkeyed record; guarded by mu
	room    chan struct{}          // closed and replaced when pending drops; guarded by mu
}

type memLane struct {
	q       []memRecord   // head is the next record to handle
	next    int64         // offset of the next record appended
	busy    bool          // a worker is handling q[0]
	changed chan struct{} // closed and replaced on any change workers wait for
}

func newMemGroup(name string, limit int) *memGroup {
	g := &memGroup{name: name, limit: limit, topics: make(map[string]bool), room: make(chan struct{})}
	for i := range g.lanes {
		g.lanes[i].changed = make(chan struct{})
	}
	return g
}

func (g *memGroup) enqueue(ctx context.Context, closing <-chan struct{}, rec memRecord) error {
	g.mu.Lock()
	for g.pending >= g.limit {
		room := g.room
		g.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-closing:
			return ErrClosed
		}
		g.mu.Lock()
	}
	var i int
	if len(rec.key) == 0 {
		i = int(g.rr % memPartitions)
		g.rr++
	} else {
		h := fnv.New32a()
		_, _ = h.Write(rec.key)
		i = int(h.Sum32() % memPartitions)
	}
	l := &g.lanes[i]
	rec.offset = l.next
	l.next++
	l.q = append(l.q, rec)
	g.pending++
	g.signalLocked(i)
	g.mu.Unlock()
	return nil
}

func (g *memGroup) join() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lastID++
	g.members = append(g.members, g.lastID)
	g.signalAllLocked()
	return g.lastID
}

func (g *memGroup) leave(id uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.members = slices.DeleteFunc(g.members, func(m uint64) bool { return m == id })
	g.signalAllLocked()
}

func (g *memGroup) ownerLocked(lane int) uint64 {
	if len(g.members) == 0 {
		return 0
	}
	return g.members[lane%len(g.members)]
}

func (g *memGroup) signalLocked(lane int) {
	l := &g.lanes[lane]
	close(l.changed)
	l.changed = make(chan struct{})
}

func (g *memGroup) signalAllLocked() {
	for i := range g.lanes {
		g.signalLocked(i)
	}
}

// work handles lane for member me until ctx is done. It takes the head of
// the lane only while me owns it and nobody else is handling it, so a lane is
// processed by one goroutine at a time, in order.
func (g *memGroup) work(ctx context.Context, log *slog.Logger, me uint64, lane int, h func(context.Context, []byte, []byte) error) {
	l := &g.lanes[lane]
	for {
		g.mu.Lock()
		for g.ownerLocked(lane) != me || len(l.q) == 0 || l.busy {
			changed := l.changed
			g.mu.Unlock()
			select {
			case <-changed:
			case <-ctx.Done():
				return
			}
			g.mu.Lock()
		}
		rec := l.q[0]
		l.busy = true
		g.mu.Unlock()

		ok := handleWithRetry(ctx, log, h, rec.key, rec.value,
			recordRef{group: g.name, topic: rec.topic, partition: int32(lane), offset: rec.offset})

		g.mu.Lock()
		l.busy = false
		if ok {
			l.q[0] = memRecord{}
			l.q = l.q[1:]
			if len(l.q) == 0 {
				l.q = nil // let the drained backing array go
			}
			g.pending--
			close(g.room)
			g.room = make(chan struct{})
		}
		g.signalLocked(lane)
		g.mu.Unlock()
		if !ok {
			return
		}
	}
}
