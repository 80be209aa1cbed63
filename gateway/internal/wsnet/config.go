package wsnet

import (
	"log/slog"
	"time"
)

// Config tunes the WebSocket side of the shared HTTP/WebSocket port. A zero field
// takes the default named in its comment, so Config{} is a complete production setup.
type Config struct {
	// Path is the request path (query excluded) whose upgrade requests are served as
	// WebSockets; every other request goes to Hertz. Default "/ws". A missing leading
	// slash is added.
	Path string

	// MaxFrame bounds one inbound message after its fragments are reassembled, in
	// bytes. A frame whose header announces more is answered with close 1009 before
	// its payload is buffered. Outbound messages are not limited. Default 64 KiB.
	MaxFrame int

	// HandshakeTimeout is how long an accepted connection has, from accept, to be
	// classified: to send a request that is not for Path (it then belongs to Hertz and
	// its timeouts) or the whole head of one that is. A connection still unclassified
	// then, including one that never sent a byte, is closed (within one sweeper tick)
	// and counted in Stats.HandshakeTimeouts. It also bounds the ctx given to
	// Handler.Authorize. Default 5s.
	HandshakeTimeout time.Duration

	// ReadTimeout is how long the rest of a frame may take once its first byte has
	// arrived (slowloris defence); the connection is then closed with 1008. Nothing
	// waits between frames. Default 10s.
	ReadTimeout time.Duration

	// WriteTimeout bounds one blocked socket write; a write that cannot finish in
	// time closes the connection. Default 5s.
	WriteTimeout time.Duration

	// PingInterval is the period of server-sent RFC 6455 ping control frames.
	// Default 30s.
	PingInterval time.Duration

	// IdleTimeout closes (1001 "idle timeout") a connection from which nothing at all
	// (no frame, no pong) arrived for this long. Default 90s.
	IdleTimeout time.Duration

	// SendQueue is the number of outbound frames a connection may have waiting. A
	// Send that finds it full returns ErrQueueFull and closes the connection with
	// 1013 "try again later". Default 256.
	SendQueue int

	// MaxHandshakes caps upgrade requests being read or authorized at the same time;
	// one over the cap is answered 503 at once. Default 1024.
	MaxHandshakes int

	// MaxConns caps the TCP connections the server holds at once: WebSockets, HTTP
	// keep-alives and connections not yet classified. A connection accepted over the
	// cap is closed at once and counted in Stats.Refused, so that a flood of
	// connections cannot use up the file descriptors the rest of the process (RPC
	// clients, store, etcd, admin) needs. Zero means no cap.
	MaxConns int

	// CloseGrace is how long the peer has to answer a close frame the server sent
	// before the TCP connection is closed anyway; Shutdown waits at most this long
	// for the close handshakes. Default 1s.
	CloseGrace time.Duration

	// Log receives the rare failures that reach no client (an upgrade whose socket
	// could not be moved to the poller). Default slog.Default().
	Log *slog.Logger
}

// Defaults used for zero Config fields.
const (
	DefaultPath             = "/ws"
	DefaultMaxFrame         = 64 << 10
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultReadTimeout      = 10 * time.Second
	DefaultWriteTimeout     = 5 * time.Second
	DefaultPingInterval     = 30 * time.Second
	DefaultIdleTimeout      = 90 * time.Second
	DefaultSendQueue        = 256
	DefaultMaxHandshakes    = 1024
	DefaultCloseGrace       = time.Second
)

// withDefaults returns c with every zero (or negative) field replaced by its default.
func (c Config) withDefaults() Config {
	if c.Path == "" {
		c.Path = DefaultPath
	}
	if c.Path[0] != '/' {
		c.Path = "/" + c.Path
	}
	if c.MaxFrame <= 0 {
		c.MaxFrame = DefaultMaxFrame
	}
	dur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	dur(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	dur(&c.ReadTimeout, DefaultReadTimeout)
	dur(&c.WriteTimeout, DefaultWriteTimeout)
	dur(&c.PingInterval, DefaultPingInterval)
	dur(&c.IdleTimeout, DefaultIdleTimeout)
	dur(&c.CloseGrace, DefaultCloseGrace)
	if c.SendQueue <= 0 {
		c.SendQueue = DefaultSendQueue
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = DefaultMaxHandshakes
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c
}

// tick is the sweeper period: fine enough that pings, idle closes, close-grace and
// handshake expiries happen within a quarter of their interval, never busier than
// 5 ms and never coarser than 1 s.
func (c Config) tick() time.Duration {
	t := min(c.PingInterval, c.IdleTimeout, c.CloseGrace, c.HandshakeTimeout) / 4
	return max(5*time.Millisecond, min(t, time.Second))
}
