package gateway

import (
	"slices"
	"testing"

	"github.com/gochat/gochat/logic/pushq"
)

func TestRecentPushes(t *testing.T) {
	r := newRecentPushes(4)
	p := func(id int64, to ...int64) pushq.Push {
		return pushq.Push{Message: pushq.Message{ID: id}, Recipients: to}
	}
	if _, ok := r.fresh(p(1)); !ok {
		t.Fatal("a new broadcast must be delivered")
	}
	if _, ok := r.fresh(p(1)); ok {
		t.Fatal("a repeated broadcast must be dropped")
	}
	if got, ok := r.fresh(p(2, 5, 6)); !ok || !slices.Equal(got, []int64{5, 6}) {
		t.Fatalf("first push of message 2 = %v %v", got, ok)
	}
	// The repeat reaches a user who reconnected here in between, and nobody twice.
	if got, ok := r.fresh(p(2, 5, 6, 7)); !ok || !slices.Equal(got, []int64{7}) {
		t.Fatalf("repeat of message 2 = %v %v, want only the new recipient 7", got, ok)
	}
	for id := int64(10); id < 14; id++ { // push everything out of the ring of 4
		r.fresh(p(id))
	}
	if _, ok := r.fresh(p(1)); !ok {
		t.Fatal("the ring forgets the oldest entries")
	}
}
