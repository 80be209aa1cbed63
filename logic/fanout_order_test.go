package logic

import (
	"testing"

	"github.com/gochat/gochat/kitex_gen/repoapi"
)

// Jobs that reach a shard out of seq order within the collect window leave it in seq
// order per conversation; presence jobs keep their place among their key.
func TestCollectSortsBySeq(t *testing.T) {
	ch := make(chan pushJob, 8)
	job := func(conv string, seq int64) pushJob {
		return messageJob(&repoapi.Message{ConversationId: conv, Seq: seq}, "")
	}
	for _, j := range []pushJob{job("b", 2), job("a", 3), job("b", 1), job("a", 1), job("a", 2)} {
		ch <- j
	}
	close(ch)
	f := &fanout{linger: pushLinger}
	first := <-ch
	got := f.collect(ch, append(make([]pushJob, 0, 64), first))
	var order []string
	for _, j := range got {
		order = append(order, j.msg.ConversationId+string(rune('0'+j.msg.Seq)))
	}
	want := []string{"a1", "a2", "a3", "b1", "b2"}
	if len(order) != len(want) {
		t.Fatalf("collected %v, want %v", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("order %v, want %v", order, want)
		}
	}
}

// A resend's push (duplicate) never leaves before the first store's push of the same
// message, whatever order they were queued in.
func TestCollectPutsFirstStoreBeforeResends(t *testing.T) {
	ch := make(chan pushJob, 4)
	m := &repoapi.Message{ConversationId: "c", Seq: 7}
	resend := messageJob(m, "")
	resend.dup = true
	for _, j := range []pushJob{resend, messageJob(&repoapi.Message{ConversationId: "c", Seq: 6}, "gw/1"), messageJob(m, "gw/2")} {
		ch <- j
	}
	close(ch)
	got := (&fanout{linger: pushLinger}).collect(ch, append(make([]pushJob, 0, 64), <-ch))
	if len(got) != 3 || got[0].msg.Seq != 6 || got[1].dup || got[1].origin != "gw/2" || !got[2].dup {
		t.Fatalf("order: %+v", got)
	}
}
