package conn

import (
	"sync"
	"sync/atomic"
	"testing"
)

type fakeSocket struct {
	id   uint64
	sent atomic.Int64
}

func (f *fakeSocket) ID() uint64          { return f.id }
func (f *fakeSocket) Send(b []byte) error { f.sent.Add(1); return nil }

func TestAddRemoveFirstLast(t *testing.T) {
	tb := New[*fakeSocket](4)
	a1, a2, b1 := &fakeSocket{id: 1}, &fakeSocket{id: 2}, &fakeSocket{id: 3}
	if !tb.Add(10, a1) {
		t.Fatal("first socket of user 10 not reported first")
	}
	if tb.Add(10, a2) {
		t.Fatal("second socket of user 10 reported first")
	}
	if !tb.Add(20, b1) {
		t.Fatal("first socket of user 20 not reported first")
	}
	if got := tb.Users(); got != 2 {
		t.Fatalf("Users = %d, want 2", got)
	}
	if tb.Remove(10, a1.id) {
		t.Fatal("removing one of two sockets reported last")
	}
	if tb.Remove(10, 999) {
		t.Fatal("removing an unknown socket reported last")
	}
	if !tb.Remove(10, a2.id) {
		t.Fatal("removing the last socket not reported last")
	}
	if tb.Remove(10, a2.id) {
		t.Fatal("double remove reported last")
	}
	if got := tb.Users(); got != 1 {
		t.Fatalf("Users = %d, want 1", got)
	}
}

func TestEachVisitsEverySocketOnce(t *testing.T) {
	tb := New[*fakeSocket](16)
	var socks []*fakeSocket
	for i := range 1000 {
		s := &fakeSocket{id: uint64(i)}
		socks = append(socks, s)
		tb.Add(int64(i%300)+1, s)
	}
	var n int
	tb.Each(func(s *fakeSocket) { n++; _ = s.Send(nil) })
	if n != 1000 {
		t.Fatalf("Each visited %d sockets, want 1000", n)
	}
	for _, s := range socks {
		if s.sent.Load() != 1 {
			t.Fatalf("socket %d got %d sends, want 1", s.id, s.sent.Load())
		}
	}
	n = 0
	tb.User(1, func(*fakeSocket) { n++ })
	if n != 4 { // ids 0,300,600,900 map to user 1
		t.Fatalf("User(1) visited %d, want 4", n)
	}
}

func TestConcurrentAddRemove(t *testing.T) {
	tb := New[*fakeSocket](8)
	var wg sync.WaitGroup
	var firsts, lasts atomic.Int64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				uid := int64(i % 50)
				id := uint64(g*1000 + i)
				if tb.Add(uid, &fakeSocket{id: id}) {
					firsts.Add(1)
				}
				if tb.Remove(uid, id) {
					lasts.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if tb.Users() != 0 {
		t.Fatalf("Users = %d after all removed", tb.Users())
	}
	if firsts.Load() != lasts.Load() {
		t.Fatalf("firsts %d != lasts %d", firsts.Load(), lasts.Load())
	}
}

func TestEachUserCounts(t *testing.T) {
	tb := New[*fakeSocket](4)
	tb.Add(1, &fakeSocket{id: 1})
	tb.Add(1, &fakeSocket{id: 2})
	tb.Add(2, &fakeSocket{id: 3})
	got := map[int64]int{}
	tb.EachUser(func(uid int64, n int) { got[uid] = n })
	if len(got) != 2 || got[1] != 2 || got[2] != 1 {
		t.Fatalf("EachUser = %v, want map[1:2 2:1]", got)
	}
}

// A user with several sockets: every removal order leaves exactly the others, the
// last removal is reported, and adding a socket id again replaces it.
func TestManySocketsPerUser(t *testing.T) {
	ids := func(tb *Table[*fakeSocket], uid int64) map[uint64]bool {
		got := map[uint64]bool{}
		tb.User(uid, func(s *fakeSocket) {
			if got[s.id] {
				t.Fatalf("socket %d seen twice", s.id)
			}
			got[s.id] = true
		})
		return got
	}
	for _, order := range [][]uint64{{1, 2, 3, 4, 5}, {5, 4, 3, 2, 1}, {3, 1, 5, 2, 4}} {
		tb := New[*fakeSocket](1)
		want := map[uint64]bool{}
		for id := uint64(1); id <= 5; id++ {
			if first := tb.Add(7, &fakeSocket{id: id}); first != (id == 1) {
				t.Fatalf("Add(%d) first = %v", id, first)
			}
			want[id] = true
		}
		replaced := &fakeSocket{id: 3}
		if tb.Add(7, replaced) {
			t.Fatal("re-adding id 3 reported first")
		}
		tb.User(7, func(s *fakeSocket) {
			if s.id == 3 && s != replaced {
				t.Fatal("re-adding id 3 kept the old socket")
			}
		})
		for i, id := range order {
			last := tb.Remove(7, id)
			delete(want, id)
			if last != (i == len(order)-1) {
				t.Fatalf("order %v: Remove(%d) last = %v", order, id, last)
			}
			if tb.Remove(7, id) {
				t.Fatalf("order %v: removing %d twice reported last", order, id)
			}
			got := ids(tb, 7)
			if len(got) != len(want) {
				t.Fatalf("order %v after removing %d: sockets %v, want %v", order, id, got, want)
			}
			for id := range want {
				if !got[id] {
					t.Fatalf("order %v after removing %d: socket %d missing", order, id, id)
				}
			}
		}
		if tb.Users() != 0 {
			t.Fatalf("Users = %d after removing everything", tb.Users())
		}
	}
}
