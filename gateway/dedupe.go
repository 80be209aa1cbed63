package gateway

import (
	"hash/maphash"
	"sync"

	"github.com/gochat/gochat/logic/pushq"
)

// recentPushes remembers the last deliveries made by this gateway, so that a message
// pushed twice — logic pushes a resent message again in case its first push was lost
// with a dead logic; task redoes the page in flight after a crash — reaches each user
// here once. A delivery is (message id, recipient user id); a broadcast uses user 0.
// The recipient list of a repeat may differ from the first (users reconnected here in
// between), so each recipient is checked on its own. Bounded: a ring of the last N
// keys. Safe for concurrent use.
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

func (r *recentPushes) key(msgID, userID int64) uint64 {
	var b [16]byte
	for i := range 8 {
		b[i] = byte(msgID >> (8 * i))
		b[8+i] = byte(userID >> (8 * i))
	}
	return maphash.Bytes(r.seed, b[:])
}

// fresh returns the recipients of p not yet delivered here and records them; for a
// broadcast (no recipients) it reports whether the message itself is new.
func (r *recentPushes) fresh(p pushq.Push) (recipients []int64, deliver bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(p.Recipients) == 0 {
		return nil, r.addLocked(r.key(p.Message.ID, 0))
	}
	out := p.Recipients[:0:0]
	for _, uid := range p.Recipients {
		if r.addLocked(r.key(p.Message.ID, uid)) {
			out = append(out, uid)
		}
	}
	return out, len(out) > 0
}

func (r *recentPushes) addLocked(k uint64) bool {
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
