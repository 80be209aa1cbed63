// Package conn is the gateway's table of live sockets: user id → that user's sockets,
// sharded so that connects, disconnects and pushes on different users do not contend.
// (goim's Bucket idea, without its globals.)
package conn

import (
	"sync"
)

// Socket is what the table needs from a connection; *wsnet.Conn satisfies it.
type Socket interface {
	comparable
	ID() uint64
	Send(frame []byte) error
}

// sockets are one user's sockets. Nearly every user has one, held inline: the table
// costs a map slot per user (~40 B) and no allocation of its own. Further sockets go
// to more, in no particular order.
type sockets[S Socket] struct {
	one  S
	more []S
}

func (e *sockets[S]) len() int {
	var zero S
	if e.one == zero {
		return 0
	}
	return 1 + len(e.more)
}

func (e *sockets[S]) each(fn func(S)) {
	var zero S
	if e.one == zero {
		return
	}
	fn(e.one)
	for _, s := range e.more {
		fn(s)
	}
}

// add adds s, replacing a socket with the same id.
func (e *sockets[S]) add(s S) {
	var zero S
	id := s.ID()
	switch {
	case e.one == zero:
		e.one = s
		return
	case e.one.ID() == id:
		e.one = s
		return
	}
	for i, o := range e.more {
		if o.ID() == id {
			e.more[i] = s
			return
		}
	}
	e.more = append(e.more, s)
}

// remove removes the socket with id and reports whether it was there.
func (e *sockets[S]) remove(id uint64) bool {
	var zero S
	if e.one == zero {
		return false
	}
	if e.one.ID() == id {
		if n := len(e.more); n > 0 {
			e.one = e.more[n-1]
			e.more = shrink(e.more)
		} else {
			e.one = zero
		}
		return true
	}
	for i, o := range e.more {
		if o.ID() == id {
			e.more[i] = e.more[len(e.more)-1]
			e.more = shrink(e.more)
			return true
		}
	}
	return false
}

// shrink drops the last element, and the slice once it is empty.
func shrink[S Socket](more []S) []S {
	var zero S
	n := len(more) - 1
	more[n] = zero
	if n == 0 {
		return nil
	}
	return more[:n]
}

type shard[S Socket] struct {
	mu    sync.RWMutex         // guards users
	users map[int64]sockets[S] // user id → that user's sockets
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
		t.shards[i].users = make(map[int64]sockets[S])
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
	e := sh.users[uid]
	e.add(s)
	sh.users[uid] = e
	return e.len() == 1
}

// Remove unregisters a socket and reports whether it was the user's last.
func (t *Table[S]) Remove(uid int64, id uint64) (last bool) {
	sh := t.shard(uid)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.users[uid]
	if !ok || !e.remove(id) {
		return false
	}
	if e.len() == 0 {
		delete(sh.users, uid)
		return true
	}
	sh.users[uid] = e
	return false
}

// User calls fn for every socket of uid. fn runs under the shard's read lock and must
// not block (the gateway's only queues frames: wsnet's SendDeferred).
func (t *Table[S]) User(uid int64, fn func(S)) {
	sh := t.shard(uid)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	e := sh.users[uid]
	e.each(fn)
}

// Each calls fn for every socket, one shard at a time, each under its read lock;
// fn must not block (the gateway's only queues frames: wsnet's SendDeferred).
func (t *Table[S]) Each(fn func(S)) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for _, e := range sh.users {
			e.each(fn)
		}
		sh.mu.RUnlock()
	}
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
		for uid, e := range sh.users {
			fn(uid, e.len())
		}
		sh.mu.RUnlock()
	}
}
