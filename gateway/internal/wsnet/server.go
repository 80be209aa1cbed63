// Package wsnet serves HTTP (Hertz) and WebSocket on one port without a goroutine per
// idle WebSocket.
//
// A Server supplies Hertz's transport (server.WithTransport(s.Transport)): one netpoll
// event loop owns the listener. On a connection's first bytes the transport peeks
// (consumes nothing) at the request line; "<METHOD> <Config.Path>[?…]" with an
// "Upgrade: websocket" header is upgraded here, and every other connection is handed
// to Hertz for its whole life exactly as Hertz's stock netpoll transport would.
//
// An upgraded connection leaves netpoll's Connection (poller.go) and is served from
// netpoll's poller through its own operator, with no goroutine and no buffer while
// idle: the poller reads its input, a goroutine that exists only while input waits
// parses frames and calls Handler.OnText; writes go through a bounded per-connection
// queue drained by a goroutine that exists only while the queue is non-empty, or by
// the caller of Flush after SendDeferred (a push to many sockets); pings,
// idle closes, frame read timeouts and close-grace expiries are driven by one sweeper
// goroutine per Server walking sharded sets.
//
// No connection can hold a socket without a deadline: one that has not been classified
// (no request for Hertz, no complete upgrade head) within Config.HandshakeTimeout of
// being accepted is closed by the same sweeper, even if it never sent a byte.
//
// Usage:
//
//	ws := wsnet.New(cfg, handler)
//	h := server.New(server.WithListener(ln), server.WithTransport(ws.Transport))
//	… h.Spin() …
//	ws.Shutdown(ctx) // 1001 to every socket, then stop; Hertz's own Shutdown also calls it
package wsnet

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/netpoll"
)

// Handler is implemented by the gateway. Authorize and OnOpen run on netpoll worker
// goroutines, OnText on the connection's read goroutine (at most one callback at a
// time per connection, in frame order); OnClose runs on a goroutine of its own. All
// may block briefly; a callback that blocks long stalls only its own connection's
// reads.
type Handler interface {
	// Authorize runs after the upgrade request head is parsed and validated and
	// before the 101 response; ctx ends with the handshake deadline or at Shutdown.
	// Return (userData, nil) to accept: userData becomes Conn.Data. Return a non-nil
	// *Reject to answer with that HTTP status and JSON body and close.
	Authorize(ctx context.Context, r *Request) (any, *Reject)
	// OnOpen runs once after the upgrade was accepted and before any OnText of the
	// connection. The 101 response is queued first and written, together with what
	// OnOpen sends, in one write when OnOpen returns; if that write fails, OnClose
	// follows with 1006.
	OnOpen(c *Conn)
	// OnText delivers one complete text message (fragments reassembled, UTF-8
	// checked). msg is only valid during the call: copy what you keep. Messages that
	// arrive after the connection started closing are dropped.
	OnText(c *Conn, msg []byte)
	// OnClose runs exactly once per opened Conn, after its TCP connection is closed
	// and after its last OnText returned, whoever closed it. code is the close code
	// that ended the connection: the peer's (CloseNoStatus if its close frame had
	// none), the server's, or CloseAbnormal if the connection dropped without one.
	OnClose(c *Conn, code int, reason string)
}

// Request is the upgrade request as Authorize sees it.
type Request struct {
	// URI is the raw request target, e.g. "/ws?token=…".
	URI string
	// Query is the parsed query of URI (pairs that fail to parse are left out).
	Query url.Values
	// Header holds only Origin, Sec-WebSocket-Protocol, User-Agent and
	// X-Forwarded-For, in canonical form.
	Header http.Header
	// RemoteAddr is the TCP peer, "ip:port".
	RemoteAddr string
	// Protocol may be set by Authorize to one of the subprotocols the client offered
	// in Sec-WebSocket-Protocol; it is then echoed in the 101. A value the client did
	// not offer is ignored (a browser would fail the connection).
	Protocol string
}

// Reject refuses an upgrade. Body is sent as application/json with Connection: close,
// Cache-Control: no-store and, when the request had an Origin, that Origin echoed in
// Access-Control-Allow-Origin (with Vary: Origin). Status must be 400–599; anything
// else is sent as 500.
type Reject struct {
	Status int
	Body   []byte
}

// Errors returned by Conn.Send.
var (
	// ErrQueueFull means the connection's send queue was full: the frame was dropped
	// and the connection is being closed with 1013.
	ErrQueueFull = errors.New("wsnet: send queue full")
	// ErrClosed means the connection is closing or closed; the frame was dropped.
	ErrClosed = errors.New("wsnet: connection closed")
)

// nShards is the number of connection sets; a power of two so that id&(nShards-1)
// picks one.
const nShards = 64

// wheelSlots is the size of a shard's timing wheel, a power of two: a connection
// waits in it at most wheelSlots ticks (32 s at the default 250 ms tick); one with
// nothing due sooner is looked at again then.
const wheelSlots = 128

// shard is one set of open connections, one set of not yet classified accepted
// connections, plus the hot-path counters of its connections. The counters live here rather than in Server so that frames on
// different shards do not contend for one cache line.
type shard struct {
	mu sync.Mutex // guards conns, pending, wheel, swept and their members' idx and wheel links; never held with another lock
	// conns are the open (registered, not yet closed) connections of this shard;
	// c.idx is c's position, so removal is a swap with the last element.
	conns []*Conn
	// pending are the accepted, not yet classified connections of this shard (see
	// pending.go); p.idx is p's position, removal is a swap with the last element.
	pending []*pendingConn
	// wheel holds every connection of conns, each in the slot of the tick at which
	// the sweeper next looks at it: wheel[t%wheelSlots] lists, through Conn.wnext,
	// the connections with wheelAt t, for swept < t ≤ swept+wheelSlots. A tick's
	// sweep so visits only the connections that may be due, not every idle socket:
	// the walk of all of them four times a second was 28–45% of an idle all-mode
	// process holding 18,000 sockets.
	wheel [wheelSlots]*Conn
	// swept is the last tick whose slot the sweeper has taken.
	swept int64

	framesIn, framesOut, bytesIn, bytesOut atomic.Uint64

	_ [64]byte // keep neighbouring shards' counters off this cache line
}

// Server is the WebSocket half of a Hertz server's port, and the Hertz transport
// that routes between the two. Create it with New, pass its Transport method to
// server.WithTransport, and stop it with Shutdown (Hertz's own Shutdown calls it
// too). A Server serves one Hertz engine once; it cannot be restarted.
type Server struct {
	cfg  Config
	h    Handler
	tick time.Duration
	// epoch is tick 0 (UnixNano, at New): tick t ends at epoch + t·tick.
	epoch int64

	// ctx is the parent of every Authorize ctx and cancel ends it at Shutdown. It is
	// the Server's lifetime (like http.Server.BaseContext), not a request's context,
	// which is why it may live in the struct.
	ctx    context.Context
	cancel context.CancelFunc

	shards [nShards]shard

	open       atomic.Int64  // registered, not yet closed connections (Conns)
	tcp        atomic.Int64  // accepted, not yet closed TCP connections, counted when MaxConns > 0
	refused    atomic.Uint64 // connections closed at accept because MaxConns were held
	pending    atomic.Int64  // accepted, not yet classified connections (Pending)
	acceptSeq  atomic.Uint64 // accepted connections, spreads pending records over shards
	handshakes atomic.Int64  // upgrade requests between sniff and 101/refusal
	clock      atomic.Int64  // coarse UnixNano: set at start and by the sweeper every tick
	stopping   atomic.Bool   // set once by Shutdown: refuse new upgrades with 503
	visited    atomic.Uint64 // connections the sweeper took from the wheel (for tests)

	upgrades, rejected atomic.Uint64
	handshakeTimeouts  atomic.Uint64       // pending connections closed at their deadline
	closes             [5000]atomic.Uint64 // connections ended, indexed by close code (codes are < 5000)

	mu sync.Mutex // guards the fields below; never held while calling out or taking another lock
	// el is the running event loop (nil before ListenAndServe and after Shutdown).
	el netpoll.EventLoop
	// tr is the transport handed to Hertz, recorded so Shutdown can reach its listener.
	tr *transporter
	// sweepDone is closed by Shutdown to stop the sweeper goroutine; nil until started.
	sweepDone chan struct{}
	// shutdown is set once Shutdown has run its course; later calls return at once.
	shutdown bool
	// live counts connections registered but whose OnClose has not returned yet;
	// liveZero, when non-nil, is closed (and reset to nil) when live reaches zero.
	live     int
	liveZero chan struct{}
}

// New returns a Server for cfg (zero fields take their defaults) calling h. It does
// no I/O; the listener is Hertz's (server.WithListener or its Addr). h must not be nil.
func New(cfg Config, h Handler) *Server {
	if h == nil {
		panic("wsnet: New with nil Handler")
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	now := time.Now().UnixNano()
	s := &Server{cfg: cfg, h: h, tick: cfg.tick(), epoch: now, ctx: ctx, cancel: cancel}
	s.clock.Store(now)
	return s
}

// tickOf is the first tick that ends at or after t (UnixNano).
func (s *Server) tickOf(t int64) int64 {
	d := t - s.epoch
	if d <= 0 {
		return 0
	}
	tick := int64(s.tick)
	return d/tick + min(d%tick, 1)
}

// limits are the sweeper's intervals in nanoseconds: ping, idle (IdleTimeout plus
// a tick, so that the coarse lastSeen never closes a connection early), read.
func (s *Server) limits() (ping, idle, read int64) {
	return int64(s.cfg.PingInterval), int64(s.cfg.IdleTimeout + s.tick), int64(s.cfg.ReadTimeout)
}

// schedule puts c, which is in no slot, in the slot of tick t, kept within the
// wheel's window. sh.mu is held.
func (sh *shard) schedule(c *Conn, t int64) {
	t = min(max(t, sh.swept+1), sh.swept+wheelSlots)
	head := &sh.wheel[t&(wheelSlots-1)]
	c.wprev, c.wnext = nil, *head
	if *head != nil {
		(*head).wprev = c
	}
	*head = c
	c.wheelAt.Store(t)
}

// unschedule takes c out of its slot, if it is in one. sh.mu is held.
func (sh *shard) unschedule(c *Conn) {
	t := c.wheelAt.Load()
	if t == 0 {
		return
	}
	if c.wprev != nil {
		c.wprev.wnext = c.wnext
	} else {
		sh.wheel[t&(wheelSlots-1)] = c.wnext
	}
	if c.wnext != nil {
		c.wnext.wprev = c.wprev
	}
	c.wprev, c.wnext = nil, nil
	c.wheelAt.Store(0)
}

// expedite makes the sweeper look at c by time at (UnixNano): a deadline that c's
// slot would pass, set outside the sweeper (closeAt, partialSince). It takes the
// shard lock only when c's slot comes up later than that.
func (s *Server) expedite(c *Conn, at int64) {
	t := s.tickOf(at)
	if w := c.wheelAt.Load(); w != 0 && w <= t {
		return
	}
	sh := c.sh
	sh.mu.Lock()
	// Not in a slot: not registered yet (register schedules it after reading the
	// deadline), unregistered, or in the sweeper's hands (it reschedules it after
	// its onTick, reading the deadline then).
	if w := c.wheelAt.Load(); w != 0 && w > t {
		sh.unschedule(c)
		sh.schedule(c, t)
	}
	sh.mu.Unlock()
}

// Conns is the number of open WebSocket connections (upgraded and not yet closed).
func (s *Server) Conns() int { return int(s.open.Load()) }

// Stats is a snapshot of the Server's counters since New; all are monotonic.
type Stats struct {
	Upgrades  uint64 // handshakes answered 101
	Rejected  uint64 // upgrade attempts refused (Authorize, malformed, 503 overload/shutdown) or abandoned (head timeout, over-long head)
	FramesIn  uint64 // frames read, every opcode
	FramesOut uint64 // frames written, every opcode
	BytesIn   uint64 // wire bytes of frames read (headers + payloads)
	BytesOut  uint64 // wire bytes of frames written

	// HandshakeTimeouts counts accepted connections closed because HandshakeTimeout
	// passed before they were classified: sockets that never sent a byte, and request
	// lines or upgrade heads that stalled (an abandoned upgrade head also counts in
	// Rejected). A connection handed to Hertz is never counted here.
	HandshakeTimeouts uint64

	// Refused counts connections closed as soon as they were accepted because
	// Config.MaxConns TCP connections were already held.
	Refused uint64

	// Closes counts ended connections by the code given to OnClose (1006: the TCP
	// connection dropped without a close frame). Only codes seen are present.
	Closes map[int]uint64
}

// Stats returns the current counters. It is cheap enough for every metrics scrape.
func (s *Server) Stats() Stats {
	st := Stats{
		Upgrades: s.upgrades.Load(), Rejected: s.rejected.Load(),
		HandshakeTimeouts: s.handshakeTimeouts.Load(), Refused: s.refused.Load(), Closes: map[int]uint64{},
	}
	for i := range s.shards {
		sh := &s.shards[i]
		st.FramesIn += sh.framesIn.Load()
		st.FramesOut += sh.framesOut.Load()
		st.BytesIn += sh.bytesIn.Load()
		st.BytesOut += sh.bytesOut.Load()
	}
	for code := range s.closes {
		if n := s.closes[code].Load(); n > 0 {
			st.Closes[code] = n
		}
	}
	return st
}

// start records the running event loop and starts the sweeper. It fails if the
// Server was already started or shut down.
func (s *Server) start(tr *transporter, el netpoll.EventLoop) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown || s.stopping.Load() {
		return errors.New("wsnet: server is shut down")
	}
	if s.el != nil {
		return errors.New("wsnet: server already serving")
	}
	s.el, s.tr = el, tr
	s.sweepDone = make(chan struct{})
	s.clock.Store(time.Now().UnixNano())
	go s.sweep(s.sweepDone)
	return nil
}

// register adds an upgraded connection to its shard. It reports whether Shutdown had
// already begun, in which case the caller closes the new connection itself (Shutdown's
// walk may have missed it). The shard lock orders this against Shutdown's walk.
func (s *Server) register(c *Conn) (stopping bool) {
	s.mu.Lock()
	s.live++
	s.mu.Unlock()
	s.open.Add(1)
	sh := c.sh
	sh.mu.Lock()
	c.idx = int32(len(sh.conns))
	sh.conns = append(sh.conns, c)
	sh.schedule(c, s.tickOf(c.nextDue(s.limits())))
	stopping = s.stopping.Load()
	sh.mu.Unlock()
	return stopping
}

// unregister removes c from its shard; it runs once, from c's close callback.
func (s *Server) unregister(c *Conn) {
	sh := c.sh
	sh.mu.Lock()
	last := len(sh.conns) - 1
	if c.idx >= 0 && int(c.idx) <= last && sh.conns[c.idx] == c {
		moved := sh.conns[last]
		sh.conns[c.idx] = moved
		moved.idx = c.idx
		sh.conns[last] = nil
		sh.conns = sh.conns[:last]
		c.idx = -1
	}
	sh.unschedule(c)
	sh.mu.Unlock()
	s.open.Add(-1)
}

// liveDone marks one OnClose as returned.
func (s *Server) liveDone() {
	s.mu.Lock()
	s.live--
	if s.live == 0 && s.liveZero != nil {
		close(s.liveZero)
		s.liveZero = nil
	}
	s.mu.Unlock()
}

// waitLive waits until every registered connection's OnClose returned, or until
// timeout (if > 0) or ctx ends; it reports whether all did.
func (s *Server) waitLive(ctx context.Context, timeout time.Duration) bool {
	s.mu.Lock()
	if s.live == 0 {
		s.mu.Unlock()
		return true
	}
	if s.liveZero == nil {
		s.liveZero = make(chan struct{})
	}
	ch := s.liveZero
	s.mu.Unlock()
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-ch:
		return true
	case <-expired:
	case <-ctx.Done():
	}
	return false
}

// snapshot appends every open connection to dst, one shard lock at a time.
func (s *Server) snapshot(dst []*Conn) []*Conn {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		dst = append(dst, sh.conns...)
		sh.mu.Unlock()
	}
	return dst
}

// Shutdown closes every open WebSocket with 1001 "going away", gives the peers
// Config.CloseGrace to answer, closes the stragglers' TCP connections and waits for
// every OnClose to return. It then stops the event loop: the listener closes and
// netpoll waits, until ctx ends, for connections Hertz is still serving (as with
// Hertz's stock transport, idle keep-alive connections count as busy, so this wait
// usually lasts until ctx ends). New upgrades are refused with 503 from the first call
// on. It returns ctx's error only if a WebSocket's OnClose had not returned when ctx
// ended. It is safe to call more than once and from Hertz's Shutdown (later calls
// return at once), but not from a Handler callback.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	s.stopping.Store(true)
	s.cancel()

	conns := s.snapshot(nil)
	for _, c := range conns {
		c.Close(CloseGoingAway, "going away")
	}
	wsDone := s.waitLive(ctx, s.cfg.CloseGrace)
	if !wsDone {
		for _, c := range s.snapshot(conns[:0]) {
			c.abort()
		}
		wsDone = s.waitLive(ctx, 0)
	}

	s.mu.Lock()
	el, done := s.el, s.sweepDone
	s.el, s.sweepDone, s.shutdown = nil, nil, true
	s.mu.Unlock()
	if done != nil {
		close(done)
	}
	if el != nil {
		_ = el.Shutdown(ctx) // only ever ctx's error: busy HTTP connections are Hertz's to finish
	}
	if !wsDone {
		return ctx.Err()
	}
	return nil
}

// sweep is the Server's only timer goroutine. Every tick it advances the coarse clock
// and, shard by shard, takes the connections of the tick's wheel slot: those whose
// close grace expired are closed, silent ones get an idle close, the rest are pinged
// every PingInterval; each goes back into the slot of the next tick at which
// something may be due for it. Accepted connections still unclassified at their
// handshake deadline are closed. Work on a connection happens after its shard lock
// is released.
func (s *Server) sweep(done <-chan struct{}) {
	t := time.NewTicker(s.tick)
	defer t.Stop()
	var bufs sweepBufs
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		s.sweepTick(time.Now().UnixNano(), &bufs)
	}
}

// sweepBufs are the sweeper's scratch lists, reused from tick to tick.
type sweepBufs struct {
	due     []*Conn
	expired []*pendingConn
}

// sweepTick is one tick of the sweeper at time now (UnixNano).
func (s *Server) sweepTick(now int64, b *sweepBufs) {
	ping, idle, read := s.limits()
	s.clock.Store(now)
	cur := (now - s.epoch) / int64(s.tick) // ticks ended by now
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		taken := 0
		// A sweeper late by more than the wheel takes every slot once.
		for k := max(sh.swept+1, cur-wheelSlots+1); k <= cur; k++ {
			sh.swept = k
			slot := &sh.wheel[k&(wheelSlots-1)]
			c := *slot
			*slot = nil
			for c != nil {
				next := c.wnext
				c.wprev, c.wnext = nil, nil
				c.wheelAt.Store(0)
				taken++
				if c.due(now, ping, idle, read) {
					b.due = append(b.due, c) // rescheduled after onTick
				} else {
					sh.schedule(c, s.tickOf(c.nextDue(ping, idle, read)))
				}
				c = next
			}
		}
		for _, p := range sh.pending {
			if now >= p.deadline {
				b.expired = append(b.expired, p)
			}
		}
		sh.mu.Unlock()
		if taken > 0 {
			s.visited.Add(uint64(taken))
		}
		for _, c := range b.due {
			c.onTick(now, ping, idle, read)
		}
		if len(b.due) > 0 {
			sh.mu.Lock()
			for _, c := range b.due {
				// Unless it was unregistered meanwhile, or expedited.
				if c.idx >= 0 && c.wheelAt.Load() == 0 {
					sh.schedule(c, s.tickOf(c.nextDue(ping, idle, read)))
				}
			}
			sh.mu.Unlock()
		}
		for _, p := range b.expired {
			if s.expire(p) { // lost only to a classification that just happened
				_ = p.nc.Close()
			}
		}
		clear(b.due)
		b.due = b.due[:0]
		clear(b.expired)
		b.expired = b.expired[:0]
	}
}
