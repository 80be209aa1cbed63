package wsnet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
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
type Conn struct {
	id   uint64
	srv  *Server
	nc   netpoll.Connection
	data any    // Authorize's userData; immutable
	sh   *shard // the shard holding c, fixed by id

	// idx is c's position in sh.conns, -1 once removed; guarded by sh.mu.
	idx int

	// Read side: touched only by the connection's OnRequest task (netpoll runs at most
	// one at a time per connection, and never concurrently with its close callback).
	frag     []byte // the fragmented text message being reassembled; nil when none
	fragging bool   // a fragmented text message is in progress
	readDead bool   // the input can no longer be parsed (protocol failure): discard it

	// lastPing is when the sweeper last pinged c (UnixNano); only the sweeper
	// goroutine touches it after registration.
	lastPing int64

	// lastSeen is the Server clock when input last arrived; written by OnRequest,
	// read by the sweeper.
	lastSeen atomic.Int64
	// closeAt is non-zero once our close frame is written and we wait for the peer's
	// answer: the sweeper closes TCP at this UnixNano.
	closeAt atomic.Int64
	// state is one of st*; written with mu held, read lock-free.
	state atomic.Int32

	mu sync.Mutex // guards the fields below; never held while calling out or taking another lock
	// queue holds frames waiting for the drain goroutine; at most SendQueue data and
	// pong frames, plus one close frame beyond that.
	queue []outFrame
	// spare is the drainer's previous batch slice, reused as the next queue.
	spare []outFrame
	// draining is true while a drain goroutine runs; that goroutine is the only writer
	// of nc from the 101 on. Whoever sets it from false starts the goroutine.
	draining bool
	// closeNow: close TCP as soon as our close frame is written, without waiting for
	// the peer's (it already sent its own, or the connection failed).
	closeNow bool
	// code and reason are what OnClose reports; the first close decided wins.
	code   int
	reason string
	// finished is set by the close callback, which runs once.
	finished bool
}

// lastConnID is the last Conn id handed out by any Server: ids are unique per process
// even when several Servers run in it (tests, -target=all).
var lastConnID atomic.Uint64

func (s *Server) newConn(nc netpoll.Connection, data any) *Conn {
	id := lastConnID.Add(1)
	c := &Conn{id: id, srv: s, nc: nc, data: data, sh: &s.shards[id&(nShards-1)], idx: -1}
	now := s.clock.Load()
	c.lastSeen.Store(now)
	c.lastPing = now
	return c
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
	return c.enqueue(ws.OpText, frame)
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

// enqueue queues a data or pong frame, applying the SendQueue bound.
func (c *Conn) enqueue(op ws.OpCode, p []byte) error {
	c.mu.Lock()
	if c.state.Load() != stOpen {
		c.mu.Unlock()
		return ErrClosed
	}
	if len(c.queue) >= c.srv.cfg.SendQueue {
		start := c.startCloseLocked(CloseTryAgainLater, "send queue full", true, false)
		c.mu.Unlock()
		if start {
			go c.drain()
		}
		return ErrQueueFull
	}
	c.queue = append(c.queue, outFrame{op: op, p: p})
	start := c.claimDrainLocked()
	c.mu.Unlock()
	if start {
		go c.drain()
	}
	return nil
}

// ping queues a server ping unless the connection is closing or its queue is full
// (a stuck connection is dealt with by Send's bound and the write timeout).
func (c *Conn) ping() {
	c.mu.Lock()
	if c.state.Load() != stOpen || len(c.queue) >= c.srv.cfg.SendQueue {
		c.mu.Unlock()
		return
	}
	c.queue = append(c.queue, outFrame{op: ws.OpPing})
	start := c.claimDrainLocked()
	c.mu.Unlock()
	if start {
		go c.drain()
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
	if c.state.Load() != stOpen {
		return false
	}
	if !sendableCode(code) {
		code = CloseNormal
	}
	c.setCodeLocked(code, reason)
	if drop {
		clear(c.queue)
		c.queue = c.queue[:0]
	}
	c.queue = append(c.queue, outFrame{op: ws.OpClose, p: closePayload(code, reason)})
	c.closeNow = now
	c.state.Store(stClosing)
	return c.claimDrainLocked()
}

func (c *Conn) setCodeLocked(code int, reason string) {
	if c.code == 0 {
		c.code, c.reason = code, reason
	}
}

// drain writes queued frames until the queue is empty, then exits. It is the only
// writer of nc after the handshake, which keeps netpoll's writer single-threaded
// (concurrent Flush fails with ErrConcurrentAccess). A write blocked by a peer that
// does not read stalls only this goroutine, for at most WriteTimeout.
func (c *Conn) drain() {
	bp := chunkPool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPoolBuf {
			*bp = (*bp)[:0]
			chunkPool.Put(bp)
		}
	}()
	for {
		c.mu.Lock()
		if len(c.queue) == 0 || c.state.Load() == stClosed {
			c.draining = false
			c.releaseQueuesLocked()
			c.mu.Unlock()
			return
		}
		batch := c.queue
		c.queue, c.spare = c.spare[:0], nil
		c.mu.Unlock()

		sentClose, err := c.writeBatch(bp, batch)
		clear(batch) // drop payload references
		closeTCP := false

		c.mu.Lock()
		c.spare = batch[:0]
		switch {
		case err != nil:
			c.setCodeLocked(CloseAbnormal, "write failed")
			c.state.Store(stClosed)
			closeTCP = true
		case sentClose && (c.closeNow || c.state.Load() == stClosed):
			c.state.Store(stClosed)
			closeTCP = true
		case sentClose:
			c.state.Store(stCloseSent)
			c.closeAt.Store(time.Now().Add(c.srv.cfg.CloseGrace).UnixNano())
		}
		if closeTCP {
			c.draining = false
			c.releaseQueuesLocked()
		}
		c.mu.Unlock()
		if closeTCP {
			_ = c.nc.Close()
			return
		}
	}
}

// releaseQueuesLocked drops queued frames of a closed connection and lets large idle
// queue slices go, so an idle connection keeps at most a few dozen bytes of them.
func (c *Conn) releaseQueuesLocked() {
	if c.state.Load() == stClosed {
		c.queue, c.spare = nil, nil
		return
	}
	if cap(c.queue) > 8 {
		c.queue = nil
	}
	if cap(c.spare) > 8 {
		c.spare = nil
	}
}

// writeBatch encodes batch and writes it with as few netpoll Writes as maxChunk
// allows. netpoll's Write holds the connection's flushing lock across Malloc, copy and
// Flush, so a concurrent close cannot free the buffer under it (Malloc+Flush from
// outside OnRequest would not be safe). It reports whether a close frame was written.
func (c *Conn) writeBatch(bp *[]byte, batch []outFrame) (sentClose bool, err error) {
	buf := (*bp)[:0]
	var wire uint64
	flush := func(p []byte) error {
		if len(p) == 0 {
			return nil
		}
		wire += uint64(len(p))
		_, err := c.nc.Write(p)
		return err
	}
	for _, f := range batch {
		n := len(f.p)
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
		c.sh.framesOut.Add(uint64(len(batch)))
		c.sh.bytesOut.Add(wire)
	}
	return sentClose, err
}

// abort closes the TCP connection now, without (further) close handshake.
func (c *Conn) abort() {
	c.mu.Lock()
	if c.state.Load() == stClosed {
		c.mu.Unlock()
		return
	}
	c.setCodeLocked(CloseAbnormal, "")
	c.state.Store(stClosed)
	clear(c.queue)
	c.queue = c.queue[:0]
	c.mu.Unlock()
	_ = c.nc.Close()
}

// closed is the netpoll close callback. It runs once, after the connection's last
// OnRequest returned; OnClose then runs on a goroutine of its own because this may be
// the poller's goroutine.
func (c *Conn) closed(netpoll.Connection) error {
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		return nil
	}
	c.finished = true
	c.state.Store(stClosed)
	c.setCodeLocked(CloseAbnormal, "")
	code, reason := c.code, c.reason
	clear(c.queue)
	c.queue, c.spare = nil, nil
	c.mu.Unlock()
	c.frag = nil
	s := c.srv
	s.unregister(c)
	if code >= 0 && code < len(s.closes) {
		s.closes[code].Add(1)
	}
	go func() {
		defer s.liveDone()
		s.h.OnClose(c, code, reason)
	}()
	return nil
}

// due reports, under its shard lock, whether the sweeper has something to do for c.
func (c *Conn) due(now, ping, idle int64) bool {
	if at := c.closeAt.Load(); at != 0 {
		return now >= at
	}
	if c.state.Load() != stOpen {
		return false
	}
	return now-c.lastSeen.Load() >= idle || now-c.lastPing >= ping
}

// onTick does what due found, outside the shard lock.
func (c *Conn) onTick(now, ping, idle int64) {
	if at := c.closeAt.Load(); at != 0 {
		if now >= at {
			c.abort()
		}
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

// onData is the read path, run by netpoll's OnRequest whenever input is buffered. It
// parses and handles every complete frame, blocks (up to ReadTimeout) only for the rest
// of a frame that has started, and returns with the input fully consumed, as netpoll
// requires. No goroutine waits between frames.
func (c *Conn) onData() {
	r := c.nc.Reader()
	c.lastSeen.Store(c.srv.clock.Load())
	var frames, wire uint64
	for r.Len() > 0 {
		if c.readDead || c.state.Load() == stClosed {
			_ = r.Skip(r.Len())
			break
		}
		if r.Len() > c.maxBacklog() {
			c.fail(ClosePolicyViolation, "too much unread input")
			continue
		}
		if n := c.readFrame(r); n > 0 {
			frames++
			wire += uint64(n)
		}
		_ = r.Release() // after the handler returned: payload slices die here
	}
	_ = r.Release()
	c.sh.framesIn.Add(frames)
	c.sh.bytesIn.Add(wire)
}

// maxBacklog bounds input netpoll has buffered but we have not parsed yet. netpoll
// reads eagerly, so a client that floods faster than its messages are handled would
// otherwise grow the buffer without limit.
func (c *Conn) maxBacklog() int {
	return max(4<<20, 16*c.srv.cfg.MaxFrame)
}

// readFrame reads and handles one frame and returns its wire size, or 0 if it could
// not be read whole (the connection is then failing, and readDead is set).
func (c *Conn) readFrame(r netpoll.Reader) int {
	h, err := r.Peek(2)
	if err != nil {
		c.readFailed(err)
		return 0
	}
	b0, b1 := h[0], h[1]
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
	if h, err = r.Peek(hl); err != nil {
		c.readFailed(err)
		return 0
	}
	length := uint64(l7)
	switch l7 {
	case 126:
		length = uint64(binary.BigEndian.Uint16(h[2:]))
	case 127:
		length = binary.BigEndian.Uint64(h[2:])
		if length>>63 != 0 {
			return c.failed(CloseProtocolError, "bad frame length")
		}
	}
	// Size check before anything of the payload is buffered or waited for.
	if !control && length > uint64(c.srv.cfg.MaxFrame-len(c.frag)) {
		return c.failed(CloseMessageTooBig, "message too big")
	}
	var mask [4]byte
	copy(mask[:], h[hl-4:hl])
	if err = r.Skip(hl); err != nil {
		c.readFailed(err)
		return 0
	}
	var p []byte
	if length > 0 {
		if p, err = r.Next(int(length)); err != nil {
			c.readFailed(err)
			return 0
		}
		ws.Cipher(p, mask, 0) // in place: the read buffer is ours until Release
	}
	c.handleFrame(op, fin, p)
	return hl + int(length)
}

// handleFrame acts on one unmasked frame; p is valid until the caller's Release.
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
			_ = c.enqueue(ws.OpPong, bytes.Clone(p)) // a full queue closes with 1013
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
	c.readDead = true
	c.mu.Lock()
	start, closeTCP := false, false
	switch c.state.Load() {
	case stOpen:
		c.setCodeLocked(code, reason)
		var echo []byte
		if code != CloseNoStatus {
			echo = binary.BigEndian.AppendUint16(nil, uint16(code))
		}
		clear(c.queue) // RFC 6455 §5.5.1: answer as soon as practical
		c.queue = append(c.queue[:0], outFrame{op: ws.OpClose, p: echo})
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
		_ = c.nc.Close()
	}
	return false
}

// fail fails the connection (RFC 6455 §7.1.7): send a close frame with code, close TCP
// right after it, and stop parsing input. It returns false for the caller's ok.
func (c *Conn) fail(code int, reason string) bool {
	c.readDead = true
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
		_ = c.nc.Close()
	}
	return false
}

// failed is fail for readFrame's refusals: nothing of the frame counts as read.
func (c *Conn) failed(code int, reason string) int {
	c.fail(code, reason)
	return 0
}

// readFailed handles a read error in the middle of a frame: a timeout fails the
// connection with 1008; anything else means the connection is already gone.
func (c *Conn) readFailed(err error) {
	if errors.Is(err, netpoll.ErrReadTimeout) {
		c.fail(ClosePolicyViolation, "frame read timeout")
		return
	}
	c.readDead = true
	_ = c.nc.Close() // usually closed already (EOF, reset)
}
