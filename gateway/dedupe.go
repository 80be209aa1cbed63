package gateway

import (
	"hash/maphash"
	"sync"

	"github.com/gochat/gochat/logic/pushq"
)

// recentPushes remembers the last pushes delivered by this gateway, so that a push
// published twice — logic pushes a resent message again in case its first push was
// lost with a dead logic; task redoes the page in flight after a crash — reaches each
// socket once. A push is identified by its message id and recipient list. Bounded:
// a ring of the last N keys. Safe for concurrent use.
type recentPushes struct {
	seed maphash.Seed

	mu   sync.Mutex // guards ring, next, seen
	ring []uint64
	next int
	seen map[uint64]struct{}
}

func newRecentPushes(n int) *recentPushes {
	return &recentPushes{seed: maphash.MakeSeed(), ring: make([]uint64, n), seen: make(map[uint64]struct{}, n)}
}

func (r *recentPushes) key(p pushq.Push) uint64 {
	var h maphash.Hash
	h.SetSeed(r.seed)
	var b [8]byte
	put := func(v int64) {
		for i := range b {
			b[i] = byte(v >> (8 * i))
		}
		_, _ = h.Write(b[:])
	}
	put(p.Message.ID)
	for _, uid := range p.Recipients {
		put(uid)
	}
	return h.Sum64()
}

// first records p and reports whether it was not seen among the recent pushes.
func (r *recentPushes) first(p pushq.Push) bool {
	k := r.key(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.seen[k]; dup {
		return false
	}
	if old := r.ring[r.next]; old != 0 {
		delete(r.seen, old)
	}
	r.ring[r.next] = k
	r.next = (r.next + 1) % len(r.ring)
	r.seen[k] = struct{}{}
	return true
}
