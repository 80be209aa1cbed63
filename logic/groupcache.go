package logic

import (
	"sync"
	"time"
)

// groupCache holds the member lists of groups for a short time, so that a group
// send needs no repo call for its sender's membership or for its fan-out. Without
// it each group send asked repo twice; with 20 groups at 909 sends/s beside 1:1
// traffic the two lookups' store calls alone were 11.5% of an all-mode process
// (docs/performance.md).
//
// Freshness: the membership changes this logic makes (AddMembers, RemoveMember)
// forget the group at once, and a list read before such a change is not kept
// (epoch). Changes made through another logic instance reach this one's cache
// within ttl: until then the removed member's sends may pass its check and pushes
// may still reach it, and a new member's may not; a new member recovers by seq as
// from any missed push. ttl 0 turns the cache off.
type groupCache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu    sync.Mutex
	m     map[string]groupEntry
	epoch uint64 // advanced by every forget
}

type groupEntry struct {
	ids []int64   // sorted
	at  time.Time // when the read that filled it began
}

func newGroupCache(ttl time.Duration, max int) *groupCache {
	return &groupCache{ttl: ttl, max: max, now: time.Now, m: make(map[string]groupEntry)}
}

// get returns the group's members while they are fresh.
func (c *groupCache) get(conv string) ([]int64, bool) {
	if c.ttl <= 0 {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[conv]
	if !ok || c.now().Sub(e.at) >= c.ttl {
		return nil, false
	}
	return e.ids, true
}

// begin is called before reading a group's members from repo: the time and
// epoch to pass to put.
func (c *groupCache) begin() (time.Time, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now(), c.epoch
}

// put keeps ids (sorted) as conv's members read from at, unless a forget came
// since begin returned epoch: the read may predate that change. When full it
// drops the expired entries, and everything if none was.
func (c *groupCache) put(conv string, ids []int64, at time.Time, epoch uint64) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch != c.epoch {
		return
	}
	if len(c.m) >= c.max {
		now := c.now()
		for k, e := range c.m {
			if now.Sub(e.at) >= c.ttl {
				delete(c.m, k)
			}
		}
		if len(c.m) >= c.max {
			clear(c.m)
		}
	}
	c.m[conv] = groupEntry{ids: ids, at: at}
}

// forget drops conv's entry and keeps any read already under way from filling it.
func (c *groupCache) forget(conv string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	delete(c.m, conv)
}
