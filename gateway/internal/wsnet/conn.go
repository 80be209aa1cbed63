package wsnet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"
)

// Connection states. They only move forward: open → closing → closeSent → closed,
// possibly skipping steps. state is written with Conn.mu held and read anywhere.
const (
	stOpen      int32 = iota // frames flow both ways
	stClosing                // our close frame is queued; Send refuses
	stCloseSent              // our close frame is written; waiting for the peer's until closeAt
	stClosed                 // TCP close requested; the close callback finishes the rest
)

// opRaw marks a queued outFrame whose p is written as it is, without a frame header:
// the 101 response, queued ahead of what OnOpen sends so both leave in one write.
const opRaw ws.OpCode = 0xff

// outFrame is one queued outbound frame. p is never modified (Send's contract).
type outFrame struct {
	op ws.OpCode
	p  []byte
}

// Write batching: frames are encoded into a pooled buffer and written with one
// netpoll Write (one syscall when the socket has room) per maxChunk bytes.
const (
	maxChunk   = 256 << 10
	maxPoolBuf = 1 << 20 // larger buffers are left to the GC rather than pooled
)

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// Conn is one upgraded WebSocket connection. Its methods are safe for concurrent use.
//
// It is served from one of netpoll's pollers through its own FDOperator, without a
// netpoll Connection (poller.go says why):
//
//   - The poller calls onReadable when the socket has input. It reads on the poller
//     goroutine into a pooled buffer, appends the bytes to in and, unless one is
//     running, starts a process goroutine, which parses and handles frames until in is
//     empty and then exits. No goroutine and no buffer exist while a socket is idle.
//   - Writes are made by whoever holds the drain claim (LOCKS.md): a drain goroutine,
//     which likewise exists only while frames are queued, or the caller of Flush
//     after a SendDeferred. A full socket makes a drain goroutine wait for the
//     poller's writable event, for at most WriteTimeout; Flush hands it to one.
//   - closeTCP detaches the operator, waits out a poller handler of it, and closes the
//     descriptor once no write is in flight; OnClose follows once the last OnText
//     returned.
type Conn struct {
	id   uint64
	srv  *Server
	fd   int                 // the socket; immutable, valid until closeTCP closes it
	op   *netpoll.FDOperator // registered with a poller until closeTCP frees it
	data any                 // Authorize's userData; immutable
	sh   *shard              // the shard holding c, fixed by id

	// Read side: touched only by the goroutine running process (at most one at a time).
	frag    []byte // the fragmented text message being reassembled; nil when none
	partial []byte // the start of a frame whose rest has not arrived; nil when none

	// readDead: the input can no longer be parsed (protocol failure, close frame):
	// discard it. Set by process or by the sweeper's read timeout.
	readDead atomic.Bool
	// partialSince is when partial's frame started (UnixNano), 0 when none; the
	// sweeper fails the connection when it is older than ReadTimeout.
	partialSince atomic.Int64

	// lastPing is when the sweeper last pinged c (UnixNano); only the sweeper
	// goroutine touches it after registration.
	lastPing int64

	// lastSeen is the Server clock when input last arrived; written by process,
	// read by the sweeper.
	lastSeen atomic.Int64
	// closeAt is non-zero once our close frame is written and we wait for the peer's
	// answer: the sweeper closes TCP at this UnixNano.
	closeAt atomic.Int64
	// state is one of st*; written with mu held, read lock-free.
	state atomic.Int32
	// tcpClosing is set once by the first closeTCP.
	tcpClosing atomic.Bool
	// fragging: a fragmented text message is in progress (read side, like frag).
	fragging bool
	// idx is c's position in sh.conns, -1 once removed; guarded by sh.mu.
	idx int32
	// wheelAt is the sweeper tick at which c's slot of sh.wheel comes up, 0 while c is
	// in no slot; written under sh.mu, read lock-free by expedite. wnext and wprev link
	// the slot's list; guarded by sh.mu.
	wheelAt      atomic.Int64
	wnext, wprev *Conn

	// The input hand-off, guarded by mu (below) like the send side: the poller
	// appends and process takes, each holding mu only for that.
	//
	// in holds bytes read by the poller that process has not taken yet.
	in []byte
	// overflow: more than maxBacklog bytes were waiting; the excess was discarded.
	overflow bool
	// reading is true while a process goroutine runs (or is being started).
	reading bool
	// tcpDone is set when the descriptor is closed; whichever of closeTCP and
	// process's exit finds the other done runs finish.
	tcpDone bool
	// wclosed is set under wmu when the descriptor is closed: no write may follow.
	wclosed bool

	wmu sync.Mutex // held by the writer across a write and its waits for room

	mu sync.Mutex // guards the fields below; never held while calling out or taking another lock
	// queue holds frames waiting for the drain goroutine; at most SendQueue data and
	// pong frames, plus one close frame beyond that.
	queue []outFrame
	// spare is the drainer's previous batch slice, reused as the next queue.
	spare []outFrame
	// writable, created at the first full socket, is signalled by the poller when
	// the socket has room again (and by closeTCP).
	writable chan struct{}
	// reason and code are what OnClose reports; the first close decided wins.
	reason string
	code   int32
	// draining is true while a drain goroutine runs; that goroutine is the only writer
	// of the socket from the 101 on. Whoever sets it from false starts the goroutine.
	draining bool
	// closeNow: close TCP as soon as our close frame is written, without waiting for
	// the peer's (it already sent its own, or the connection failed).
	closeNow bool
	// writeFailed: a write failed and closed the socket.
	writeFailed bool
	// finished is set by finish, which runs once.
	finished bool
}

// lastConnID is the last Conn id handed out by any Server: ids are unique per process
// even when several Servers run in it (tests, -target=all).
var lastConnID atomic.Uint64

func (s *Server) newConn(fd int, data any) *Conn {
	id := lastConnID.Add(1)
	c := &Conn{id: id, srv: s, fd: fd, data: data, sh: &s.shards[id&(nShards-1)], idx: -1}
	now := s.clock.Load()
	c.lastSeen.Store(now)
	c.lastPing = now
	return c
}

// attach registers c's socket with a netpoll poller for input. Events may be
// delivered from then on, so the caller sets reading first if it will process in
// itself.
func (c *Conn) attach() error {
	p := pickPoll()
	op := p.Alloc()
	op.FD = c.fd
	op.OnRead, op.OnWrite, op.OnHup = c.onReadable, c.onWritable, c.onHup
	c.op = op
	if err := op.Control(netpoll.PollReadable); err != nil {
		op.Free()
		c.op = nil
		return fmt.Errorf("wsnet: register socket with netpoll: %w", err)
	}
	return nil
}

// open calls Handler.OnOpen. A panic in it fails only this connection (1011, logged
// with its stack), like one in OnText: the caller still writes the 101 and the close,
// and reads until the connection is closed, so OnClose follows.
func (c *Conn) open() {
	defer func() {
		if r := recover(); r != nil {
			c.srv.cfg.Log.Error("wsnet: OnOpen panicked; closing its connection", "conn", c.id, "panic", r, "stack", string(debug.Stack()))
			c.fail(CloseInternalError, "internal error")
		}
	}()
	c.srv.h.OnOpen(c)
}

// ID is the connection's id, unique within the process (never reused).
func (c *Conn) ID() uint64 { return c.id }

// Data returns the userData Authorize accepted the connection with.
func (c *Conn) Data() any { return c.data }

// Send queues frame as one text message and returns at once; a drain goroutine writes
// it. frame is not copied and must never be modified afterwards, so one encoded frame
// may be shared by any number of connections. Frames sent by one goroutine arrive in
// order. It returns ErrClosed once the connection is closing, and ErrQueueFull (the
// frame is dropped and the connection closed with 1013) when SendQueue frames are
// already waiting.
func (c *Conn) Send(frame []byte) error {
	_, err := c.enqueue(ws.OpText, frame, false)
	return err
}

// Close sends a close frame with code and reason after the frames already queued,
// then closes the connection once the peer answers or CloseGrace passes. A code that
// may not be sent (e.g. 1005, 1006) becomes 1000; reason is cut to 123 bytes. It never
// blocks and only the first close of a connection counts.
func (c *Conn) Close(code int, reason string) {
	c.mu.Lock()
	start := c.startCloseLocked(code, reason, false, false)
	c.mu.Unlock()
	if start {
		go c.drain()
	}
}

// SendDeferred is Send for a caller that queues one frame to many connections
// (a room broadcast) and writes them afterwards, several connections per
// goroutine, instead of one drain goroutine per connection. When it reports
// flush, the caller must call Flush on c once, from any goroutine; until then
// c's frames wait. Otherwise a writer is already on its way (it takes this frame
// too), or the frame was refused as Send would refuse it (err).
//
// Deferring is what lets a broadcast coalesce: a connection whose Flush has not
// run yet when the next message is queued writes both in one write(2).
func (c *Conn) SendDeferred(frame []byte) (flush bool, err error) {
	return c.enqueue(ws.OpText, frame, true)
}

// enqueue queues a data or pong frame, applying the SendQueue bound. The drain it
// claims starts on a goroutine of its own unless deferred, which leaves it to the
// caller (claimed).
func (c *Conn) enqueue(op ws.OpCode, p []byte, deferred bool) (claimed bool, err error) {
	c.mu.Lock()
	if c.state.Load() != stOpen || c.tcpClosing.Load() {
		c.mu.Unlock()
		return false, ErrClosed
	}
	if c.queuedLocked() >= c.srv.cfg.SendQueue {
		start := c.startCloseLocked(CloseTryAgainLater, "send queue full", true, false)
		c.mu.Unlock()
		if start {
			go c.drain()
		}
		return false, ErrQueueFull
	}
	c.queue = append(c.queue, outFrame{op: op, p: p})
	start := c.claimDrainLocked()
	c.mu.Unlock()
	if start && !deferred {
		go c.drain()
		return false, nil
	}
	return start, nil
}

// ping queues a server ping unless the connection is closing or its queue is full
// (a stuck connection is dealt with by Send's bound and the write timeout). It runs
// on the sweeper, which writes the ping itself when no writer holds the socket, as
// Flush does for a SendDeferred: a goroutine started per ping was 11% of an
// all-mode process pinging 9,000 idle sockets a second. Flush never waits: a socket
// that does not take the ping at once gets a drain goroutine.
func (c *Conn) ping() {
	c.mu.Lock()
	if c.state.Load() != stOpen || c.tcpClosing.Load() || c.queuedLocked() >= c.srv.cfg.SendQueue {
		c.mu.Unlock()
		return
	}
	c.queue = append(c.queue, outFrame{op: ws.OpPing})
	start := c.claimDrainLocked()
	c.mu.Unlock()
	if start {
		c.Flush()
	}
}

// claimDrainLocked marks the drainer as running and reports whether the caller must
// start it.
func (c *Conn) claimDrainLocked() bool {
	if c.draining {
		return false
	}
	c.draining = true
	return true
}

// startCloseLocked begins a server-side close if the connection is still open: it
// records code and reason for OnClose, optionally drops the queued frames, and queues
// the close frame. now makes the drainer close TCP right after writing it. It reports
// whether the caller must start the drainer.
func (c *Conn) startCloseLocked(code int, reason string, drop, now bool) bool {
	if c.state.Load() != stOpen || c.tcpClosing.Load() {
		return false // closing, or TCP already gone: no close frame can be sent
	}
	if !sendableCode(code) {
		code = CloseNormal
	}
	c.setCodeLocked(code, reason)
	if drop {
		c.dropQueuedLocked()
	}
	c.queue = append(c.queue, outFrame{op: ws.OpClose, p: closePayload(code, reason)})
	c.closeNow = now
	c.state.Store(stClosing)
	return c.claimDrainLocked()
}

// queuedLocked is the number of queued frames that count against SendQueue: all but a
// 101 response still waiting at the head of the queue.
func (c *Conn) queuedLocked() int {
	if len(c.queue) > 0 && c.queue[0].op == opRaw {
		return len(c.queue) - 1
	}
	return len(c.queue)
}

// dropQueuedLocked drops the queued frames, but not a 101 response still waiting at the
// head of the queue: a close frame must not reach a client that never saw the 101.
func (c *Conn) dropQueuedLocked() {
	keep := 0
	if len(c.queue) > 0 && c.queue[0].op == opRaw {
		keep = 1
	}
	clear(c.queue[keep:])
	c.queue = c.queue[:keep]
}

func (c *Conn) setCodeLocked(code int, reason string) {
	if c.code == 0 {
		c.code, c.reason = int32(code), reason
	}
}

// drain writes queued frames until the queue is empty, then exits. It is the only
// writer of the socket after the handshake. A write blocked by a peer that does not
// read stalls only this goroutine, for at most WriteTimeout.
func (c *Conn) drain() {
	bp := chunkPool.Get().(*[]byte)
	defer putChunk(bp)
	for {
		batch, ok := c.takeBatch()
		if !ok {
			return
		}
		sentClose, err := c.writeBatch(bp, batch)
		if c.wrote(batch, sentClose, err) {
			return
		}
	}
}

func putChunk(bp *[]byte) {
	if cap(*bp) <= maxPoolBuf {
		*bp = (*bp)[:0]
		chunkPool.Put(bp)
	}
}

// takeBatch takes the queued frames for the drainer. When there are none, or the
// connection is closed, it ends the drain (ok false): the drain claim is released.
func (c *Conn) takeBatch() (batch []outFrame, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 || c.state.Load() == stClosed {
		c.draining = false
		c.releaseQueuesLocked()
		return nil, false
	}
	batch = c.queue
	c.queue, c.spare = c.spare[:0], nil
	return batch, true
}

// wrote applies the outcome of writing batch (taken by takeBatch). It reports
// whether the drain is over because TCP is being closed, which it has started.
func (c *Conn) wrote(batch []outFrame, sentClose bool, err error) (stop bool) {
	clear(batch) // drop payload references
	closeTCP := false
	var closeAt int64

	c.mu.Lock()
	c.spare = batch[:0]
	switch {
	case err != nil:
		// The peer is gone or stuck (reset, write timeout). Input already read is
		// still handled and may decide the close code (a close frame sent before a
		// hang-up); finish falls back to 1006 "write failed".
		c.writeFailed = true
		clear(c.queue)
		c.queue = c.queue[:0]
		closeTCP = true
	case sentClose && (c.closeNow || c.state.Load() == stClosed):
		c.state.Store(stClosed)
		closeTCP = true
	case sentClose:
		c.state.Store(stCloseSent)
		closeAt = time.Now().Add(c.srv.cfg.CloseGrace).UnixNano()
		c.closeAt.Store(closeAt)
	}
	if closeTCP {
		c.draining = false
		c.releaseQueuesLocked()
	}
	c.mu.Unlock()
	if closeTCP {
		c.closeSocket(err != nil) // a failed write: the peer may have hung up
	}
	if closeAt != 0 {
		c.srv.expedite(c, closeAt)
	}
	return closeTCP
}

// maxFlushRounds bounds how often Flush takes the queue again on its caller's
// goroutine when frames keep arriving; a drain goroutine takes over after that.
const maxFlushRounds = 4

// Flush writes what the SendDeferred that reported flush queued, with whatever
// was queued after it, on the caller's goroutine and without waiting: a batch the
// socket cannot take at once (full, or larger than one chunk) moves to a drain
// goroutine of its own, which waits as drain does. So one slow or stuck peer never
// holds up the caller's other connections.
func (c *Conn) Flush() {
	bp := chunkPool.Get().(*[]byte)
	defer putChunk(bp)
	for range maxFlushRounds {
		batch, ok := c.takeBatch()
		if !ok {
			return
		}
		buf, frames, sentClose, small := encodeBatch((*bp)[:0], batch)
		*bp = buf
		if !small {
			go c.drainFrom(nil, batch, 0, 0, false)
			return
		}
		n, err := c.writeNow(buf)
		if err == nil && n < len(buf) {
			go c.drainFrom(bytes.Clone(buf[n:]), batch, frames, uint64(len(buf)), sentClose)
			return
		}
		if err == nil {
			c.sh.framesOut.Add(frames)
			c.sh.bytesOut.Add(uint64(len(buf)))
		}
		if c.wrote(batch, sentClose, err) {
			return
		}
	}
	go c.drain()
}

// drainFrom finishes a batch Flush could not write at once, then drains as usual.
// rest is the unwritten tail of the batch's encoding (frames and wire bytes in
// all, sentClose whether it holds a close frame); nil rest means nothing of batch
// was written yet.
func (c *Conn) drainFrom(rest []byte, batch []outFrame, frames, wire uint64, sentClose bool) {
	var err error
	if rest == nil {
		bp := chunkPool.Get().(*[]byte)
		sentClose, err = c.writeBatch(bp, batch)
		putChunk(bp)
	} else if err = c.write(rest); err == nil {
		c.sh.framesOut.Add(frames)
		c.sh.bytesOut.Add(wire)
	}
	if c.wrote(batch, sentClose, err) {
		return
	}
	c.drain()
}

// encodeBatch appends the encoding of batch to buf when it fits in one chunk
// (small); frames counts its WebSocket frames (not a raw 101).
func encodeBatch(buf []byte, batch []outFrame) (out []byte, frames uint64, sentClose, small bool) {
	size := 0
	for _, f := range batch {
		if f.op != opRaw {
			size += frameHeaderLen(len(f.p))
		}
		size += len(f.p)
	}
	if size > maxChunk {
		return buf, 0, false, false
	}
	for _, f := range batch {
		if f.op == opRaw {
			buf = append(buf, f.p...)
			continue
		}
		frames++
		buf = appendFrameHeader(buf, f.op, len(f.p))
		buf = append(buf, f.p...)
		if f.op == ws.OpClose {
			sentClose = true
		}
	}
	return buf, frames, sentClose, true
}

// releaseQueuesLocked lets the queue slices go when the drainer stops (its queue is
// empty, or the connection is closing TCP): an idle connection keeps none.
func (c *Conn) releaseQueuesLocked() {
	c.queue, c.spare = nil, nil
}

// writeBatch encodes batch and writes it with as few writes as maxChunk allows. It
// reports whether a close frame was written.
func (c *Conn) writeBatch(bp *[]byte, batch []outFrame) (sentClose bool, err error) {
	buf := (*bp)[:0]
	var wire uint64
	flush := func(p []byte) error {
		if len(p) == 0 {
			return nil
		}
		wire += uint64(len(p))
		return c.write(p)
	}
	frames := uint64(len(batch))
	for _, f := range batch {
		n := len(f.p)
		if f.op == opRaw {
			buf = append(buf, f.p...)
			frames--
			continue
		}
		if len(buf) > 0 && len(buf)+frameHeaderLen(n)+n > maxChunk {
			if err = flush(buf); err != nil {
				break
			}
			buf = buf[:0]
		}
		buf = appendFrameHeader(buf, f.op, n)
		if n > maxChunk { // big payload: write it from the caller's slice, no copy
			if err = flush(buf); err == nil {
				err = flush(f.p)
			}
			buf = buf[:0]
			if err != nil {
				break
			}
		} else {
			buf = append(buf, f.p...)
		}
		if f.op == ws.OpClose {
			sentClose = true
		}
	}
	if err == nil {
		err = flush(buf)
	}
	*bp = buf
	if err == nil {
		c.sh.framesOut.Add(frames)
		c.sh.bytesOut.Add(wire)
	}
	return sentClose, err
}

// errTCPClosed is a write on a connection whose descriptor was closed.
var errTCPClosed = errors.New("wsnet: connection closed")

// write writes all of p to the socket. When the socket is full it waits for the
// poller's writable event, at most WriteTimeout per wait. Only the drain goroutine (or
// the upgrade, before any drain goroutine exists) writes.
func (c *Conn) write(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for len(p) > 0 {
		if c.wclosed {
			return errTCPClosed
		}
		n, err := send(c.fd, p)
		switch {
		case err == nil:
			p = p[n:]
		case errors.Is(err, syscall.EINTR):
		case errors.Is(err, syscall.EAGAIN):
			if err := c.waitWritable(); err != nil {
				return err
			}
		default:
			return fmt.Errorf("wsnet: write: %w", err)
		}
	}
	return nil
}

// writeNow writes as much of p as the socket takes without waiting and returns
// how much that was; err only for a failed write or a closed descriptor.
func (c *Conn) writeNow(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	done := 0
	for done < len(p) {
		if c.wclosed {
			return done, errTCPClosed
		}
		n, err := send(c.fd, p[done:])
		switch {
		case err == nil:
			done += n
		case errors.Is(err, syscall.EINTR):
		case errors.Is(err, syscall.EAGAIN):
			return done, nil
		default:
			return done, fmt.Errorf("wsnet: write: %w", err)
		}
	}
	return done, nil
}

// errWriteTimeout is a write that found no room in the socket for WriteTimeout.
var errWriteTimeout = errors.New("wsnet: write timeout")

// waitWritable waits until the poller reports room in the socket, closeTCP runs, or
// WriteTimeout passes. It runs with wmu held.
func (c *Conn) waitWritable() error {
	c.mu.Lock()
	if c.writable == nil {
		c.writable = make(chan struct{}, 1)
	}
	ch := c.writable
	c.mu.Unlock()
	if c.tcpClosing.Load() { // closeTCP frees the operator only after taking wmu
		return errTCPClosed
	}
	// Level-triggered: if room appeared since the failed write, the event fires at once.
	if err := c.op.Control(netpoll.PollR2RW); err != nil {
		return fmt.Errorf("wsnet: wait for room: %w", err)
	}
	t := time.NewTimer(c.srv.cfg.WriteTimeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
		return errWriteTimeout
	}
	if c.tcpClosing.Load() {
		return errTCPClosed
	}
	return nil
}

// onWritable is the operator's OnWrite, on the poller goroutine: stop watching for
// room and wake the waiting writer.
func (c *Conn) onWritable(p netpoll.Poll) error {
	_ = p.Control(c.op, netpoll.PollRW2R)
	c.wakeWriter()
	return nil
}

func (c *Conn) wakeWriter() {
	c.mu.Lock()
	ch := c.writable
	c.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// abort closes the TCP connection now, without (further) close handshake.
func (c *Conn) abort() {
	c.mu.Lock()
	if c.state.Load() == stClosed {
		c.mu.Unlock()
		c.closeTCP() // a close already decided may still be on its way; make it now
		return
	}
	c.setCodeLocked(CloseAbnormal, "")
	c.state.Store(stClosed)
	clear(c.queue)
	c.queue = c.queue[:0]
	c.mu.Unlock()
	c.closeTCP()
}

// closeTCP closes the socket, once: it leaves the poller (after any handler of it that
// is running returns), wakes a writer waiting for room, closes the descriptor once that
// writer is out, and runs finish unless a process goroutine still runs (it runs finish
// when it exits). It must not be called from the poller's handlers of c: onReadable,
// onWritable (onHup runs on a goroutine of its own).
func (c *Conn) closeTCP() { c.closeSocket(false) }

// closeSocket is closeTCP; readRest first reads what the socket still holds (at most
// about a backlog's worth), for a peer that hung up: its last frames may be more than
// one readable event reads.
func (c *Conn) closeSocket(readRest bool) {
	if !c.tcpClosing.CompareAndSwap(false, true) {
		return
	}
	_ = c.op.Control(netpoll.PollDetach) // a no-op if the poller detached it on hang-up
	c.wakeWriter()                       // it sees tcpClosing and returns, releasing wmu
	c.wmu.Lock()
	// Under wmu: a writer checks tcpClosing and uses the operator only while holding it.
	c.op.Free() // waits for a running handler of it; no new one starts
	if readRest {
		c.readAvailable(c.maxBacklog()/readBufSize + 1) // no poller reads it any more
	}
	c.wclosed = true
	_ = syscall.Close(c.fd)
	c.wmu.Unlock()
	c.mu.Lock()
	c.tcpDone = true // process still handles what in holds, then runs finish
	run := !c.reading
	c.mu.Unlock()
	if run {
		c.finish()
	}
}

// finish runs once, after the socket is closed and the last OnText returned: it
// settles the close code, unregisters c and calls OnClose on a goroutine of its own.
func (c *Conn) finish() {
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		return
	}
	c.finished = true
	c.state.Store(stClosed)
	if c.writeFailed {
		c.setCodeLocked(CloseAbnormal, "write failed")
	}
	c.setCodeLocked(CloseAbnormal, "")
	code, reason := int(c.code), c.reason
	clear(c.queue)
	c.queue, c.spare = nil, nil
	c.mu.Unlock()
	c.frag, c.partial = nil, nil
	s := c.srv
	s.unregister(c)
	s.released()
	if code >= 0 && code < len(s.closes) {
		s.closes[code].Add(1)
	}
	go func() {
		defer s.liveDone()
		s.h.OnClose(c, code, reason)
	}()
}

// due reports, under its shard lock, whether the sweeper has something to do for c.
func (c *Conn) due(now, ping, idle, read int64) bool {
	if at := c.closeAt.Load(); at != 0 {
		return now >= at
	}
	if ps := c.partialSince.Load(); ps != 0 && now-ps >= read {
		return true
	}
	if c.state.Load() != stOpen {
		return false
	}
	return now-c.lastSeen.Load() >= idle || now-c.lastPing >= ping
}

// nextDue is the earliest time at which due could report c, math.MaxInt64 when
// nothing is pending (a closing connection whose close frame is not written yet:
// writing it sets closeAt, and wrote expedites c). The sweeper calls it under the
// shard lock, or register before c is in the wheel.
func (c *Conn) nextDue(ping, idle, read int64) int64 {
	if at := c.closeAt.Load(); at != 0 {
		return at
	}
	next := int64(math.MaxInt64)
	if ps := c.partialSince.Load(); ps != 0 {
		next = ps + read
	}
	if c.state.Load() == stOpen {
		next = min(next, c.lastSeen.Load()+idle, c.lastPing+ping)
	}
	return next
}

// onTick does what due found, outside the shard lock.
func (c *Conn) onTick(now, ping, idle, read int64) {
	if at := c.closeAt.Load(); at != 0 {
		if now >= at {
			c.abort()
		}
		return
	}
	if ps := c.partialSince.Load(); ps != 0 && now-ps >= read {
		c.fail(ClosePolicyViolation, "frame read timeout")
		return
	}
	switch {
	case now-c.lastSeen.Load() >= idle:
		c.Close(CloseGoingAway, "idle timeout")
	case now-c.lastPing >= ping:
		c.lastPing = now
		c.ping()
	}
}

// readBufs are the poller's read buffers: one is borrowed per readable event.
var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

const readBufSize = 16 << 10

// maxReadsPerEvent bounds the reads of one readable event (128 KiB), so that one fast
// sender cannot hold the poller that every socket on it shares. netpoll watches input
// level-triggered: what is left is reported again by the next wait.
const maxReadsPerEvent = 8

// onReadable is the operator's OnRead, on the poller goroutine: read what the socket
// holds into in and make sure a process goroutine runs.
func (c *Conn) onReadable(netpoll.Poll) error {
	if c.readAvailable(maxReadsPerEvent) {
		go c.peerGone()
	}
	return nil
}

// readAvailable reads what the socket holds, at most reads times a full buffer, into
// in, and reports whether the peer is gone (EOF or an error). A short read means the
// socket was drained. It runs on the poller goroutine (onReadable), or in closeSocket
// after the operator was freed and before the descriptor is closed; never both at once.
func (c *Conn) readAvailable(reads int) (gone bool) {
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp
	for reads > 0 {
		n, err := recv(c.fd, buf)
		switch {
		case n > 0:
			c.received(buf[:n])
			if n < len(buf) {
				return false
			}
			reads--
		case err == nil: // EOF
			return true
		case errors.Is(err, syscall.EINTR):
		case errors.Is(err, syscall.EAGAIN):
			return false
		default:
			return true
		}
	}
	return false
}

// received queues bytes the poller read and starts process unless it runs.
func (c *Conn) received(p []byte) {
	c.mu.Lock()
	if !c.reading && !c.tcpDone && len(c.in) == 0 && len(c.partial) == 0 && !c.readDead.Load() {
		// Nothing queued, no frame half read (partial is process's, and no process
		// runs): pongs alone, the answers to the sweeper's pings that are most of an
		// idle socket's input, need no process goroutine. They only mark the
		// connection alive, as readFrame would.
		if frames := pongs(p); frames > 0 {
			c.mu.Unlock()
			c.lastSeen.Store(c.srv.clock.Load())
			c.sh.framesIn.Add(uint64(frames))
			c.sh.bytesIn.Add(uint64(len(p)))
			return
		}
	}
	switch {
	case c.tcpDone:
	case len(c.in)+len(p) > c.maxBacklog():
		c.overflow = true
	default:
		c.in = append(c.in, p...)
	}
	start := !c.reading && !c.tcpDone
	if start {
		c.reading = true
	}
	c.mu.Unlock()
	if start {
		go c.process()
	}
}

// pongs is the number of frames in p when p is only whole pong frames that readFrame
// would take without a word (FIN, no reserved bit, masked, at most 125 bytes), else 0.
func pongs(p []byte) int {
	n := 0
	for len(p) > 0 {
		if len(p) < 6 || p[0] != 0x80|byte(ws.OpPong) || p[1]&0x80 == 0 || p[1]&0x7f > 125 {
			return 0
		}
		size := 6 + int(p[1]&0x7f)
		if len(p) < size {
			return 0
		}
		p = p[size:]
		n++
	}
	return n
}

// onHup is the operator's OnHup: the poller saw the peer hang up and detached the
// operator, possibly with input left that onReadable's bound did not read. netpoll
// calls it on a goroutine of its own, after the handler that detached it returned.
func (c *Conn) onHup(netpoll.Poll) error {
	c.peerGone()
	return nil
}

// peerGone handles a peer that closed or reset TCP: the socket is closed after
// reading what is left of the peer's input (bounded). That input is still handled, so
// a close frame sent just before the FIN decides the code OnClose gets (finish falls
// back to 1006); nothing more can be written.
func (c *Conn) peerGone() { c.closeSocket(true) }

// maxBacklog bounds input read but not yet taken by process (which holds at most one
// more such chunk while a handler runs): a client that floods faster than its messages
// are handled is closed with 1008 instead of growing the buffer.
func (c *Conn) maxBacklog() int {
	return max(4<<20, 16*c.srv.cfg.MaxFrame)
}

// process is the read path. It takes what the poller queued, parses and handles every
// complete frame, keeps the start of an incomplete one in partial (the sweeper bounds
// its wait by ReadTimeout), and exits when nothing is queued. At most one runs per
// connection; the caller set reading.
//
// A Handler that panics fails only its connection (1011), as netpoll's worker pool
// did for the read path before it left netpoll: the panic is logged with its stack and
// a new process takes over reading (and discarding) until the connection is closed.
func (c *Conn) process() {
	defer func() {
		if r := recover(); r != nil {
			c.srv.cfg.Log.Error("wsnet: handler panicked; closing its connection", "conn", c.id, "panic", r, "stack", string(debug.Stack()))
			c.fail(CloseInternalError, "internal error")
			go c.process() // still the reader (reading stays set): discard, then finish
		}
	}()
	for {
		c.mu.Lock()
		data, overflow := c.in, c.overflow
		c.in, c.overflow = nil, false
		if len(data) == 0 && !overflow {
			c.reading = false
			done := c.tcpDone
			c.mu.Unlock()
			if done {
				c.finish()
			}
			return
		}
		c.mu.Unlock()
		c.lastSeen.Store(c.srv.clock.Load())
		if overflow && !c.readDead.Load() {
			c.fail(ClosePolicyViolation, "too much unread input")
		}
		if c.readDead.Load() || c.state.Load() == stClosed {
			c.partial = nil
			c.partialSince.Store(0)
			continue
		}
		c.parse(data)
	}
}

// parse handles the complete frames of partial+data and keeps the rest in partial.
func (c *Conn) parse(data []byte) {
	b := data
	if len(c.partial) > 0 {
		b = append(c.partial, data...)
	}
	var frames, wire uint64
	off := 0
	for !c.readDead.Load() && c.state.Load() != stClosed {
		n := c.readFrame(b[off:])
		if n == 0 {
			break
		}
		off += n
		frames++
		wire += uint64(n)
	}
	c.sh.framesIn.Add(frames)
	c.sh.bytesIn.Add(wire)
	rest := b[off:]
	switch {
	case len(rest) == 0 || c.readDead.Load() || c.state.Load() == stClosed:
		c.partial = nil
		c.partialSince.Store(0)
	case len(c.partial) > 0 && off == 0: // the same frame is still incomplete
		c.partial = b
	default: // a new frame started in data
		c.partial = append([]byte(nil), rest...)
		since := max(c.srv.clock.Load(), 1)
		c.partialSince.Store(since)
		c.srv.expedite(c, since+int64(c.srv.cfg.ReadTimeout))
	}
}

// readFrame handles the frame at the start of b and returns its wire size, or 0 when
// b holds only part of it or the connection failed (readDead is then set).
func (c *Conn) readFrame(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	b0, b1 := b[0], b[1]
	fin := b0&0x80 != 0
	op := ws.OpCode(b0 & 0x0f)
	l7 := int(b1 & 0x7f)
	control := op.IsControl()
	switch {
	case b0&0x70 != 0:
		return c.failed(CloseProtocolError, "reserved bits set")
	case op.IsReserved():
		return c.failed(CloseProtocolError, "unknown opcode")
	case b1&0x80 == 0:
		return c.failed(CloseProtocolError, "client frame not masked")
	case control && !fin:
		return c.failed(CloseProtocolError, "fragmented control frame")
	case control && l7 > 125:
		return c.failed(CloseProtocolError, "control frame over 125 bytes")
	case op == ws.OpBinary:
		return c.failed(CloseUnsupportedData, "binary messages are not supported")
	case op == ws.OpText && c.fragging:
		return c.failed(CloseProtocolError, "new message inside a fragmented one")
	case op == ws.OpContinuation && !c.fragging:
		return c.failed(CloseProtocolError, "continuation without a message")
	}
	hl := 2 + 4
	switch l7 {
	case 126:
		hl += 2
	case 127:
		hl += 8
	}
	if len(b) < hl {
		return 0
	}
	length := uint64(l7)
	switch l7 {
	case 126:
		length = uint64(binary.BigEndian.Uint16(b[2:]))
	case 127:
		length = binary.BigEndian.Uint64(b[2:])
		if length>>63 != 0 {
			return c.failed(CloseProtocolError, "bad frame length")
		}
	}
	// Size check before anything of the payload is buffered or waited for.
	if !control && length > uint64(c.srv.cfg.MaxFrame-len(c.frag)) {
		return c.failed(CloseMessageTooBig, "message too big")
	}
	if uint64(len(b)-hl) < length {
		return 0
	}
	var mask [4]byte
	copy(mask[:], b[hl-4:hl])
	p := b[hl : hl+int(length)]
	ws.Cipher(p, mask, 0) // in place: the bytes are ours
	c.handleFrame(op, fin, p)
	return hl + int(length)
}

// handleFrame acts on one unmasked frame; p is valid until the caller returns.
func (c *Conn) handleFrame(op ws.OpCode, fin bool, p []byte) bool {
	switch op {
	case ws.OpText:
		if !fin {
			c.fragging = true
			c.frag = append(make([]byte, 0, max(len(p), 512)), p...)
			return true
		}
		if !utf8.Valid(p) {
			return c.fail(CloseInvalidPayload, "text is not valid UTF-8")
		}
		c.deliver(p)
	case ws.OpContinuation:
		c.frag = append(c.frag, p...)
		if !fin {
			return true
		}
		msg := c.frag
		c.frag, c.fragging = nil, false
		if !utf8.Valid(msg) {
			return c.fail(CloseInvalidPayload, "text is not valid UTF-8")
		}
		c.deliver(msg)
	case ws.OpPing:
		if c.state.Load() == stOpen {
			_, _ = c.enqueue(ws.OpPong, bytes.Clone(p), false) // a full queue closes with 1013
		}
	case ws.OpPong:
		// Liveness only: lastSeen was advanced when the bytes arrived.
	case ws.OpClose:
		return c.peerClosed(p)
	}
	return true
}

// deliver hands a complete message to the Handler unless the connection is closing.
func (c *Conn) deliver(msg []byte) {
	if c.state.Load() == stOpen {
		c.srv.h.OnText(c, msg)
	}
}

// peerClosed handles the peer's close frame: validate it, answer it (echoing the
// code), and close TCP once the answer is written. Input after it is discarded.
func (c *Conn) peerClosed(p []byte) bool {
	code, reason := CloseNoStatus, ""
	switch {
	case len(p) == 1:
		return c.fail(CloseProtocolError, "bad close payload")
	case len(p) >= 2:
		code = int(binary.BigEndian.Uint16(p))
		if !sendableCode(code) {
			return c.fail(CloseProtocolError, "invalid close code")
		}
		if !utf8.Valid(p[2:]) {
			return c.fail(CloseInvalidPayload, "close reason is not valid UTF-8")
		}
		reason = string(p[2:])
	}
	c.readDead.Store(true)
	c.mu.Lock()
	start, closeTCP := false, false
	switch c.state.Load() {
	case stOpen:
		c.setCodeLocked(code, reason)
		var echo []byte
		if code != CloseNoStatus {
			echo = binary.BigEndian.AppendUint16(nil, uint16(code))
		}
		c.dropQueuedLocked() // RFC 6455 §5.5.1: answer as soon as practical
		c.queue = append(c.queue, outFrame{op: ws.OpClose, p: echo})
		c.closeNow = true
		c.state.Store(stClosing)
		start = c.claimDrainLocked()
	case stClosing:
		c.closeNow = true // our close is on its way; close TCP right after it
	case stCloseSent:
		c.state.Store(stClosed)
		closeTCP = true
	}
	c.mu.Unlock()
	if start {
		go c.drain()
	}
	if closeTCP {
		c.closeTCP()
	}
	return false
}

// fail fails the connection (RFC 6455 §7.1.7): send a close frame with code, close TCP
// right after it, and stop parsing input. It returns false for the caller's ok.
func (c *Conn) fail(code int, reason string) bool {
	c.readDead.Store(true)
	c.mu.Lock()
	start, closeTCP := false, false
	switch c.state.Load() {
	case stOpen:
		start = c.startCloseLocked(code, reason, true, true)
	case stClosing:
		c.closeNow = true
	case stCloseSent:
		c.state.Store(stClosed)
		closeTCP = true
	}
	c.mu.Unlock()
	if start {
		go c.drain()
	}
	if closeTCP {
		c.closeTCP()
	}
	return false
}

// failed is fail for readFrame's refusals: nothing of the frame counts as read.
func (c *Conn) failed(code int, reason string) int {
	c.fail(code, reason)
	return 0
}
