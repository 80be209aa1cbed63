package logic

import (
	"slices"
	"testing"
	"time"
)

// TestGroupCache: an entry serves until it is ttl old; a list read across a forget
// of any group is not kept (it may predate the change); a full cache drops what
// expired first; ttl 0 keeps nothing.
func TestGroupCache(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newGroupCache(time.Second, 2)
	c.now = func() time.Time { return now }

	at, ep := c.begin()
	c.put("group_1", []int64{1, 2}, at, ep)
	if ids, ok := c.get("group_1"); !ok || !slices.Equal(ids, []int64{1, 2}) {
		t.Fatalf("get after put = %v, %v", ids, ok)
	}
	now = now.Add(999 * time.Millisecond)
	if _, ok := c.get("group_1"); !ok {
		t.Fatal("entry gone before ttl")
	}
	now = now.Add(time.Millisecond)
	if _, ok := c.get("group_1"); ok {
		t.Fatal("entry served at ttl")
	}

	// A read that began before a forget (of any group) is not kept.
	at, ep = c.begin()
	c.forget("group_9")
	c.put("group_2", []int64{3}, at, ep)
	if _, ok := c.get("group_2"); ok {
		t.Fatal("a list read across a forget was kept")
	}
	at, ep = c.begin()
	c.put("group_2", []int64{3}, at, ep)
	c.forget("group_2")
	if _, ok := c.get("group_2"); ok {
		t.Fatal("forget left the entry")
	}

	// Full: the expired entry goes first; with none expired, everything does.
	at, ep = c.begin()
	c.put("group_3", []int64{4}, at, ep) // group_1 (expired) and group_3 now
	at, ep = c.begin()
	c.put("group_4", []int64{5}, at, ep)
	if _, ok := c.get("group_3"); !ok {
		t.Fatal("a fresh entry was dropped while an expired one could go")
	}
	if _, ok := c.get("group_4"); !ok {
		t.Fatal("group_4 not kept")
	}
	at, ep = c.begin()
	c.put("group_5", []int64{6}, at, ep)
	if len(c.m) != 1 {
		t.Fatalf("a full cache of fresh entries kept %d entries before adding one; want it emptied", len(c.m)-1)
	}

	off := newGroupCache(0, 10)
	at, ep = off.begin()
	off.put("group_1", []int64{1}, at, ep)
	if _, ok := off.get("group_1"); ok {
		t.Fatal("ttl 0 kept an entry")
	}
}
