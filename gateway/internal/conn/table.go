// Package conn is the gateway's table of live sockets: user id → that user's sockets,
// sharded so that connects, disconnects and pushes on different users do not contend.
// (goim's Bucket idea, without its globals.)
package conn

import (
	"sync"
)

// Socket is what the table needs from a connection; *wsnet.Conn satisfies it.
type Socket interface {
	ID() uint64
	Send(frame []byte) error
}

type shard[S Socket] struct {
	mu    sync.RWMutex           // guards users
	users map[int64]map[uint64]S // user id → socket id → socket
}

// Table is safe for concurrent use. Lock order: only one shard lock is ever held.
type Table[S Socket] struct {
	shards []shard[S]
}

// New returns a table with n shards (rounded up to a power of two).
func New[S Socket](n int) *Table[S] {
	size := 1
	for size < n {
		size <<= 1
	}
	t := &Table[S]{shards: make([]shard[S], size)}
	for i := range t.shards {
		t.shards[i].users = make(map[int64]map[uint64]S)
	}
	return t
}

func (t *Table[S]) shard(uid int64) *shard[S] {
	// Snowflake ids carry time in their high bits and a sequence in the low ones;
	// mixing spreads consecutive ids over shards.
	h := uint64(uid) * 0x9E3779B97F4A7C15
	return &t.shards[h>>32&uint64(len(t.shards)-1)]
}

// Add registers a socket of user uid and reports whether it is the user's first.
func (t *Table[S]) Add(uid int64, s S) (first bool) {
	sh := t.shard(uid)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m := sh.users[uid]
	if m == nil {
		m = make(map[uint64]S, 1)
		sh.users[uid] = m
	}
	m[s.ID()] = s
	return len(m) == 1
}

// Remove unregisters a socket and reports whether it was the user's last.
func (t *Table[S]) Remove(uid int64, id uint64) (last bool) {
	sh := t.shard(uid)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m, ok := sh.users[uid]
	if !ok {
		return false
	}
	if _, ok := m[id]; !ok {
		return false
	}
	delete(m, id)
	if len(m) == 0 {
		delete(sh.users, uid)
		return true
	}
	return false
}

// User calls fn for every socket of uid. fn runs under the shard's read lock and must
// not block (Socket.Send only enqueues).
func (t *Table[S]) User(uid int64, fn func(S)) {
	sh := t.shard(uid)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	for _, s := range sh.users[uid] {
		fn(s)
	}
}

// Each calls fn for every socket, one shard at a time, each under its read lock.
// When parallel > 1 the shards are walked by that many goroutines at once (room
// broadcast to many sockets); fn must then be safe for concurrent use.
func (t *Table[S]) Each(parallel int, fn func(S)) {
	walk := func(i int) {
		sh := &t.shards[i]
		sh.mu.RLock()
		defer sh.mu.RUnlock()
		for _, m := range sh.users {
			for _, s := range m {
				fn(s)
			}
		}
	}
	if parallel <= 1 {
		for i := range t.shards {
			walk(i)
		}
		return
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(parallel, len(t.shards)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				walk(i)
			}
		}()
	}
	for i := range t.shards {
		next <- i
	}
	close(next)
	wg.Wait()
}

// Users returns the number of distinct users with at least one socket.
func (t *Table[S]) Users() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		n += len(sh.users)
		sh.mu.RUnlock()
	}
	return n
}

// EachUser calls fn for every user with at least one socket, with their number of
// sockets, one shard at a time under its read lock; fn must not block.
func (t *Table[S]) EachUser(fn func(uid int64, sockets int)) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for uid, m := range sh.users {
			fn(uid, len(m))
		}
		sh.mu.RUnlock()
	}
}
