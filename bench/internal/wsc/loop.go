//go:build linux

package wsc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	pollTimeout = 100 * time.Millisecond // longest wait: handshake expiry and Close checks
	maxHeadSize = 4 << 10                // bound on the 101 response head
	maxEvents   = 512
)

// loop is one epoll loop. Conns are found by fd in conns; the epoll data also
// carries the conn's seq so that an event for a closed fd never reaches a
// newer conn that got the same fd.
type loop struct {
	cl   *Client
	epfd int // epf's descriptor, for epoll_ctl (epf.Fd() would make it blocking)
	// epf owns epfd, registered with the Go runtime's poller: the loop's goroutine
	// parks until the epoll set has events instead of blocking a thread in
	// epoll_wait, which the runtime's monitor would otherwise find in a syscall
	// every 20 µs under load and hand its P to another thread (run).
	epf        *os.File
	rc         syscall.RawConn
	evfd       int // eventfd: wakes the loop for Close requests
	scratch    []byte
	events     []unix.EpollEvent
	batch      []*Conn
	expired    []*Conn
	lastExpire int64

	mu      sync.Mutex // guards conns, hsq, stopped (lock order: Conn.mu, then loop.mu)
	conns   []*Conn    // by fd
	hsq     []*Conn    // not yet open, in Dial order (for the handshake timeout)
	stopped bool

	qmu      sync.Mutex // guards closeQ, qstopped and writes to evfd
	closeQ   []*Conn
	qstopped bool
	woken    atomic.Bool
}

func newLoop(cl *Client, readBuf int) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("wsc: epoll_create1: %w", err)
	}
	// Non-blocking, so that os.NewFile registers it with the runtime's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("wsc: epoll fd non-blocking: %w", err)
	}
	epf := os.NewFile(uintptr(epfd), "wsc-epoll")
	rc, err := epf.SyscallConn()
	if err == nil {
		// Fails with os.ErrNoDeadline when the runtime could not poll the fd.
		err = epf.SetReadDeadline(time.Time{})
	}
	if err != nil {
		epf.Close()
		return nil, fmt.Errorf("wsc: epoll fd in the runtime poller: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		epf.Close()
		return nil, fmt.Errorf("wsc: eventfd: %w", err)
	}
	l := &loop{
		cl:      cl,
		epfd:    epfd,
		epf:     epf,
		rc:      rc,
		evfd:    evfd,
		scratch: make([]byte, readBuf),
		events:  make([]unix.EpollEvent, maxEvents),
		batch:   make([]*Conn, maxEvents),
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		l.closeFds()
		return nil, fmt.Errorf("wsc: epoll_ctl eventfd: %w", err)
	}
	return l, nil
}

func (l *loop) closeFds() {
	l.epf.Close() // closes epfd
	unix.Close(l.evfd)
}

// register adds a connecting conn to the loop.
func (l *loop) register(c *Conn) error {
	fd := int(c.fd)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return ErrClientClosed
	}
	if fd >= len(l.conns) {
		n := max(2*len(l.conns), fd+1, 1024)
		conns := make([]*Conn, n)
		copy(conns, l.conns)
		l.conns = conns
	}
	ev := unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET,
		Fd:     c.fd,
		Pad:    int32(c.seq),
	}
	// Under l.mu: the loop cannot stop (and close epfd) meanwhile.
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("wsc: epoll_ctl: %w", err)
	}
	l.conns[fd] = c
	l.hsq = append(l.hsq, c)
	return nil
}

// enqueueClose hands a Close request to the loop.
func (l *loop) enqueueClose(c *Conn) {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	if l.qstopped {
		return // the loop closes every conn on its way out
	}
	l.closeQ = append(l.closeQ, c)
	l.wakeLocked()
}

func (l *loop) wake() {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	if !l.qstopped {
		l.wakeLocked()
	}
}

func (l *loop) wakeLocked() {
	if l.woken.CompareAndSwap(false, true) {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(l.evfd, one[:]) // EAGAIN only if the counter is huge: already woken
	}
}

func (l *loop) run() {
	defer l.cl.wg.Done()
	var fatal error
	_ = l.epf.SetReadDeadline(time.Now().Add(pollTimeout))
	for !l.cl.closing.Load() {
		n, err := l.wait()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			_ = l.epf.SetReadDeadline(time.Now().Add(pollTimeout))
		} else if err != nil {
			fatal = err
			break
		}
		if n > 0 {
			l.dispatch(l.events[:n])
		}
		l.drainCloseQueue()
		l.expireHandshakes()
	}
	l.shutdown(fatal)
}

// wait returns the epoll set's ready events, parking the goroutine (not its
// thread) while there are none, until pollTimeout's deadline. The poll itself
// never blocks, so it skips the scheduler's syscall bookkeeping.
func (l *loop) wait() (n int, err error) {
	var werr error
	err = l.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 0, 0, 0)
			switch e {
			case 0:
				n = int(r)
				return n > 0
			case unix.EINTR:
				continue
			default:
				werr = fmt.Errorf("wsc: epoll_pwait: %w", e)
				return true
			}
		}
	})
	if werr != nil {
		return 0, werr
	}
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, fmt.Errorf("wsc: wait on the epoll fd: %w", err)
	}
	return n, err
}

func (l *loop) dispatch(evs []unix.EpollEvent) {
	// Resolve the whole batch first, under one lock. A conn closed while
	// handling an earlier event of the batch is seen as closed below.
	l.mu.Lock()
	for i := range evs {
		var c *Conn
		if fd := int(evs[i].Fd); fd != l.evfd && fd < len(l.conns) {
			if c = l.conns[fd]; c != nil && c.seq != uint32(evs[i].Pad) {
				c = nil
			}
		}
		l.batch[i] = c
	}
	l.mu.Unlock()
	for i := range evs {
		c := l.batch[i]
		l.batch[i] = nil
		if int(evs[i].Fd) == l.evfd {
			l.drainWake()
			continue
		}
		if c != nil {
			l.handle(c, evs[i].Events)
		}
	}
}

func (l *loop) drainWake() {
	l.woken.Store(false)
	var buf [8]byte
	for {
		_, err := unix.Read(l.evfd, buf[:])
		if err != unix.EINTR {
			return
		}
	}
}

// alive reports whether the loop should go on processing c.
func alive(c *Conn) bool {
	return c.state.Load() != stClosed && !c.closeReq.Load()
}

func (l *loop) handle(c *Conn, events uint32) {
	if !alive(c) {
		return
	}
	if c.state.Load() == stConnecting {
		if events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		// A failed connect reports EPOLLERR; writable alone means it completed,
		// and SO_ERROR need not be read (a syscall per dial in a storm).
		if events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			if err := l.connected(c); err != nil {
				l.closeConn(c, err, false)
				return
			}
		}
		c.state.Store(stHandshaking)
		events |= unix.EPOLLOUT // send the request
	}
	if events&unix.EPOLLOUT != 0 {
		c.mu.Lock()
		err := c.flushLocked()
		c.mu.Unlock()
		if err != nil {
			l.closeConn(c, err, false)
			return
		}
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		if !l.readAll(c, events) {
			return
		}
	}
	if events&(unix.EPOLLHUP|unix.EPOLLERR) != 0 && alive(c) {
		l.closeConn(c, sockError(c, "connection closed"), false)
	}
}

// connected checks the outcome of a connect() that reported an error or hangup;
// the request is already in pending.
func (l *loop) connected(c *Conn) error {
	v, err := unix.GetsockoptInt(int(c.fd), unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return fmt.Errorf("wsc: connect: getsockopt SO_ERROR: %w", err)
	}
	if v != 0 {
		return fmt.Errorf("wsc: connect: %w", syscall.Errno(v))
	}
	return nil
}

// sockError returns the socket's pending error, or an EOF error.
func sockError(c *Conn, what string) error {
	if v, err := unix.GetsockoptInt(int(c.fd), unix.SOL_SOCKET, unix.SO_ERROR); err == nil && v != 0 {
		return fmt.Errorf("wsc: %s: %w", what, syscall.Errno(v))
	}
	return eofError(c)
}

func eofError(c *Conn) error {
	if c.state.Load() != stOpen {
		return fmt.Errorf("wsc: handshake: connection closed by peer before the response: %w", io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("wsc: connection closed by peer without a close frame: %w", io.ErrUnexpectedEOF)
}

// readAll reads until EAGAIN (edge-triggered) and processes the bytes. It
// returns false if c is closed or closing.
func (l *loop) readAll(c *Conn, events uint32) bool {
	for {
		// recvfrom, not read: it skips the VFS layer. During fan-out probes
		// read(2) was 45% of the harness's CPU, 19.8 points of it around
		// tcp_recvmsg; recvfrom(2) costs 12.5 points around it (perf).
		n, _, err := unix.Recvfrom(int(c.fd), l.scratch, unix.MSG_DONTWAIT)
		if err != nil {
			switch err {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return true
			}
			l.closeConn(c, fmt.Errorf("wsc: read: %w", err), false)
			return false
		}
		if n == 0 {
			l.closeConn(c, eofError(c), false)
			return false
		}
		if !l.consume(c, l.scratch[:n]) {
			return false
		}
		// A short read drained the socket: more data means a new edge. After
		// RDHUP/HUP/ERR read on to see the EOF or error.
		if n < len(l.scratch) && events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) == 0 {
			return true
		}
	}
}

// consume processes bytes read from c. It returns false if c is closed or
// closing.
func (l *loop) consume(c *Conn, data []byte) bool {
	if c.state.Load() == stHandshaking {
		rest, done, err := l.handshakeData(c, data)
		if err != nil {
			l.closeConn(c, err, false)
			return false
		}
		if !done {
			return true
		}
		c.hs = nil
		c.openedAt.Store(l.cl.now())
		c.state.Store(stOpen)
		l.cl.dialing.Add(-1)
		l.cl.open.Add(1)
		l.cl.h.OnOpen(c)
		if !alive(c) {
			return false
		}
		data = rest
		if len(data) == 0 {
			return true
		}
	}
	return l.frames(c, data)
}

var crlfcrlf = []byte("\r\n\r\n")

// handshakeData accumulates the response head; done reports a valid 101,
// rest the bytes after it.
func (l *loop) handshakeData(c *Conn, data []byte) (rest []byte, done bool, err error) {
	hs := c.hs
	buf := data
	if len(hs.head) > 0 {
		hs.head = append(hs.head, data...)
		buf = hs.head
	}
	end := bytes.Index(buf, crlfcrlf)
	if end < 0 || end > maxHeadSize {
		if len(buf) > maxHeadSize {
			return nil, false, &HandshakeError{Status: statusLine(buf), Reason: "response head too large"}
		}
		if len(hs.head) == 0 {
			hs.head = append(make([]byte, 0, 512), data...)
		}
		return nil, false, nil
	}
	if err := checkResponse(buf[:end+2], hs.key[:]); err != nil {
		return nil, false, err
	}
	return buf[end+4:], true, nil
}

func statusLine(head []byte) string {
	if i := bytes.Index(head, crlfcrlf[:2]); i >= 0 {
		head = head[:i]
	}
	if len(head) > 200 {
		head = head[:200]
	}
	return string(head)
}

// checkResponse validates a response head (status line and header lines,
// each ending with CRLF).
func checkResponse(head, key []byte) error {
	i := bytes.Index(head, crlfcrlf[:2])
	status := head[:i]
	if len(status) < 12 || !bytes.HasPrefix(status, []byte("HTTP/1.")) || status[8] != ' ' ||
		(len(status) > 12 && status[12] != ' ') {
		return &HandshakeError{Status: string(status), Reason: "malformed status line"}
	}
	code := 0
	for _, d := range status[9:12] {
		if d < '0' || d > '9' {
			return &HandshakeError{Status: string(status), Reason: "malformed status line"}
		}
		code = code*10 + int(d-'0')
	}
	if code != 101 {
		return &HandshakeError{StatusCode: code, Status: string(status)}
	}
	want := expectedAccept(key)
	var upgrade, connection, accept bool
	for rest := head[i+2:]; len(rest) > 0; {
		j := bytes.Index(rest, crlfcrlf[:2])
		line := rest[:j]
		rest = rest[j+2:]
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue
		}
		name := bytes.TrimSpace(line[:colon])
		val := bytes.TrimSpace(line[colon+1:])
		switch {
		case bytes.EqualFold(name, []byte("Upgrade")):
			upgrade = bytes.EqualFold(val, []byte("websocket"))
		case bytes.EqualFold(name, []byte("Connection")):
			for tok := range bytes.SplitSeq(val, []byte(",")) {
				if bytes.EqualFold(bytes.TrimSpace(tok), []byte("upgrade")) {
					connection = true
				}
			}
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Accept")):
			accept = bytes.Equal(val, want[:])
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Extensions")):
			if len(val) > 0 {
				return &HandshakeError{StatusCode: code, Status: string(status), Reason: "unrequested extension " + string(val)}
			}
		}
	}
	switch {
	case !upgrade:
		return &HandshakeError{StatusCode: code, Status: string(status), Reason: "missing Upgrade: websocket"}
	case !connection:
		return &HandshakeError{StatusCode: code, Status: string(status), Reason: "missing Connection: Upgrade"}
	case !accept:
		return &HandshakeError{StatusCode: code, Status: string(status), Reason: "missing or wrong Sec-WebSocket-Accept"}
	}
	return nil
}

// frames parses server frames from data, preceded by c.rbuf if a frame was
// split. What is left of an incomplete frame is copied to c.rbuf.
func (l *loop) frames(c *Conn, data []byte) bool {
	buf := data
	if len(c.rbuf) > 0 {
		c.rbuf = append(c.rbuf, data...)
		buf = c.rbuf
	}
	need := 0 // size of the incomplete frame at buf, if its header is complete
	for len(buf) > 0 {
		fin, op, hlen, plen, err := parseHeader(buf, l.cl.maxMsg)
		if err != nil {
			l.protocolError(c, err)
			return false
		}
		if hlen == 0 || hlen+plen > len(buf) {
			if hlen > 0 {
				need = hlen + plen
			}
			break
		}
		if !l.frame(c, fin, op, buf[hlen:hlen+plen]) {
			return false
		}
		buf = buf[hlen+plen:]
	}
	switch {
	case len(buf) == 0:
		c.rbuf = nil
	case len(c.rbuf) > 0 && len(buf) == len(c.rbuf):
		// rbuf still holds exactly the incomplete frame
	default:
		// Copy the incomplete frame (out of scratch, or to the front of a new
		// rbuf sized for the whole frame).
		nb := make([]byte, len(buf), max(need, len(buf), 16))
		copy(nb, buf)
		c.rbuf = nb
	}
	return true
}

// parseHeader parses a server frame header; hlen == 0 means it is incomplete.
func parseHeader(b []byte, maxMsg int) (fin bool, op byte, hlen, plen int, err error) {
	if len(b) < 2 {
		return
	}
	b0, b1 := b[0], b[1]
	fin, op = b0&0x80 != 0, b0&0x0F
	if b0&0x70 != 0 {
		return false, 0, 0, 0, errors.New("reserved bits set")
	}
	if b1&0x80 != 0 {
		return false, 0, 0, 0, errors.New("masked frame from server")
	}
	var n uint64
	switch l7 := b1 & 0x7F; l7 {
	case 126:
		if len(b) < 4 {
			return false, 0, 0, 0, nil
		}
		n, hlen = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return false, 0, 0, 0, nil
		}
		n, hlen = binary.BigEndian.Uint64(b[2:]), 10
	default:
		n, hlen = uint64(l7), 2
	}
	if op >= 8 && (!fin || n > 125) {
		return false, 0, 0, 0, errors.New("fragmented or oversized control frame")
	}
	if n > uint64(maxMsg) {
		return false, 0, 0, 0, errTooBig
	}
	return fin, op, hlen, int(n), nil
}

var errTooBig = errors.New("message too big")

// frame handles one complete frame. It returns false if c is closed or
// closing.
func (l *loop) frame(c *Conn, fin bool, op byte, payload []byte) bool {
	switch op {
	case OpText, OpBinary:
		if c.fragOp != 0 {
			l.protocolError(c, errors.New("data frame inside a fragmented message"))
			return false
		}
		if fin {
			l.cl.h.OnMessage(c, op, payload)
			return alive(c)
		}
		c.fragOp = op
		c.frag = append(make([]byte, 0, 2*len(payload)), payload...)
	case OpContinuation:
		if c.fragOp == 0 {
			l.protocolError(c, errors.New("continuation frame without a start"))
			return false
		}
		if len(c.frag)+len(payload) > l.cl.maxMsg {
			l.protocolError(c, errTooBig)
			return false
		}
		c.frag = append(c.frag, payload...)
		if fin {
			op, msg := c.fragOp, c.frag
			c.fragOp, c.frag = 0, nil
			l.cl.h.OnMessage(c, op, msg)
			return alive(c)
		}
	case OpPing:
		if err := c.sendControl(OpPong, payload); err != nil {
			l.closeConn(c, err, false)
			return false
		}
	case OpPong:
	case OpClose:
		ce := &CloseError{Code: CloseNoStatus}
		var reply []byte
		switch {
		case len(payload) == 1:
			l.protocolError(c, errors.New("close frame with a 1-byte payload"))
			return false
		case len(payload) >= 2:
			ce.Code = int(binary.BigEndian.Uint16(payload))
			ce.Reason = string(payload[2:])
			reply = payload[:2]
		}
		c.sendControl(OpClose, reply) // best effort: the socket is closed next
		l.closeConn(c, ce, false)
		return false
	default:
		l.protocolError(c, fmt.Errorf("reserved opcode %#x", op))
		return false
	}
	return true
}

// protocolError sends a close frame (1002, or 1009 for a too big message)
// and closes c.
func (l *loop) protocolError(c *Conn, err error) {
	code := CloseProtocolError
	if errors.Is(err, errTooBig) {
		code = CloseMessageTooBig
	}
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], uint16(code))
	c.sendControl(OpClose, p[:])
	l.closeConn(c, fmt.Errorf("%w: %w", ErrProtocol, err), false)
}

// closeConn closes c's socket and calls OnClose, once. local marks a Close
// request: an open conn then gets a close frame (best effort) and err is nil;
// a conn not open yet gets ErrAborted.
func (l *loop) closeConn(c *Conn, err error, local bool) {
	c.mu.Lock()
	prev := c.state.Load()
	if prev == stClosed {
		c.mu.Unlock()
		return
	}
	if local {
		if prev == stOpen {
			err = nil
			c.writeFrameLocked(OpClose, []byte{CloseNormal >> 8, CloseNormal & 0xFF}, false)
		} else {
			err = ErrAborted
		}
	}
	if prev == stOpen && len(c.pending) > 0 {
		c.flushLocked() // best effort, once: a close frame may be queued
	}
	c.state.Store(stClosed)
	c.pending = nil
	fd := int(c.fd)
	// Out of the table before close(): afterwards fd may be reused by a Dial.
	l.mu.Lock()
	if fd < len(l.conns) && l.conns[fd] == c {
		l.conns[fd] = nil
	}
	l.mu.Unlock()
	unix.Close(fd)
	c.mu.Unlock()
	c.hs, c.rbuf, c.frag, c.fragOp = nil, nil, nil, 0
	if prev == stOpen {
		l.cl.open.Add(-1)
		l.cl.closed.Add(1)
	} else {
		l.cl.dialing.Add(-1)
		l.cl.failed.Add(1)
	}
	l.cl.h.OnClose(c, err)
}

func (l *loop) drainCloseQueue() {
	l.qmu.Lock()
	q := l.closeQ
	l.closeQ = nil
	l.qmu.Unlock()
	for i, c := range q {
		l.closeConn(c, nil, true)
		q[i] = nil
	}
}

func (l *loop) expireHandshakes() {
	timeout := l.cl.hsTimeout
	if timeout <= 0 {
		return
	}
	now := l.cl.now()
	if now-l.lastExpire < int64(10*time.Millisecond) {
		return
	}
	l.lastExpire = now
	l.mu.Lock()
	for len(l.hsq) > 0 {
		c := l.hsq[0]
		if st := c.state.Load(); st != stOpen && st != stClosed && now-c.dialedAt < int64(timeout) {
			break
		} else if st != stOpen && st != stClosed {
			l.expired = append(l.expired, c)
		}
		l.hsq[0] = nil
		l.hsq = l.hsq[1:]
	}
	if len(l.hsq) == 0 {
		l.hsq = nil
	}
	l.mu.Unlock()
	for i, c := range l.expired {
		what := "connecting"
		if c.state.Load() == stHandshaking {
			what = "waiting for the 101"
		}
		l.closeConn(c, fmt.Errorf("%w after %v (%s)", ErrHandshakeTimeout, timeout, what), false)
		l.expired[i] = nil
	}
	l.expired = l.expired[:0]
}

// shutdown closes every conn of the loop and its fds.
func (l *loop) shutdown(fatal error) {
	l.qmu.Lock()
	l.qstopped = true
	l.closeQ = nil
	l.qmu.Unlock()
	l.mu.Lock()
	l.stopped = true
	var all []*Conn
	for _, c := range l.conns {
		if c != nil {
			all = append(all, c)
		}
	}
	l.hsq = nil
	l.mu.Unlock()
	for _, c := range all {
		if fatal != nil {
			l.closeConn(c, fatal, false)
		} else {
			l.closeConn(c, nil, true)
		}
	}
	l.mu.Lock()
	l.conns = nil
	l.mu.Unlock()
	l.closeFds()
}
