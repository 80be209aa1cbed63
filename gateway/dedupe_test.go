package gateway

import (
	"testing"

	"github.com/gochat/gochat/logic/pushq"
)

func TestRecentPushes(t *testing.T) {
	r := newRecentPushes(4)
	p := func(id int64, to ...int64) pushq.Push {
		return pushq.Push{Message: pushq.Message{ID: id}, Recipients: to}
	}
	if !r.first(p(1)) || r.first(p(1)) {
		t.Fatal("the same world push must count once")
	}
	if !r.first(p(1, 5, 6)) || !r.first(p(1, 7)) || r.first(p(1, 5, 6)) {
		t.Fatal("pages of one message are different pushes; a repeated page is not")
	}
	for id := int64(2); id <= 5; id++ { // push the first ones out of the ring
		r.first(p(id))
	}
	if !r.first(p(1)) {
		t.Fatal("the ring forgets the oldest entries")
	}
}
