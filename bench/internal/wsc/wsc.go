//go:build linux

// Package wsc is a frugal WebSocket client for load generation.
//
// A Client runs a few epoll loops (one goroutine each) over raw non-blocking
// sockets; a connection costs no goroutine and, once open and idle, only a
// small Conn struct (plus a slot in its loop's fd table). All reads go through
// the loop's shared scratch buffer: a connection keeps its own buffer only while
// a frame is split across reads or a fragmented message is being reassembled,
// and only while it has unsent bytes queued.
//
// Sockets are registered edge-triggered (EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET)
// once, at Dial: EPOLLOUT reports the end of the connect and, later, that a
// socket whose send buffer had filled up can take the queued bytes.
//
// A loop's epoll fd sits in the Go runtime's own poller: an idle loop parks its
// goroutine rather than a thread in epoll_wait, and polls its set without
// blocking once woken. A thread blocked in epoll_wait is what the runtime's
// monitor retakes a P from every 20 µs under load; one message to 10,000
// sockets cost the harness 5.5–7.2 µs of CPU per delivery that way, 3.9–5.8
// parked.
//
// Callbacks run on the loop goroutine that owns the connection and must not
// block for long: they delay every other connection of that loop. They may call
// Conn.Send and Conn.Close (and Client.Dial), but not Client.Close.
package wsc

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Opcodes (RFC 6455 section 5.2).
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
	OpPing         = 0x9
	OpPong         = 0xA
)

// Close codes used by the client.
const (
	CloseNormal        = 1000
	CloseNoStatus      = 1005 // reported when a close frame carries no code
	CloseProtocolError = 1002
	CloseMessageTooBig = 1009
)

// Handler receives the events of every connection of a Client. All methods
// are called on the loop goroutine owning the connection.
type Handler interface {
	// OnOpen is called once the 101 has been received and validated; c may
	// Send from now on.
	OnOpen(c *Conn)
	// OnMessage is called for every text or binary message (fragmented ones
	// are reassembled). payload is only valid during the call.
	OnMessage(c *Conn, op byte, payload []byte)
	// OnClose is called exactly once for every Dial that returned a nil error:
	// after a connect or handshake failure (see HandshakeError), a handshake
	// timeout (ErrHandshakeTimeout), a close frame from the peer (*CloseError),
	// a protocol or I/O error, or a local close. err is nil only for a local
	// close (Conn.Close, Client.Close) of an open connection; a local close
	// before the 101 reports ErrAborted.
	OnClose(c *Conn, err error)
}

// Config configures a Client. The zero value is usable.
type Config struct {
	// Loops is the number of epoll loops (goroutines); default GOMAXPROCS.
	Loops int
	// SourceIPs are IPv4 addresses bound before connect, used round-robin;
	// empty lets the kernel choose. The port is left to connect()
	// (IP_BIND_ADDRESS_NO_PORT), so each source/destination pair gets the
	// whole ephemeral port range.
	SourceIPs []netip.Addr
	// HandshakeTimeout bounds connect + 101; default 10s, negative disables.
	// It is checked by the loops about every 100 ms.
	HandshakeTimeout time.Duration
	// ReadBufferSize is the per-read scratch buffer, shared by the
	// connections of a loop; default 64 KiB.
	ReadBufferSize int
	// MaxMessageSize bounds a received message (and a single frame);
	// default 16 MiB. Bigger ones close the connection with code 1009.
	MaxMessageSize int
	// MaxPendingBytes bounds the bytes a connection may hold unsent when the
	// socket does not take them; default 16 MiB. When bytes are already
	// queued, Send returns ErrSendBufferFull (and queues nothing) for a frame
	// that would exceed it. (The rest of a frame that found the queue empty
	// is always kept, as are pongs and close frames.)
	MaxPendingBytes int
}

// Stats are counters of a Client.
type Stats struct {
	Dialed     uint64 // Dial calls that returned nil
	DialErrors uint64 // Dial calls that returned an error (no callbacks)
	Dialing    int64  // connections between Dial and 101 (or failure)
	Open       int64  // connections currently open
	Closed     uint64 // connections closed after having been open
	Failed     uint64 // connections closed before the 101 (dial/handshake failure, timeout, abort)
}

var (
	// ErrClientClosed is returned by Dial after Client.Close.
	ErrClientClosed = errors.New("wsc: client closed")
	// ErrNotOpen is returned by Send on a connection that is not open
	// (handshake not done yet, closing or closed).
	ErrNotOpen = errors.New("wsc: connection not open")
	// ErrSendBufferFull is returned by Send when the unsent bytes of the
	// connection would exceed Config.MaxPendingBytes; the frame is dropped.
	ErrSendBufferFull = errors.New("wsc: send buffer full")
	// ErrHandshakeTimeout is wrapped by the OnClose error of a connection
	// that did not complete its handshake within Config.HandshakeTimeout.
	ErrHandshakeTimeout = errors.New("wsc: handshake timeout")
	// ErrAborted is the OnClose error of a connection closed locally before
	// its handshake completed.
	ErrAborted = errors.New("wsc: closed locally before the handshake completed")
	// ErrProtocol is wrapped by the OnClose error of a connection closed
	// because the server broke RFC 6455.
	ErrProtocol = errors.New("wsc: protocol error")
)

// HandshakeError reports a response other than a valid 101.
type HandshakeError struct {
	StatusCode int    // 0 if the status line could not be parsed
	Status     string // the status line, e.g. "HTTP/1.1 401 Unauthorized"
	Reason     string // why a 101 was refused; empty for other statuses
}

func (e *HandshakeError) Error() string {
	if e.Reason != "" {
		return "wsc: handshake: " + e.Status + ": " + e.Reason
	}
	return "wsc: handshake: " + e.Status
}

// CloseError reports a close frame received from the server.
type CloseError struct {
	Code   int // CloseNoStatus (1005) when the frame carried no code
	Reason string
}

func (e *CloseError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("wsc: closed by peer: code %d", e.Code)
	}
	return fmt.Sprintf("wsc: closed by peer: code %d: %s", e.Code, e.Reason)
}

// Client owns the epoll loops and the connections dialed through it.
type Client struct {
	h          Handler
	loops      []*loop
	srcs       [][4]byte
	hsTimeout  time.Duration
	maxMsg     int
	maxPending int
	epoch      time.Time // monotonic base of the per-conn timestamps

	nextLoop atomic.Uint64
	nextSrc  atomic.Uint64
	seq      atomic.Uint32

	dialed     atomic.Uint64
	dialErrors atomic.Uint64
	dialing    atomic.Int64
	open       atomic.Int64
	closed     atomic.Uint64
	failed     atomic.Uint64

	closing   atomic.Bool
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// New starts the loops of a Client.
func New(cfg Config, h Handler) (*Client, error) {
	if h == nil {
		return nil, errors.New("wsc: nil Handler")
	}
	if cfg.Loops <= 0 {
		cfg.Loops = runtime.GOMAXPROCS(0)
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.ReadBufferSize <= 0 {
		cfg.ReadBufferSize = 64 << 10
	}
	if cfg.ReadBufferSize < 1024 {
		cfg.ReadBufferSize = 1024
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = 16 << 20
	}
	if cfg.MaxPendingBytes <= 0 {
		cfg.MaxPendingBytes = 16 << 20
	}
	cl := &Client{
		h:          h,
		hsTimeout:  cfg.HandshakeTimeout,
		maxMsg:     cfg.MaxMessageSize,
		maxPending: cfg.MaxPendingBytes,
		epoch:      time.Now(),
	}
	for _, a := range cfg.SourceIPs {
		a = a.Unmap()
		if !a.Is4() {
			return nil, fmt.Errorf("wsc: source address %v: only IPv4 is supported", a)
		}
		cl.srcs = append(cl.srcs, a.As4())
	}
	for i := 0; i < cfg.Loops; i++ {
		l, err := newLoop(cl, cfg.ReadBufferSize)
		if err != nil {
			for _, l := range cl.loops {
				l.closeFds()
			}
			return nil, err
		}
		cl.loops = append(cl.loops, l)
	}
	cl.wg.Add(len(cl.loops))
	for _, l := range cl.loops {
		go l.run()
	}
	return cl, nil
}

// now is the monotonic time since cl.epoch, at least 1.
func (cl *Client) now() int64 {
	return max(int64(time.Since(cl.epoch)), 1)
}

// Dial starts a connection to addr and returns at once: the socket is created,
// bound to the next source address, connect() is started and the socket is
// handed to a loop, which sends the upgrade request
//
//	GET <pathAndQuery> HTTP/1.1 / Host: <host> / Upgrade, Connection, Sec-WebSocket-Key/Version
//
// and validates the 101. An error means nothing was started and no callback
// will follow (socket or bind failure, EMFILE, immediate connect error, closed
// client). Otherwise exactly one OnClose follows, possibly before Dial
// returns (as may OnOpen): keep per-connection state in data rather than in a
// map filled after Dial. host defaults to addr, pathAndQuery to "/".
func (cl *Client) Dial(addr netip.AddrPort, host, pathAndQuery string, data any) (*Conn, error) {
	c, err := cl.dial(addr, host, pathAndQuery, data)
	if err != nil {
		cl.dialErrors.Add(1)
		return nil, err
	}
	return c, nil
}

func (cl *Client) dial(addr netip.AddrPort, host, pathAndQuery string, data any) (*Conn, error) {
	if cl.closing.Load() {
		return nil, ErrClientClosed
	}
	ip := addr.Addr().Unmap()
	if !ip.Is4() {
		return nil, fmt.Errorf("wsc: dial %v: only IPv4 is supported", addr)
	}
	if host == "" {
		host = netip.AddrPortFrom(ip, addr.Port()).String()
	}
	if pathAndQuery == "" {
		pathAndQuery = "/"
	}
	if strings.ContainsAny(host, "\r\n ") || strings.ContainsAny(pathAndQuery, "\r\n ") {
		return nil, fmt.Errorf("wsc: dial %v: invalid host or path", addr)
	}

	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("wsc: socket: %w", err)
	}
	fail := func(err error) (*Conn, error) {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return fail(fmt.Errorf("wsc: setsockopt TCP_NODELAY: %w", err))
	}
	if n := uint64(len(cl.srcs)); n > 0 {
		src := cl.srcs[(cl.nextSrc.Add(1)-1)%n]
		// Before bind: the port is then chosen by connect(), per 4-tuple,
		// instead of by bind(), per source address.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1); err != nil {
			return fail(fmt.Errorf("wsc: setsockopt IP_BIND_ADDRESS_NO_PORT: %w", err))
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src}); err != nil {
			return fail(fmt.Errorf("wsc: bind %v: %w", netip.AddrFrom4(src), err))
		}
	}

	c := &Conn{
		fd:       int32(fd),
		seq:      cl.seq.Add(1),
		data:     data,
		dialedAt: cl.now(),
		hs:       new(handshake),
	}
	c.state.Store(stConnecting)
	c.hs.newKey()
	// The request waits in pending until the connect completes (EPOLLOUT).
	c.pending = appendRequest(nil, host, pathAndQuery, c.hs.key[:])

	err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: ip.As4()})
	if err != nil && err != unix.EINPROGRESS && err != unix.EINTR {
		return fail(fmt.Errorf("wsc: connect %v: %w", addr, err))
	}
	l := cl.loops[(cl.nextLoop.Add(1)-1)%uint64(len(cl.loops))]
	c.loop = l
	cl.dialing.Add(1) // before register: the loop may finish the conn at once
	if err := l.register(c); err != nil {
		cl.dialing.Add(-1)
		return fail(err)
	}
	cl.dialed.Add(1)
	return c, nil
}

// Stats returns the client's counters.
func (cl *Client) Stats() Stats {
	return Stats{
		Dialed:     cl.dialed.Load(),
		DialErrors: cl.dialErrors.Load(),
		Dialing:    cl.dialing.Load(),
		Open:       cl.open.Load(),
		Closed:     cl.closed.Load(),
		Failed:     cl.failed.Load(),
	}
}

// Close closes every connection (open ones get a close frame, best effort,
// and OnClose(c, nil); others OnClose(c, ErrAborted)), stops the loops and
// waits for them to exit. Later Dials fail with ErrClientClosed. It must not
// be called from a Handler callback.
func (cl *Client) Close() {
	cl.closeOnce.Do(func() {
		cl.closing.Store(true)
		for _, l := range cl.loops {
			l.wake()
		}
	})
	cl.wg.Wait()
}
