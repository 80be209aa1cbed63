package wsnet

import (
	"errors"
	"sync/atomic"

	"github.com/cloudwego/netpoll"
)

// errExpired stands in for a read error when the handshake deadline won the race
// against a head that had just completed.
var errExpired = errors.New("wsnet: handshake deadline passed")

// Unclassified connections (slowloris / fd-exhaustion defence).
//
// netpoll runs OnRequest only when input arrives, so a socket that connects and never
// sends a byte would otherwise never meet a deadline (netpoll.WithIdleTimeout is only
// TCP keepalive). Every accepted connection is therefore put in its shard's pending set
// by prepare, with deadline = accept + HandshakeTimeout, and leaves it exactly once:
//
//   - classified: OnRequest saw a request that is not ours (handed to Hertz, which
//     applies its own ReadTimeout/IdleTimeout from then on) or read a complete request
//     head on the WebSocket path (Authorize and the 101 are bounded separately);
//   - expired: the deadline passed first. The sweeper (no goroutine per connection)
//     closes the connection; OnRequest, whose peeks run under the same absolute read
//     deadline, expires it itself when a peek times out;
//   - closed: the peer went away (or a refusal closed it) first; the close callback
//     removes it.
//
// The first two race (bytes may complete the head just as the sweeper finds the
// deadline passed), so they are decided by one CAS on pendingConn.state: whoever moves
// it from pendWaiting owns the outcome. Only an expiry is counted in
// Stats.HandshakeTimeouts.

// pendingConn states: pendWaiting moves once, by CAS, to one of the other two.
const (
	pendWaiting    int32 = iota // in the pending set, deadline running
	pendClassified              // OnRequest claimed it: HTTP or a complete upgrade head
	pendExpired                 // the handshake deadline won: the connection is closed
)

// pendingConn is an accepted connection that has not yet been classified. It lives
// inside the connection's slot, so tracking costs no allocation beyond the close
// callback.
type pendingConn struct {
	srv *Server
	nc  netpoll.Connection
	sh  *shard
	// deadline is accept time + HandshakeTimeout (UnixNano). Written before the
	// record is published under sh.mu, immutable afterwards.
	deadline int64
	// idx is the position in sh.pending, -1 once removed; guarded by sh.mu.
	idx int
	// state is one of pend*; it leaves pendWaiting once, by CAS (see above).
	state atomic.Int32
}

// addPending puts a freshly accepted connection in its shard's pending set. It runs
// in prepare (netpoll's OnPrepare, on the poller goroutine) before the connection is
// registered for reads, so no OnRequest or close callback of it can run yet.
func (s *Server) addPending(p *pendingConn) {
	s.pending.Add(1)
	sh := p.sh
	sh.mu.Lock()
	p.idx = len(sh.pending)
	sh.pending = append(sh.pending, p)
	sh.mu.Unlock()
}

// removePending takes p out of its shard's pending set; a second call is a no-op.
func (s *Server) removePending(p *pendingConn) {
	sh := p.sh
	removed := false
	sh.mu.Lock()
	last := len(sh.pending) - 1
	if p.idx >= 0 && p.idx <= last && sh.pending[p.idx] == p {
		moved := sh.pending[last]
		sh.pending[p.idx] = moved
		moved.idx = p.idx
		sh.pending[last] = nil
		sh.pending = sh.pending[:last]
		p.idx = -1
		removed = true
	}
	sh.mu.Unlock()
	if removed {
		s.pending.Add(-1)
	}
}

// classify claims p for OnRequest: the connection is Hertz's, or its upgrade head is
// complete. It reports false when the deadline already won, in which case the caller
// must close the connection (the sweeper is closing it too) and serve nothing. A nil
// p (no slot) is always claimable.
func (s *Server) classify(p *pendingConn) bool {
	if p == nil {
		return true
	}
	if !p.state.CompareAndSwap(pendWaiting, pendClassified) {
		return p.state.Load() == pendClassified
	}
	s.removePending(p)
	return true
}

// expire claims p for the handshake deadline and counts it. It reports whether this
// call won, in which case the caller closes the connection (never under a lock: the
// close callbacks may run synchronously and take shard.mu).
func (s *Server) expire(p *pendingConn) bool {
	if p == nil || !p.state.CompareAndSwap(pendWaiting, pendExpired) {
		return false
	}
	s.removePending(p)
	s.handshakeTimeouts.Add(1)
	return true
}

// closed is the close callback of every accepted connection. It runs once, never
// concurrently with the connection's OnRequest, possibly on the goroutine that called
// Close (no lock of ours is held at any Close call site).
func (p *pendingConn) closed(netpoll.Connection) error {
	if p.state.Load() == pendWaiting {
		p.srv.removePending(p)
	}
	return nil
}

// Pending is the number of accepted connections not yet classified: no request that
// belongs to Hertz and no complete upgrade head yet. Each is closed once
// HandshakeTimeout has passed since it was accepted.
func (s *Server) Pending() int { return int(s.pending.Load()) }
