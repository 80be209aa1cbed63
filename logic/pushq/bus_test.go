package pushq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
)

// One contract, two buses (etcd's one-body/two-runners idea). Every case
// gets a fresh bus (and, for Kafka, a fresh in-process kfake broker).

type impl struct {
	name   string
	newBus func(t *testing.T) Bus
	// waitMembers blocks until group has n members that own partitions, so
	// that what is published next is not subject to a rebalance.
	waitMembers func(t *testing.T, b Bus, group string, n int)
}

var impls = []impl{
	{name: "memory", newBus: newMemoryBus, waitMembers: waitMemoryMembers},
	{name: "kafka", newBus: newKafkaBus, waitMembers: waitKafkaMembers},
}

// contract runs body once per implementation, in parallel.
func contract(t *testing.T, body func(t *testing.T, im impl, b Bus)) {
	t.Parallel()
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			t.Parallel()
			body(t, im, im.newBus(t))
		})
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newMemoryBus(t *testing.T) Bus {
	m := NewMemory(WithLogger(testLogger(t)))
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func waitMemoryMembers(t *testing.T, b Bus, group string, n int) {
	t.Helper()
	m := b.(*Memory)
	eventually(t, 5*time.Second, func() (bool, string) {
		got := m.groupMembers(group)
		return got == n, fmt.Sprintf("%d members, want %d", got, n)
	})
}

// testKafkaConfig points at c with group timings that keep tests fast:
// kfake's minimum session timeout is 6 s, so rebalances are driven by a short
// heartbeat instead.
func testKafkaConfig(brokers []string) KafkaConfig {
	cfg := DefaultKafka()
	cfg.Brokers = brokers
	cfg.ClientID = "pushq-test"
	cfg.SessionTimeout = 6 * time.Second
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.RebalanceTimeout = 5 * time.Second
	return cfg
}

func newKafkaCluster(t *testing.T) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(6, TopicBroadcast, TopicJobs))
	if err != nil {
		t.Fatalf("kfake.NewCluster: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func newKafkaBus(t *testing.T) Bus {
	c := newKafkaCluster(t)
	k, err := NewKafka(testKafkaConfig(c.ListenAddrs()), testLogger(t))
	if err != nil {
		t.Fatalf("NewKafka: %v", err)
	}
	t.Cleanup(func() {
		if err := k.Close(); err != nil {
			t.Errorf("Kafka.Close: %v", err)
		}
	})
	return k
}

func waitKafkaMembers(t *testing.T, b Bus, group string, n int) {
	t.Helper()
	k := b.(*Kafka)
	admin, err := sarama.NewClusterAdmin(k.cfg.Brokers, k.cfg.saramaConfig())
	if err != nil {
		t.Fatalf("NewClusterAdmin: %v", err)
	}
	defer admin.Close()
	eventually(t, 20*time.Second, func() (bool, string) {
		ds, err := admin.DescribeConsumerGroups([]string{group})
		if err != nil || len(ds) != 1 {
			return false, fmt.Sprintf("describe: %v", err)
		}
		d := ds[0]
		if d.State != "Stable" || len(d.Members) != n {
			return false, fmt.Sprintf("state %q with %d members, want Stable with %d", d.State, len(d.Members), n)
		}
		for id, m := range d.Members {
			a, err := m.GetMemberAssignment()
			if err != nil || a == nil || len(a.Topics) == 0 {
				return false, fmt.Sprintf("member %s has no assignment (%v)", id, err)
			}
		}
		return true, ""
	})
}

// eventually polls cond until it holds or d has passed; the string explains
// the last failed check.
func eventually(t testing.TB, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %s", d, why)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitDone waits for ch with a deadline.
func waitDone[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("%s: not done within %s", what, d)
		panic("unreachable")
	}
}

// testTopic is a topic (or group) name unique to the test.
func testTopic(t testing.TB, suffix string) string {
	name := strings.Map(func(r rune) rune {
		if topicChars(string(r)) {
			return r
		}
		return '.'
	}, t.Name())
	return name + "." + suffix
}

func mustEnsure(t testing.TB, b Bus, topics ...string) {
	t.Helper()
	if err := b.EnsureTopics(t.Context(), 6, topics...); err != nil {
		t.Fatalf("EnsureTopics(%v): %v", topics, err)
	}
}

func mustPublish(t testing.TB, b Bus, topic, key, value string) {
	t.Helper()
	if err := b.Publish(t.Context(), topic, []byte(key), []byte(value)); err != nil {
		t.Fatalf("Publish(%s, %s, %s): %v", topic, key, value, err)
	}
}

func mustSubscribe(t testing.TB, b Bus, topic string, h func([]byte)) *Subscription {
	t.Helper()
	s, err := b.Subscribe(t.Context(), topic, h)
	if err != nil {
		t.Fatalf("Subscribe(%s): %v", topic, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// collector records values handed to a subscription handler, which may be
// called from several goroutines.
type collector struct {
	mu  sync.Mutex
	got []string
}

func (c *collector) add(v []byte) {
	c.mu.Lock()
	c.got = append(c.got, string(v))
	c.mu.Unlock()
}

func (c *collector) snapshot() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

func (c *collector) waitLen(t testing.TB, n int) []string {
	t.Helper()
	eventually(t, 15*time.Second, func() (bool, string) {
		got := c.snapshot()
		return len(got) >= n, fmt.Sprintf("got %d records, want %d", len(got), n)
	})
	return c.snapshot()
}

// value "k<key>:<i>" for record i of key k<key>.
func seqValue(key, i int) string { return fmt.Sprintf("k%d:%d", key, i) }

// checkPerKey asserts got holds seqValue(k, 0..perKey-1) for every key
// exactly once, each key in order.
func checkPerKey(t testing.TB, got []string, keys, perKey int) {
	t.Helper()
	next := make(map[string]int)
	for _, v := range got {
		key, n, ok := strings.Cut(v, ":")
		i, err := strconv.Atoi(n)
		if !ok || err != nil {
			t.Fatalf("unexpected value %q", v)
		}
		if i != next[key] {
			t.Fatalf("key %s: got record %d, want %d (order or duplicate); all: %v", key, i, next[key], got)
		}
		next[key]++
	}
	if len(next) != keys {
		t.Fatalf("got %d keys, want %d", len(next), keys)
	}
	for key, n := range next {
		if n != perKey {
			t.Fatalf("key %s: got %d records, want %d", key, n, perKey)
		}
	}
}

func TestContractSubscribersGetEveryRecordInKeyOrder(t *testing.T) {
	contract(t, func(t *testing.T, _ impl, b Bus) {
		topic := testTopic(t, "push")
		mustEnsure(t, b, topic)
		var c1, c2 collector
		mustSubscribe(t, b, topic, c1.add)
		mustSubscribe(t, b, topic, c2.add)

		const keys, perKey = 6, 20
		for i := range perKey {
			for k := range keys {
				mustPublish(t, b, topic, fmt.Sprintf("k%d", k), seqValue(k, i))
			}
		}
		checkPerKey(t, c1.waitLen(t, keys*perKey), keys, perKey)
		checkPerKey(t, c2.waitLen(t, keys*perKey), keys, perKey)
	})
}

func TestContractSubscribeIsATail(t *testing.T) {
	contract(t, func(t *testing.T, _ impl, b Bus) {
		topic := testTopic(t, "push")
		mustEnsure(t, b, topic)
		mustPublish(t, b, topic, "k", "before")
		var c collector
		mustSubscribe(t, b, topic, c.add)
		mustPublish(t, b, topic, "k", "after")
		// Same key, so "before" would arrive first if it were delivered.
		if got := c.waitLen(t, 1); got[0] != "after" {
			t.Fatalf("first record = %q, want %q (records published before Subscribe must not be delivered)", got[0], "after")
		}
	})
}

func TestContractConsumeGroupSharesWorkAndRetries(t *testing.T) {
	contract(t, func(t *testing.T, im impl, b Bus) {
		topic := testTopic(t, "jobs")
		group := testTopic(t, "task")
		mustEnsure(t, b, topic)

		const keys, perKey = 10, 10
		const failing, failures = "k3:4", 2
		type delivery struct {
			member int
			value  string
		}
		var (
			mu        sync.Mutex
			successes []delivery         // in handling order
			attempts  = map[string]int{} // value → handler calls
		)
		handler := func(member int) func(context.Context, []byte, []byte) error {
			return func(_ context.Context, key, value []byte) error {
				v := string(value)
				if !strings.HasPrefix(v, string(key)+":") {
					return fmt.Errorf("value %q under key %q", v, key) // never expected
				}
				mu.Lock()
				defer mu.Unlock()
				attempts[v]++
				if v == failing && attempts[v] <= failures {
					return errors.New("transient failure")
				}
				successes = append(successes, delivery{member, v})
				return nil
			}
		}
		snapshot := func() ([]delivery, map[string]int) {
			mu.Lock()
			defer mu.Unlock()
			a := make(map[string]int, len(attempts))
			for k, v := range attempts {
				a[k] = v
			}
			return slices.Clone(successes), a
		}
		// startMember runs a member; stop cancels it and returns what
		// ConsumeGroup returned.
		startMember := func(member int) (stop func() error) {
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- b.ConsumeGroup(ctx, group, []string{topic}, handler(member)) }()
			var once sync.Once
			var err error
			stop = func() error {
				once.Do(func() {
					cancel()
					err = waitDone(t, done, 15*time.Second, "ConsumeGroup after cancel")
				})
				return err
			}
			t.Cleanup(func() { _ = stop() })
			return stop
		}

		stop1 := startMember(1)
		stop2 := startMember(2)
		im.waitMembers(t, b, group, 2)

		for i := range perKey {
			for k := range keys {
				mustPublish(t, b, topic, fmt.Sprintf("k%d", k), seqValue(k, i))
			}
		}
		eventually(t, 20*time.Second, func() (bool, string) {
			s, _ := snapshot()
			return len(s) >= keys*perKey, fmt.Sprintf("%d of %d handled", len(s), keys*perKey)
		})
		got, att := snapshot()
		values := make([]string, len(got))
		byMember := map[int]int{}
		for i, d := range got {
			values[i] = d.value
			byMember[d.member]++
		}
		checkPerKey(t, values, keys, perKey) // exactly once each, per-key order kept across the retry
		if att[failing] != failures+1 {
			t.Errorf("%s handled %d times, want %d (retry until success, then stop)", failing, att[failing], failures+1)
		}
		if byMember[1] == 0 || byMember[2] == 0 {
			t.Errorf("work per member = %v, want both members to get records", byMember)
		}

		for i, stop := range []func() error{stop1, stop2} {
			if err := stop(); err != nil {
				t.Errorf("member %d: ConsumeGroup = %v, want nil on shutdown", i+1, err)
			}
		}

		// The group keeps its position while no member runs.
		mustPublish(t, b, topic, "k0", "k0:late")
		startMember(3)
		eventually(t, 20*time.Second, func() (bool, string) {
			s, _ := snapshot()
			for _, d := range s[len(got):] {
				if d.value == "k0:late" && d.member == 3 {
					return true, ""
				}
			}
			return false, "record published while the group had no member was not delivered to the next member"
		})
	})
}

func TestContractSubscriptionCloseWaitsAndStops(t *testing.T) {
	contract(t, func(t *testing.T, _ impl, b Bus) {
		topic := testTopic(t, "push")
		mustEnsure(t, b, topic)

		var calls, active atomic.Int32
		entered := make(chan struct{}, 1)
		release := make(chan struct{})
		var releaseOnce sync.Once
		unblock := func() { releaseOnce.Do(func() { close(release) }) }
		t.Cleanup(unblock) // a failing check must not leave h blocked for the bus Close
		s1 := mustSubscribe(t, b, topic, func([]byte) {
			calls.Add(1)
			active.Add(1)
			defer active.Add(-1)
			select {
			case entered <- struct{}{}:
			default:
			}
			<-release
		})
		var c2 collector
		mustSubscribe(t, b, topic, c2.add)

		mustPublish(t, b, topic, "k", "a")
		waitDone(t, entered, 15*time.Second, "first handler call")

		closed := make(chan int32, 1)
		go func() {
			_ = s1.Close()
			closed <- active.Load()
		}()
		select {
		case n := <-closed:
			t.Fatalf("Close returned while a handler call was running (active=%d)", n)
		case <-time.After(100 * time.Millisecond): // a wrong Close returns at once
		}
		unblock()
		if n := waitDone(t, closed, 15*time.Second, "Subscription.Close"); n != 0 {
			t.Fatalf("Close returned with %d handler calls running", n)
		}
		waitDone(t, s1.Done(), time.Second, "Done after Close")
		if err := s1.Err(); err != nil {
			t.Errorf("Err after Close = %v, want nil", err)
		}

		// The other subscriber still works and the closed one gets nothing.
		mustPublish(t, b, topic, "k", "b")
		if got := c2.waitLen(t, 2); !slices.Equal(got, []string{"a", "b"}) {
			t.Errorf("open subscriber got %v, want [a b]", got)
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("closed subscriber's handler ran %d times, want 1", n)
		}

		// A subscription ends with its ctx.
		ctx, cancel := context.WithCancel(t.Context())
		s3, err := b.Subscribe(ctx, topic, func([]byte) {})
		if err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
		cancel()
		waitDone(t, s3.Done(), 15*time.Second, "subscription after ctx cancel")
		if err := s3.Err(); err != nil {
			t.Errorf("Err after ctx cancel = %v, want nil", err)
		}
	})
}

func TestContractBusCloseStopsEverything(t *testing.T) {
	contract(t, func(t *testing.T, im impl, b Bus) {
		topic := testTopic(t, "jobs")
		group := testTopic(t, "task")
		mustEnsure(t, b, topic)

		sub, err := b.Subscribe(t.Context(), topic, func([]byte) {})
		if err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
		done := make(chan error, 1)
		go func() {
			done <- b.ConsumeGroup(t.Context(), group, []string{topic}, func(context.Context, []byte, []byte) error { return nil })
		}()
		im.waitMembers(t, b, group, 1)

		if err := b.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		// Close waited for the group member's work; ConsumeGroup returns right
		// after (its last deferred call is what Close waits for), and the goroutine
		// above needs a moment to pass that on.
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ConsumeGroup after Close = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("ConsumeGroup still running 5 s after Close returned")
		}
		select {
		case <-sub.Done():
		default:
			t.Fatal("subscription still running after Close returned")
		}
		if err := sub.Err(); err != nil {
			t.Errorf("subscription Err after bus Close = %v, want nil", err)
		}

		ctx := t.Context()
		nop := func(context.Context, []byte, []byte) error { return nil }
		if err := b.Publish(ctx, topic, nil, []byte("x")); !errors.Is(err, ErrClosed) {
			t.Errorf("Publish after Close = %v, want ErrClosed", err)
		}
		if _, err := b.Subscribe(ctx, topic, func([]byte) {}); !errors.Is(err, ErrClosed) {
			t.Errorf("Subscribe after Close = %v, want ErrClosed", err)
		}
		if err := b.ConsumeGroup(ctx, group, []string{topic}, nop); !errors.Is(err, ErrClosed) {
			t.Errorf("ConsumeGroup after Close = %v, want ErrClosed", err)
		}
		if err := b.EnsureTopics(ctx, 1, topic); !errors.Is(err, ErrClosed) {
			t.Errorf("EnsureTopics after Close = %v, want ErrClosed", err)
		}
		if err := b.Close(); err != nil {
			t.Errorf("second Close = %v, want nil", err)
		}
	})
}

func TestContractRejectsBadArguments(t *testing.T) {
	contract(t, func(t *testing.T, _ impl, b Bus) {
		ctx := t.Context()
		nop := func(context.Context, []byte, []byte) error { return nil }
		tests := []struct {
			name string
			call func() error
		}{
			{"publish empty topic", func() error { return b.Publish(ctx, "", nil, nil) }},
			{"publish bad char", func() error { return b.Publish(ctx, "a/b", nil, nil) }},
			{"publish dotdot", func() error { return b.Publish(ctx, "..", nil, nil) }},
			{"publish invalid gateway", func() error { return b.Publish(ctx, GatewayTopic("bad id"), nil, nil) }},
			{"subscribe bad topic", func() error { _, err := b.Subscribe(ctx, "a b", func([]byte) {}); return err }},
			{"subscribe nil handler", func() error { _, err := b.Subscribe(ctx, "ok", nil); return err }},
			{"group empty name", func() error { return b.ConsumeGroup(ctx, "", []string{"ok"}, nop) }},
			{"group no topics", func() error { return b.ConsumeGroup(ctx, "g", nil, nop) }},
			{"group bad topic", func() error { return b.ConsumeGroup(ctx, "g", []string{"ok", "no!"}, nop) }},
			{"group nil handler", func() error { return b.ConsumeGroup(ctx, "g", []string{"ok"}, nil) }},
			{"ensure bad topic", func() error { return b.EnsureTopics(ctx, 1, "x", "") }},
		}
		for _, tt := range tests {
			if err := tt.call(); err == nil {
				t.Errorf("%s: err = nil, want an error", tt.name)
			}
		}
	})
}

// PublishMany delivers every record of a batch, each key in order, and answers
// for each record: a bad topic fails only its own.
func TestContractPublishManyKeepsKeyOrder(t *testing.T) {
	contract(t, func(t *testing.T, _ impl, b Bus) {
		bp, ok := b.(interface {
			PublishMany(ctx context.Context, recs []Record) []error
		})
		if !ok {
			t.Fatalf("%T has no PublishMany", b)
		}
		topic := testTopic(t, "push")
		mustEnsure(t, b, topic)
		var c collector
		mustSubscribe(t, b, topic, c.add)

		const keys, perKey = 5, 30
		var recs []Record
		for i := range perKey {
			for k := range keys {
				recs = append(recs, Record{Topic: topic, Key: []byte(fmt.Sprintf("k%d", k)), Value: []byte(seqValue(k, i))})
			}
		}
		bad := len(recs) / 2
		recs = slices.Insert(recs, bad, Record{Topic: "no such topic!", Value: []byte("x")})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		errs := bp.PublishMany(ctx, recs)
		if len(errs) != len(recs) {
			t.Fatalf("%d answers for %d records", len(errs), len(recs))
		}
		for i, err := range errs {
			if (err != nil) != (i == bad) {
				t.Fatalf("record %d: err = %v (only record %d has a bad topic)", i, err, bad)
			}
		}
		checkPerKey(t, c.waitLen(t, keys*perKey), keys, perKey)
	})
}
