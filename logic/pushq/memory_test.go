package pushq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestMemorySlowSubscriberDropsWithoutBlockingPublisher(t *testing.T) {
	const buffer = 4
	m := NewMemory(WithSubscriberBuffer(buffer), WithLogger(testLogger(t)))
	t.Cleanup(func() { _ = m.Close() })
	const topic = "slow"

	entered := make(chan struct{})
	release := make(chan struct{})
	var slow, fast collector
	mustSubscribe(t, m, topic, func(v []byte) {
		slow.add(v)
		if string(v) == "0" {
			close(entered)
			<-release
		}
	})
	mustSubscribe(t, m, topic, fast.add)

	mustPublish(t, m, topic, "k", "0")
	waitDone(t, entered, 5*time.Second, "slow handler")
	// The slow subscriber is stuck in h with an empty buffer: the next
	// `buffer` records fit, the rest are dropped for it alone.
	const extra = 3
	for i := 1; i <= buffer+extra; i++ {
		mustPublish(t, m, topic, "k", fmt.Sprint(i)) // must not block
		fast.waitLen(t, i+1)                         // the fast subscriber keeps up
	}
	if got := m.Dropped(); got != extra {
		t.Errorf("Dropped = %d, want %d", got, extra)
	}
	close(release)
	if got, want := slow.waitLen(t, buffer+1), []string{"0", "1", "2", "3", "4"}; !slices.Equal(got, want) {
		t.Errorf("slow subscriber got %v, want %v", got, want)
	}
	if got := fast.waitLen(t, buffer+extra+1); len(got) != buffer+extra+1 {
		t.Errorf("fast subscriber got %v, want all %d", got, buffer+extra+1)
	}
}

func TestMemoryGroupLimitPushesBack(t *testing.T) {
	m := NewMemory(WithGroupLimit(2), WithLogger(testLogger(t)))
	t.Cleanup(func() { _ = m.Close() })
	const topic, group = "jobs", "task"

	release := make(chan struct{})
	handled := make(chan string, 10)
	done := make(chan error, 1)
	go func() {
		done <- m.ConsumeGroup(t.Context(), group, []string{topic}, func(_ context.Context, _, v []byte) error {
			<-release
			handled <- string(v)
			return nil
		})
	}()
	waitMemoryMembers(t, m, group, 1)

	mustPublish(t, m, topic, "k", "1")
	mustPublish(t, m, topic, "k", "2") // the group now holds its limit, unacknowledged
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := m.Publish(ctx, topic, []byte("k"), []byte("3")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish into a full group = %v, want DeadlineExceeded", err)
	}

	// A publisher waiting for room proceeds once the group drains.
	published := make(chan error, 1)
	go func() { published <- m.Publish(t.Context(), topic, []byte("k"), []byte("3")) }()
	close(release)
	if err := waitDone(t, published, 5*time.Second, "Publish after room"); err != nil {
		t.Fatalf("Publish after room: %v", err)
	}
	var got []string
	for range 3 {
		got = append(got, waitDone(t, handled, 5*time.Second, "handler"))
	}
	if want := []string{"1", "2", "3"}; !slices.Equal(got, want) {
		t.Errorf("handled %v, want %v", got, want)
	}

	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := waitDone(t, done, 5*time.Second, "ConsumeGroup after Close"); err != nil {
		t.Errorf("ConsumeGroup = %v, want nil", err)
	}
}

func TestMemoryCloseReleasesBlockedPublisher(t *testing.T) {
	m := NewMemory(WithGroupLimit(1))
	const topic, group = "jobs", "task"
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- m.ConsumeGroup(ctx, group, []string{topic}, func(context.Context, []byte, []byte) error { return nil })
	}()
	waitMemoryMembers(t, m, group, 1)
	cancel() // the group stays registered with no member: records wait in it
	waitDone(t, done, 5*time.Second, "ConsumeGroup after cancel")

	mustPublish(t, m, topic, "k", "1")
	published := make(chan error, 1)
	go func() { published <- m.Publish(t.Context(), topic, []byte("k"), []byte("2")) }()
	_ = m.Close()
	if err := waitDone(t, published, 5*time.Second, "blocked Publish after Close"); !errors.Is(err, ErrClosed) {
		t.Errorf("blocked Publish = %v, want ErrClosed", err)
	}
}

func TestMemoryLeavingMemberHandsOverItsLanes(t *testing.T) {
	m := NewMemory(WithLogger(testLogger(t)))
	t.Cleanup(func() { _ = m.Close() })
	const topic, group = "jobs", "task"

	got := make(chan string, 100)
	h := func(_ context.Context, _, v []byte) error { got <- string(v); return nil }
	ctx1, cancel1 := context.WithCancel(t.Context())
	done1 := make(chan error, 1)
	go func() { done1 <- m.ConsumeGroup(ctx1, group, []string{topic}, h) }()
	done2 := make(chan error, 1)
	go func() { done2 <- m.ConsumeGroup(t.Context(), group, []string{topic}, h) }()
	waitMemoryMembers(t, m, group, 2)
	cancel1()
	waitDone(t, done1, 5*time.Second, "member 1 leaving")

	const n = 40 // across every lane
	for i := range n {
		mustPublish(t, m, topic, fmt.Sprint("k", i), fmt.Sprint(i))
	}
	seen := map[string]bool{}
	for range n {
		seen[waitDone(t, got, 5*time.Second, "record for the remaining member")] = true
	}
	if len(seen) != n {
		t.Errorf("handled %d distinct records, want %d", len(seen), n)
	}
}

// Records of topics no group reads are not kept: the broadcast and gateway topics
// are only tailed by subscribers, and a backlog for them would only grow.
func TestMemoryKeepsBacklogOnlyForJobs(t *testing.T) {
	m := NewMemory()
	t.Cleanup(func() { _ = m.Close() })
	for range 100 {
		if err := m.Publish(t.Context(), TopicBroadcast, nil, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := m.Publish(t.Context(), TopicJobs, []byte("k"), []byte("j")); err != nil {
			t.Fatal(err)
		}
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if tp := m.topics[TopicBroadcast]; tp != nil && len(tp.backlog) != 0 {
		t.Fatalf("broadcast backlog = %d records, want 0", len(tp.backlog))
	}
	if n := len(m.topics[TopicJobs].backlog); n != 100 {
		t.Fatalf("jobs backlog = %d records, want 100", n)
	}
}
