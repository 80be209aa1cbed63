//go:build linux

package wsc

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Connection states.
const (
	stConnecting  = 1 // connect() in progress; the request waits in pending
	stHandshaking = 2 // request (being) written, waiting for the 101
	stOpen        = 3
	stClosed      = 4
)

// Conn is one client connection. Its methods are safe for concurrent use.
type Conn struct {
	loop     *loop
	data     any
	fd       int32
	seq      uint32 // tells this conn from a later one reusing fd (epoll data)
	state    atomic.Uint32
	closeReq atomic.Bool // Close was called; the loop finishes the job
	fragOp   byte        // opcode of the fragmented message being reassembled (loop only)
	dialedAt int64       // ns since Client.epoch
	openedAt atomic.Int64

	mu      sync.Mutex // guards pending and the fd's validity for writes
	pending []byte     // unsent bytes (the upgrade request before the 101)

	// Loop-only state.
	hs   *handshake // until the 101
	rbuf []byte     // start of a frame split across reads
	frag []byte     // fragmented message being reassembled
}

type handshake struct {
	key  [24]byte // base64 Sec-WebSocket-Key
	head []byte   // response head split across reads
}

func (h *handshake) newKey() {
	var raw [16]byte
	binary.LittleEndian.PutUint64(raw[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(raw[8:], rand.Uint64())
	base64.StdEncoding.Encode(h.key[:], raw[:])
}

const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// expectedAccept returns the Sec-WebSocket-Accept matching key.
func expectedAccept(key []byte) [28]byte {
	h := sha1.New()
	h.Write(key)
	h.Write([]byte(acceptGUID))
	var sum [sha1.Size]byte
	var out [28]byte
	base64.StdEncoding.Encode(out[:], h.Sum(sum[:0]))
	return out
}

func appendRequest(b []byte, host, path string, key []byte) []byte {
	if b == nil {
		b = make([]byte, 0, 160+len(host)+len(path))
	}
	b = append(b, "GET "...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "...)
	b = append(b, key...)
	b = append(b, "\r\nSec-WebSocket-Version: 13\r\n\r\n"...)
	return b
}

// Data returns the value given to Dial.
func (c *Conn) Data() any { return c.data }

// DialedAt returns when Dial was called.
func (c *Conn) DialedAt() time.Time {
	return c.loop.cl.epoch.Add(time.Duration(c.dialedAt))
}

// OpenedAt returns when the 101 was parsed, or the zero Time before that.
func (c *Conn) OpenedAt() time.Time {
	if t := c.openedAt.Load(); t != 0 {
		return c.loop.cl.epoch.Add(time.Duration(t))
	}
	return time.Time{}
}

// IsOpen reports whether the connection is open and Close was not called.
func (c *Conn) IsOpen() bool {
	return c.state.Load() == stOpen && !c.closeReq.Load()
}

// Send writes one masked frame with opcode op (OpText, OpBinary, OpPing or
// OpPong). The frame goes straight to the socket when nothing is queued; what
// the socket does not take is queued and written by the loop on EPOLLOUT, so
// Send never blocks on the network. It returns ErrNotOpen unless the
// connection is open, ErrSendBufferFull when the queue is full, or the write
// error (the loop then closes the connection).
func (c *Conn) Send(op byte, payload []byte) error {
	switch op {
	case OpText, OpBinary:
	case OpPing, OpPong:
		if len(payload) > 125 {
			return fmt.Errorf("wsc: control frame payload of %d bytes (max 125)", len(payload))
		}
	default:
		return fmt.Errorf("wsc: Send: opcode %#x not allowed (use Close for close frames)", op)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Load() != stOpen || c.closeReq.Load() {
		return ErrNotOpen
	}
	return c.writeFrameLocked(op, payload, true)
}

// Close closes the connection: the owning loop sends a close frame (best
// effort) if it is open, closes the socket and calls OnClose(c, nil) (or
// OnClose(c, ErrAborted) if the handshake had not completed). It returns at
// once; later calls do nothing.
func (c *Conn) Close() {
	c.mu.Lock()
	if c.state.Load() == stClosed || c.closeReq.Load() {
		c.mu.Unlock()
		return
	}
	c.closeReq.Store(true)
	c.mu.Unlock()
	c.loop.enqueueClose(c)
}

// sendControl writes a control frame (pong, close) from the loop, best
// effort and regardless of the pending limit.
func (c *Conn) sendControl(op byte, payload []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Load() == stClosed {
		return nil
	}
	return c.writeFrameLocked(op, payload, false)
}

// writeFrameLocked appends the frame to pending if bytes are already queued,
// or writes it and queues what the socket did not take. c.mu must be held and
// the conn not closed.
func (c *Conn) writeFrameLocked(op byte, payload []byte, limit bool) error {
	if len(c.pending) > 0 {
		if limit && len(c.pending)+frameLen(len(payload)) > c.loop.cl.maxPending {
			return ErrSendBufferFull
		}
		c.pending = appendFrame(c.pending, op, payload)
		return nil
	}
	bp := getBuf(frameLen(len(payload)))
	b := appendFrame((*bp)[:0], op, payload)
	w, err := writeSome(int(c.fd), b)
	if w < len(b) && (err == nil || err == unix.EAGAIN) {
		c.pending = append(make([]byte, 0, len(b)-w), b[w:]...)
	}
	putBuf(bp, b)
	if err != nil && err != unix.EAGAIN {
		return fmt.Errorf("wsc: write: %w", err)
	}
	return nil
}

// flushLocked writes pending; it returns nil when the socket did not take all
// of it (EAGAIN) — EPOLLOUT will tell when to go on.
func (c *Conn) flushLocked() error {
	if len(c.pending) == 0 {
		return nil
	}
	w, err := writeSome(int(c.fd), c.pending)
	if err != nil && err != unix.EAGAIN {
		return fmt.Errorf("wsc: write: %w", err)
	}
	if w == len(c.pending) {
		c.pending = nil // an idle conn holds no buffer
	} else {
		c.pending = c.pending[w:]
	}
	return nil
}

// writeSome writes b until done or EAGAIN (or another error).
func writeSome(fd int, b []byte) (int, error) {
	off := 0
	for off < len(b) {
		n, err := unix.Write(fd, b[off:])
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return off, err
		}
		if n <= 0 {
			return off, unix.EAGAIN
		}
		off += n
	}
	return off, nil
}

// frameLen is the size of a masked client frame carrying n bytes.
func frameLen(n int) int {
	switch {
	case n <= 125:
		return 6 + n
	case n <= 0xFFFF:
		return 8 + n
	default:
		return 14 + n
	}
}

// appendFrame appends a final, masked frame (RFC 6455 section 5.3) to dst.
func appendFrame(dst []byte, op byte, payload []byte) []byte {
	n := len(payload)
	b0 := 0x80 | op
	switch {
	case n <= 125:
		dst = append(dst, b0, 0x80|byte(n))
	case n <= 0xFFFF:
		dst = append(dst, b0, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	key := rand.Uint32()
	dst = binary.LittleEndian.AppendUint32(dst, key)
	start := len(dst)
	dst = append(dst, payload...)
	maskBytes(key, dst[start:])
	return dst
}

// maskBytes XORs b with the mask whose bytes are key's little-endian bytes,
// starting at mask position 0.
func maskBytes(key uint32, b []byte) {
	k := uint64(key) | uint64(key)<<32
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k)
		b = b[8:]
	}
	for i := range b {
		b[i] ^= byte(key >> (8 * (i & 3)))
	}
}

const maxPooledBuf = 64<<10 + 14

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf(n int) *[]byte {
	if n > maxPooledBuf {
		b := make([]byte, 0, n)
		return &b
	}
	bp := bufPool.Get().(*[]byte)
	if cap(*bp) < n {
		*bp = make([]byte, 0, n)
	}
	return bp
}

func putBuf(bp *[]byte, used []byte) {
	if cap(used) <= maxPooledBuf {
		*bp = used[:0]
		bufPool.Put(bp)
	}
}
