package wsnet

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/cloudwego/hertz/pkg/common/config"
	"github.com/cloudwego/hertz/pkg/common/hlog"
	"github.com/cloudwego/hertz/pkg/network"
	hnetpoll "github.com/cloudwego/hertz/pkg/network/netpoll"
	"github.com/cloudwego/netpoll"

	"github.com/gochat/gochat/pollnet"
)

// Transport builds the Hertz transport for this Server; pass the method value to
// server.WithTransport. It takes the listener, timeouts and hooks from Hertz's options
// exactly as Hertz's stock netpoll transport does (Listener or Network/Addr,
// ReadTimeout, WriteTimeout, KeepAliveTimeout, OnAccept, OnConnect,
// SenseClientDisconnection). TLS is not supported, as with stock netpoll.
func (s *Server) Transport(opts *config.Options) network.Transporter {
	return &transporter{
		srv:          s,
		network:      opts.Network,
		addr:         opts.Addr,
		ln:           opts.Listener,
		listenConfig: opts.ListenConfig,
		readTimeout:  opts.ReadTimeout,
		writeTimeout: opts.WriteTimeout,
		keepAlive:    opts.KeepAliveTimeout,
		onAccept:     opts.OnAccept,
		onConnect:    opts.OnConnect,
		sense:        opts.SenseClientDisconnection,
	}
}

// transporter implements network.Transporter for Hertz: a netpoll event loop whose
// OnRequest routes each connection to the WebSocket path or to Hertz.
type transporter struct {
	srv *Server

	// Copied from Hertz's options at construction; read-only afterwards.
	network, addr string
	listenConfig  *net.ListenConfig
	readTimeout   time.Duration
	writeTimeout  time.Duration
	keepAlive     time.Duration
	onAccept      func(conn net.Conn) context.Context
	onConnect     func(ctx context.Context, conn network.Conn) context.Context
	sense         bool

	mu sync.RWMutex // guards ln
	ln net.Listener // Hertz's listener, or the one ListenAndServe opened
	// onData is Hertz's handler, set once before the event loop starts.
	onData network.OnData
}

// slotKey keys the per-connection *slot in the netpoll connection context.
type slotKey struct{}

// slot is the routing state of one accepted connection. Only the connection's
// OnRequest task touches ws and http, and netpoll runs at most one such task at a
// time. pend is shared with the sweeper and the close callback under its own rules
// (pending.go).
type slot struct {
	ws   bool // set at upgrade: the socket left netpoll for a Conn
	http bool // handed to Hertz
	pend pendingConn
}

// cancelKey carries the cancel func for SenseClientDisconnection (stock behaviour).
type cancelKey struct{}

// Listener returns the listening socket; Hertz uses it to tell whether it is running.
func (t *transporter) Listener() net.Listener {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.ln
}

// ListenAndServe runs the event loop on the listener until Shutdown or Close.
func (t *transporter) ListenAndServe(onData network.OnData) error {
	network.UnlinkUdsFile(t.network, t.addr) //nolint:errcheck // stock does the same
	t.mu.Lock()
	if t.ln == nil {
		var err error
		if t.listenConfig != nil {
			t.ln, err = t.listenConfig.Listen(context.Background(), t.network, t.addr)
		} else {
			t.ln, err = net.Listen(t.network, t.addr)
		}
		if err != nil {
			t.mu.Unlock()
			return err
		}
	}
	ln := t.ln
	t.onData = onData
	t.mu.Unlock()

	// No netpoll.WithIdleTimeout: stock turns TCP keepalive on at accept, three
	// setsockopts per connection (4% of a connect storm's CPU). serveHTTP turns it on
	// for the connections Hertz serves; a WebSocket has its own pings and idle timeout.
	opts := []netpoll.Option{
		netpoll.WithOnPrepare(t.prepare),
	}
	if t.onConnect != nil {
		opts = append(opts, netpoll.WithOnConnect(func(ctx context.Context, c netpoll.Connection) context.Context {
			hc, ok := hertzConn(c)
			if !ok {
				return ctx
			}
			nctx := t.onConnect(ctx, hc)
			// The routing slot (and with it the pending record) must survive a hook
			// that returns a context not derived from ours.
			if sl, ok := ctx.Value(slotKey{}).(*slot); ok {
				if nctx == nil {
					return ctx
				}
				if _, kept := nctx.Value(slotKey{}).(*slot); !kept {
					nctx = context.WithValue(nctx, slotKey{}, sl)
				}
			}
			return nctx
		}))
	}
	if t.sense {
		opts = append(opts, netpoll.WithOnDisconnect(func(ctx context.Context, _ netpoll.Connection) {
			if cancel, ok := ctx.Value(cancelKey{}).(context.CancelFunc); ok {
				cancel()
			}
		}))
	}
	if err := checkInternals(); err != nil {
		return err
	}
	el, err := netpoll.NewEventLoop(t.onRequest, opts...)
	if err != nil {
		return err
	}
	// Not netpoll's own conversion: its Close closes a descriptor twice (pollnet).
	nl, err := pollnet.Listener(ln)
	if err != nil {
		return err
	}
	if err := t.srv.start(t, el); err != nil {
		return err
	}
	hlog.SystemLogger().Infof("HTTP+WebSocket server listening on address=%s ws_path=%s", ln.Addr().String(), t.srv.cfg.Path)
	return el.Serve(nl)
}

// Close stops at once: sockets get a best-effort 1001 and are closed without grace.
func (t *transporter) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	return t.Shutdown(ctx)
}

// Shutdown is Server.Shutdown; Hertz calls it from its own Shutdown.
func (t *transporter) Shutdown(ctx context.Context) error {
	defer network.UnlinkUdsFile(t.network, t.addr) //nolint:errcheck
	return t.srv.Shutdown(ctx)
}

// prepare runs when a connection is accepted (on the poller goroutine, before the
// connection is registered for reads): Hertz's OnAccept hook, the
// disconnection-sensing context, and an empty routing slot whose pending record starts
// the handshake deadline.
func (t *transporter) prepare(c netpoll.Connection) context.Context {
	ctx := context.Background()
	sl := &slot{}
	if !t.srv.admit(c, sl) {
		return ctx // closed: netpoll does not register it, so no OnRequest follows
	}
	if t.onAccept != nil {
		if hc, ok := hertzConn(c); ok {
			ctx = t.onAccept(hc)
		}
	}
	if t.sense {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		ctx = context.WithValue(ctx, cancelKey{}, cancel)
	}
	s := t.srv
	sl.pend = pendingConn{
		srv:      s,
		nc:       c,
		sh:       &s.shards[s.acceptSeq.Add(1)&(nShards-1)],
		deadline: time.Now().Add(s.cfg.HandshakeTimeout).UnixNano(),
		idx:      -1,
	}
	if c.IsActive() { // an OnAccept hook may have closed it already: nothing to time out
		_ = c.AddCloseCallback(sl.pend.closed)
		s.addPending(&sl.pend)
	}
	return context.WithValue(ctx, slotKey{}, sl)
}

// admit counts an accepted connection against MaxConns until it closes, or closes it
// at once when the cap is reached. A connection upgraded to a WebSocket stays counted
// when netpoll lets it go; its Conn's finish uncounts it.
func (s *Server) admit(c netpoll.Connection, sl *slot) bool {
	if s.cfg.MaxConns <= 0 {
		return true
	}
	if s.tcp.Add(1) > int64(s.cfg.MaxConns) {
		s.tcp.Add(-1)
		s.refused.Add(1)
		_ = c.Close()
		return false
	}
	err := c.AddCloseCallback(func(netpoll.Connection) error {
		if !sl.ws { // runs after the OnRequest that set it
			s.released()
		}
		return nil
	})
	if err != nil {
		s.tcp.Add(-1) // not counted, as it will not be uncounted
	}
	return true
}

// released uncounts a connection admit counted.
func (s *Server) released() {
	if s.cfg.MaxConns > 0 {
		s.tcp.Add(-1)
	}
}

// onRequest is netpoll's OnRequest: it runs whenever the connection has unread input
// and no other OnRequest of it is running. It must consume all input or close.
func (t *transporter) onRequest(ctx context.Context, c netpoll.Connection) error {
	sl, _ := ctx.Value(slotKey{}).(*slot)
	switch {
	case sl == nil: // not expected: prepare sets the slot and the OnConnect wrapper keeps it
		return t.serveHTTP(ctx, c, nil)
	case sl.ws: // not expected: the socket left netpoll at the upgrade
		_ = c.Close()
		return nil
	case sl.http:
		return t.serveHTTP(ctx, c, sl)
	}
	s := t.srv
	// The same absolute deadline the sweeper enforces: dripping bytes does not extend
	// it, and a peek blocked here wakes at it (or when the sweeper closes c).
	_ = c.SetReadDeadline(time.Unix(0, sl.pend.deadline))
	v, err := sniff(c.Reader(), s.cfg.Path)
	switch {
	case err != nil: // nothing classifiable before the deadline, or the peer left
		if errors.Is(err, netpoll.ErrReadTimeout) {
			s.expire(&sl.pend)
		}
		_ = c.Close()
		return nil
	case v == notOurs:
		if !s.classify(&sl.pend) { // the deadline won: the sweeper is closing c
			_ = c.Close()
			return nil
		}
		return t.serveHTTP(ctx, c, sl)
	}
	return t.upgrade(ctx, c, sl)
}

// serveHTTP hands the connection to Hertz for the rest of its life, wrapped in the
// stock netpoll adapter (ErrEOF→io.EOF, ToHertzError, HandleSpecificError). Hertz
// loops over keep-alive requests and closes the connection when it returns.
func (t *transporter) serveHTTP(ctx context.Context, c netpoll.Connection, sl *slot) error {
	if sl == nil || !sl.http {
		_ = c.SetIdleTimeout(t.keepAlive) // TCP keepalive, as stock sets it at accept
	}
	if sl != nil {
		sl.http = true
	}
	_ = c.SetReadTimeout(t.readTimeout) // also clears the sniffing deadline
	if t.writeTimeout > 0 {
		_ = c.SetWriteTimeout(t.writeTimeout)
	}
	hc, ok := hertzConn(c)
	if !ok {
		_ = c.Close()
		return errors.New("wsnet: netpoll connection does not implement network.Conn")
	}
	return t.onData(ctx, hc)
}

// hertzConn wraps a netpoll connection in Hertz's own netpoll adapter.
func hertzConn(c netpoll.Connection) (network.Conn, bool) {
	nc, ok := c.(network.Conn)
	if !ok {
		return nil, false
	}
	return &hnetpoll.Conn{Conn: nc}, true
}

// upgrade serves a request on the WebSocket path: it reads and checks the head, asks
// the Handler, writes the 101 and turns the connection into a Conn. A request on the
// path without "Upgrade: websocket" goes to Hertz with its bytes unconsumed.
func (t *transporter) upgrade(ctx context.Context, nc netpoll.Connection, sl *slot) error {
	s := t.srv
	_ = nc.SetWriteTimeout(s.cfg.WriteTimeout)
	if s.stopping.Load() {
		t.refuse(nc, textError(http.StatusServiceUnavailable, "server is shutting down"))
		return nil
	}
	if s.handshakes.Add(1) > int64(s.cfg.MaxHandshakes) {
		s.handshakes.Add(-1)
		t.refuse(nc, textError(http.StatusServiceUnavailable, "too many handshakes in progress"))
		return nil
	}
	inProgress := true
	done := func() {
		if inProgress {
			inProgress = false
			s.handshakes.Add(-1)
		}
	}
	defer done()

	r := nc.Reader()
	end, err := readHead(r)
	if errors.Is(err, netpoll.ErrReadTimeout) {
		s.expire(&sl.pend)
	}
	// A head is complete (or over-long): the connection is classified, unless the
	// handshake deadline won the race, and is no longer the sweeper's to close.
	if (err == nil || errors.Is(err, errHeadTooLarge)) && !s.classify(&sl.pend) {
		err = errExpired
	}
	switch {
	case errors.Is(err, errHeadTooLarge):
		t.refuse(nc, textError(http.StatusRequestHeaderFieldsTooLarge, "request head over 8 KiB"))
		return nil
	case err != nil: // deadline, EOF, or closed by the sweeper at the deadline
		s.rejected.Add(1)
		_ = nc.Close()
		return nil
	}
	head, err := r.Peek(end)
	if err != nil {
		_ = nc.Close()
		return nil
	}
	hs := parseHead(head)
	if !hs.websocket {
		done()
		return t.serveHTTP(ctx, nc, sl)
	}
	if hs.status != 0 {
		t.refuse(nc, textError(hs.status, hs.problem))
		return nil
	}
	// parseHead copied everything it returns: the head bytes can go.
	_ = r.Skip(end)
	_ = r.Release()

	req := &hs.req
	req.RemoteAddr = nc.RemoteAddr().String()
	actx, cancel := context.WithDeadline(s.ctx, time.Now().Add(s.cfg.HandshakeTimeout))
	data, rej := s.h.Authorize(actx, req)
	cancel()
	if rej != nil {
		t.refuse(nc, rejectResponse(rej, req.Header.Get("Origin")))
		return nil
	}
	if s.stopping.Load() {
		t.refuse(nc, textError(http.StatusServiceUnavailable, "server is shutting down"))
		return nil
	}
	protocol := req.Protocol
	if protocol != "" && !offeredProtocol(req.Header, protocol) {
		protocol = ""
	}
	// The socket leaves netpoll (poller.go): its Connection is freed when this
	// OnRequest returns, and the WebSocket is served from a poller by c alone.
	fd, rest, err := takeOver(nc)
	if err != nil {
		s.rejected.Add(1)
		s.cfg.Log.Error("wsnet: upgrade could not take the socket from netpoll", "remote", req.RemoteAddr, "err", err)
		_ = nc.Close()
		return nil
	}
	sl.ws = true // netpoll's close callbacks, which follow, leave the count to c
	c := s.newConn(fd, data)
	c.in, c.reading = rest, true // processed below, after OnOpen
	if err := c.attach(); err != nil {
		s.rejected.Add(1)
		s.cfg.Log.Error("wsnet: upgrade could not register the socket with a poller", "remote", req.RemoteAddr, "err", err)
		_ = syscall.Close(fd)
		s.released()
		return nil
	}
	// The 101 is queued, not written: what OnOpen sends (the gateway's greeting) joins
	// it, and the drain below writes both with one write(2). No drain runs before it.
	c.queue = append(c.queue, outFrame{op: opRaw, p: switchingProtocols(hs.key, protocol)})
	c.draining = true
	stopping := s.register(c)
	s.upgrades.Add(1)
	done()
	c.open()
	if stopping {
		// Shutdown may already have stopped the sweeper, which would time out a close
		// handshake: say 1001 and close TCP right after it.
		c.mu.Lock()
		c.startCloseLocked(CloseGoingAway, "going away", false, true)
		c.mu.Unlock()
	}
	c.drain()   // the 101 and what OnOpen queued; a failed write closes c (OnClose 1006)
	c.process() // frames pipelined behind the request, and whatever arrived since
	return nil
}

// refuse writes a complete error response and closes the connection.
func (t *transporter) refuse(nc netpoll.Connection, resp []byte) {
	t.srv.rejected.Add(1)
	_, _ = nc.Write(resp)
	_ = nc.Close()
}
