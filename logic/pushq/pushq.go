// Package pushq owns the push/fan-out record contract (topics, Push) and the bus
// that carries it: Memory in process, Kafka between processes. Both satisfy Bus
// and pass the same contract test (bus_test.go).
//
// Two delivery modes share one bus:
//   - Subscribe is a best-effort "tail" for gateways: every subscriber sees every
//     record published after Subscribe returned, nothing older, nothing is
//     committed. A missed push is recovered by the client through seq + pull.
//   - ConsumeGroup is an at-least-once work queue for task: each record goes to
//     one member of the group and is acknowledged only after the handler
//     returned nil; a failing handler is retried in place.
//
// Publishers key records so that records which must stay ordered share a key
// (pushes: the conversation id, see Push.Key). Records with one key land in one
// partition and are seen in publish order by every subscriber and group.
package pushq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Topic names. The producer side (logic, task) owns them; gateways only read.
const (
	// TopicBroadcast carries world-room messages: every gateway delivers each
	// record to all of its sockets.
	TopicBroadcast = "gochat.push.broadcast"
	// TopicJobs carries work for task (large-group fan-out and retries).
	TopicJobs = "gochat.jobs"

	gatewayTopicPrefix = "gochat.push.gw."
	maxGatewayIDLen    = 100
	maxTopicLen        = 249 // Kafka's limit
)

var (
	// ErrClosed is returned by every Bus method called after Close.
	ErrClosed = errors.New("pushq: bus closed")
	// ErrInvalidTopic is returned for a topic name Kafka would reject
	// (empty, longer than 249, characters outside [a-zA-Z0-9._-], "." or "..").
	ErrInvalidTopic = errors.New("pushq: invalid topic name")
	// ErrInvalidGatewayID is returned by ValidateGatewayID.
	ErrInvalidGatewayID = errors.New("pushq: invalid gateway id")
	// ErrMalformed is returned by DecodePush and Encode for a record that does
	// not satisfy the Push contract.
	ErrMalformed = errors.New("pushq: malformed push")
)

// Bus is the seam between the producers of pushes/jobs and their consumers.
// It is implemented by *Memory and *Kafka. Consumers should declare the
// narrower interface they need (gateway: Subscribe; logic: Publish; task:
// ConsumeGroup); Bus exists for the composition root and the contract test.
type Bus interface {
	// Publish returns once the record is stored (Kafka: acked by all in-sync
	// replicas) or with ctx's error. Records with the same key are kept in
	// order. The bus copies key and value; the caller may reuse them as soon
	// as Publish returns.
	Publish(ctx context.Context, topic string, key, value []byte) error
	// Subscribe delivers every record published to topic after Subscribe
	// returned to h until ctx is done or the Subscription is closed. See
	// Subscription for the concurrency contract of h.
	Subscribe(ctx context.Context, topic string, h func(value []byte)) (*Subscription, error)
	// ConsumeGroup joins group and hands each record of topics to exactly one
	// member (at least once) until ctx is done, then returns nil.
	ConsumeGroup(ctx context.Context, group string, topics []string, h func(ctx context.Context, key, value []byte) error) error
	// EnsureTopics creates missing topics; partitions <= 0 means the bus default.
	EnsureTopics(ctx context.Context, partitions int, topics ...string) error
	// Close stops every subscription and group member of this bus, waits for
	// their goroutines, and releases connections.
	Close() error
}

var (
	_ Bus = (*Memory)(nil)
	_ Bus = (*Kafka)(nil)
)

// GatewayTopic is the push topic a gateway consumes: "gochat.push.gw." + id.
// It returns "" for an id that ValidateGatewayID rejects (ids also arrive from
// the route table, so this must not panic); every Bus method rejects "".
func GatewayTopic(gatewayID string) string {
	if ValidateGatewayID(gatewayID) != nil {
		return ""
	}
	return gatewayTopicPrefix + gatewayID
}

// ValidateGatewayID reports whether id can name a gateway: 1–100 characters
// of [a-zA-Z0-9._-]. Gateways validate their own id at startup with it.
func ValidateGatewayID(id string) error {
	if len(id) == 0 || len(id) > maxGatewayIDLen || !topicChars(id) {
		return fmt.Errorf("%w: %q (want 1-%d of [a-zA-Z0-9._-])", ErrInvalidGatewayID, id, maxGatewayIDLen)
	}
	return nil
}

func validateTopic(topic string) error {
	if len(topic) == 0 || len(topic) > maxTopicLen || topic == "." || topic == ".." || !topicChars(topic) {
		return fmt.Errorf("%w: %q", ErrInvalidTopic, topic)
	}
	return nil
}

func validateTopics(topics []string) error {
	if len(topics) == 0 {
		return fmt.Errorf("%w: no topics", ErrInvalidTopic)
	}
	for _, t := range topics {
		if err := validateTopic(t); err != nil {
			return err
		}
	}
	return nil
}

func validateGroupArgs(group string, topics []string, h func(context.Context, []byte, []byte) error) error {
	if group == "" || len(group) > maxTopicLen {
		return fmt.Errorf("pushq: invalid group name %q", group)
	}
	if h == nil {
		return errors.New("pushq: nil group handler")
	}
	return validateTopics(topics)
}

func topicChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Subscription is one running Subscribe.
//
// h is called from one goroutine per partition (Memory: one goroutine per
// subscription), so h must be safe for concurrent use on Kafka; calls for one
// partition, and hence for one key, are sequential and in publish order. The
// value passed to h is shared with the bus and with other subscribers: it must
// not be modified, and must not be retained after h returns unless copied.
// A slow h delays its partition only (Kafka) or loses records once its buffer
// is full (Memory, see Memory.Dropped); it never blocks publishers.
type Subscription struct {
	cancel context.CancelFunc
	done   chan struct{} // closed after every goroutine of the subscription returned

	mu  sync.Mutex
	err error // first failure that ended the subscription; guarded by mu
}

func newSubscription(cancel context.CancelFunc) *Subscription {
	return &Subscription{cancel: cancel, done: make(chan struct{})}
}

// Close stops the subscription and waits until h is no longer running and
// every goroutine has returned. It is safe to call more than once and
// concurrently with the subscription ending by itself.
func (s *Subscription) Close() error {
	s.cancel()
	<-s.done
	return nil
}

// Done is closed once the subscription has stopped: after Close, after the
// Subscribe ctx was done, after the bus was closed, or after a failure (Err).
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err returns why the subscription ended by itself (for example a Kafka
// partition consumer that gave up), or nil if it is running or was stopped by
// Close, its ctx, or the bus. A gateway that sees Done with a non-nil Err
// should subscribe again.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// fail records err (first one wins) and stops the subscription.
func (s *Subscription) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	s.cancel()
}

// runs tracks everything a bus must wait for before it releases its
// resources: subscriptions, group members, in-flight publishes and dials.
// Close cancels them all and waits.
type runs struct {
	wg      sync.WaitGroup // one per started run; Add only while !closed (under mu)
	closing chan struct{}  // closed by the first close, for waiters that hold no run ctx

	mu      sync.Mutex
	closed  bool                          // guarded by mu
	next    uint64                        // guarded by mu
	cancels map[uint64]context.CancelFunc // guarded by mu
}

func newRuns() *runs {
	return &runs{closing: make(chan struct{}), cancels: make(map[uint64]context.CancelFunc)}
}

// start registers a run. The returned ctx is cancelled when the bus closes;
// done must be called exactly once when the run has finished.
func (r *runs) start(parent context.Context) (context.Context, func(), error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, nil, ErrClosed
	}
	ctx, cancel := context.WithCancel(parent)
	id := r.next
	r.next++
	r.cancels[id] = cancel
	r.wg.Add(1)
	return ctx, func() {
		cancel()
		r.mu.Lock()
		delete(r.cancels, id)
		r.mu.Unlock()
		r.wg.Done()
	}, nil
}

// close cancels every run and waits for all of them. It reports whether this
// call was the one that closed (later calls only wait).
func (r *runs) close() bool {
	r.mu.Lock()
	first := !r.closed
	if first {
		r.closed = true
		close(r.closing)
	}
	for _, cancel := range r.cancels {
		cancel()
	}
	r.mu.Unlock()
	r.wg.Wait()
	return first
}

// Retry of a failing group handler. In sarama a returning ConsumeClaim ends
// the whole session (style.md §4.10), so both buses retry in place.
const (
	retryMin = 50 * time.Millisecond
	retryMax = 5 * time.Second
)

// recordRef says where a record came from, for the retry log line only.
type recordRef struct {
	group     string
	topic     string
	partition int32
	offset    int64
}

// handleWithRetry calls h until it returns nil (true) or ctx is done (false).
// A record for which it returned false must not be acknowledged: it is
// redelivered to whichever member owns its partition next.
func handleWithRetry(ctx context.Context, log *slog.Logger, h func(context.Context, []byte, []byte) error, key, value []byte, ref recordRef) bool {
	backoff := retryMin
	for attempt := 1; ; attempt++ {
		if ctx.Err() != nil {
			return false
		}
		err := h(ctx, key, value)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false // shutting down or rebalancing; the next owner retries
		}
		log.Warn("group handler failed, retrying",
			"group", ref.group, "topic", ref.topic, "partition", ref.partition, "offset", ref.offset,
			"attempt", attempt, "backoff", backoff, "err", err)
		if !sleepCtx(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, retryMax)
	}
}

// sleepCtx waits d or until ctx is done; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Record is one message for a bus's PublishMany.
type Record struct {
	Topic      string
	Key, Value []byte
}
