//go:build linux

package wsc

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/gorilla/websocket"
)

const waitTimeout = 10 * time.Second

type message struct {
	c    *Conn
	op   byte
	data []byte
}

type closeEvent struct {
	c   *Conn
	err error
}

// testHandler records events on buffered channels; optional hooks run first.
type testHandler struct {
	opened chan *Conn
	msgs   chan message
	closed chan closeEvent

	onOpen    func(*Conn)
	onMessage func(*Conn, byte, []byte)
}

func newTestHandler(n int) *testHandler {
	return &testHandler{
		opened: make(chan *Conn, n),
		msgs:   make(chan message, 4*n+1024),
		closed: make(chan closeEvent, n),
	}
}

func (h *testHandler) OnOpen(c *Conn) {
	if h.onOpen != nil {
		h.onOpen(c)
	}
	h.opened <- c
}

func (h *testHandler) OnMessage(c *Conn, op byte, p []byte) {
	if h.onMessage != nil {
		h.onMessage(c, op, p)
		return
	}
	h.msgs <- message{c, op, bytes.Clone(p)}
}

func (h *testHandler) OnClose(c *Conn, err error) { h.closed <- closeEvent{c, err} }

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("timeout waiting for %s", what)
		panic("unreachable")
	}
}

func newClient(t *testing.T, cfg Config, h Handler) *Client {
	t.Helper()
	cl, err := New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func addrOf(t *testing.T, hostport string) netip.AddrPort {
	t.Helper()
	hostport = strings.TrimPrefix(hostport, "http://")
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  4096,
	WriteBufferSize: 4096, // NextWriter flushes a fragment per 4 KiB
	CheckOrigin:     func(*http.Request) bool { return true },
}

const connectedMsg = `{"type":"connected"}`

// startServer serves WebSockets with fn after a "connected" text frame;
// path /401 refuses the upgrade.
func startServer(t *testing.T, fn func(ws *websocket.Conn, r *http.Request)) (netip.AddrPort, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/401" {
			http.Error(w, `{"code":"UNAUTHORIZED"}`, http.StatusUnauthorized)
			return
		}
		ws, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		if err := ws.WriteMessage(websocket.TextMessage, []byte(connectedMsg)); err != nil {
			return
		}
		fn(ws, r)
	}))
	t.Cleanup(srv.Close)
	return addrOf(t, srv.URL), srv
}

func echo(ws *websocket.Conn, _ *http.Request) {
	for {
		mt, p, err := ws.ReadMessage()
		if err != nil {
			return
		}
		if err := ws.WriteMessage(mt, p); err != nil {
			return
		}
	}
}

// openConn dials and waits for OnOpen and the "connected" frame.
func openConn(t *testing.T, cl *Client, h *testHandler, addr netip.AddrPort, path string) *Conn {
	t.Helper()
	c, err := cl.Dial(addr, "example.test", path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := recv(t, h.opened, "OnOpen"); got != c {
		t.Fatalf("OnOpen for another conn")
	}
	m := recv(t, h.msgs, "connected frame")
	if m.op != OpText || string(m.data) != connectedMsg {
		t.Fatalf("first message = %d %q", m.op, m.data)
	}
	return c
}

func TestEchoRoundTrip(t *testing.T) {
	serverErr := make(chan error, 1)
	addr, _ := startServer(t, func(ws *websocket.Conn, r *http.Request) {
		if r.Host != "example.test" || r.URL.RawQuery != "token=abc" {
			serverErr <- fmt.Errorf("host %q query %q", r.Host, r.URL.RawQuery)
			return
		}
		for {
			mt, p, err := ws.ReadMessage()
			if err != nil {
				serverErr <- err
				return
			}
			ws.WriteMessage(mt, p)
		}
	})
	h := newTestHandler(4)
	cl := newClient(t, Config{Loops: 2}, h)
	c := openConn(t, cl, h, addr, "/ws?token=abc")

	if c.OpenedAt().IsZero() || c.OpenedAt().Before(c.DialedAt()) {
		t.Fatalf("OpenedAt %v DialedAt %v", c.OpenedAt(), c.DialedAt())
	}
	if s := cl.Stats(); s.Open != 1 || s.Dialing != 0 || s.Dialed != 1 {
		t.Fatalf("stats %+v", s)
	}
	for i := range 100 {
		want := fmt.Sprintf(`{"type":"send","seq":%d,"body":"%s"}`, i, strings.Repeat("x", i*3))
		if err := c.Send(OpText, []byte(want)); err != nil {
			t.Fatal(err)
		}
		m := recv(t, h.msgs, "echo")
		if m.op != OpText || string(m.data) != want {
			t.Fatalf("echo %d = %d %q", i, m.op, m.data)
		}
	}
	c.Close()
	ev := recv(t, h.closed, "OnClose")
	if ev.c != c || ev.err != nil {
		t.Fatalf("OnClose(%p, %v)", ev.c, ev.err)
	}
	err := recv(t, serverErr, "server read error")
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
		t.Fatalf("server saw %v, want close 1000", err)
	}
	if err := c.Send(OpText, []byte("late")); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("Send after Close = %v", err)
	}
	c.Close() // no second OnClose
	if s := cl.Stats(); s.Open != 0 || s.Closed != 1 || s.Failed != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestServerPingGetsPong(t *testing.T) {
	pongs := make(chan string, 1)
	addr, _ := startServer(t, func(ws *websocket.Conn, _ *http.Request) {
		ws.SetPongHandler(func(s string) error { pongs <- s; return nil })
		ws.WriteControl(websocket.PingMessage, []byte("ping-42"), time.Now().Add(waitTimeout))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	})
	h := newTestHandler(1)
	cl := newClient(t, Config{Loops: 1}, h)
	openConn(t, cl, h, addr, "/")
	if got := recv(t, pongs, "pong"); got != "ping-42" {
		t.Fatalf("pong payload %q", got)
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed + byte(i>>10)
	}
	return b
}

func TestLargeMessages(t *testing.T) {
	big := pattern(200<<10, 1)
	up := pattern(100<<10, 2)
	got := make(chan []byte, 1)
	addr, _ := startServer(t, func(ws *websocket.Conn, _ *http.Request) {
		w, err := ws.NextWriter(websocket.BinaryMessage)
		if err != nil {
			return
		}
		for p := big; len(p) > 0; { // several writes, fragments of 4 KiB
			n := min(len(p), 30000)
			w.Write(p[:n])
			p = p[n:]
		}
		w.Close()
		_, p, err := ws.ReadMessage()
		if err != nil {
			return
		}
		got <- p
		ws.WriteMessage(websocket.BinaryMessage, p) // one 100 KiB frame back
		ws.ReadMessage()
	})
	h := newTestHandler(1)
	cl := newClient(t, Config{Loops: 1, ReadBufferSize: 16 << 10}, h)
	c := openConn(t, cl, h, addr, "/")
	m := recv(t, h.msgs, "200 KiB message")
	if m.op != OpBinary || !bytes.Equal(m.data, big) {
		t.Fatalf("200 KiB message: op %d, %d bytes, equal=%v", m.op, len(m.data), bytes.Equal(m.data, big))
	}
	if err := c.Send(OpBinary, up); err != nil {
		t.Fatal(err)
	}
	if p := recv(t, got, "server receive"); !bytes.Equal(p, up) {
		t.Fatalf("server got %d bytes, differ", len(p))
	}
	m = recv(t, h.msgs, "100 KiB echo")
	if m.op != OpBinary || !bytes.Equal(m.data, up) {
		t.Fatalf("100 KiB echo: op %d, %d bytes", m.op, len(m.data))
	}
}

func TestServerCloseCode(t *testing.T) {
	serverErr := make(chan error, 1)
	addr, _ := startServer(t, func(ws *websocket.Conn, _ *http.Request) {
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "kicked"), time.Now().Add(waitTimeout))
		_, _, err := ws.ReadMessage()
		serverErr <- err
	})
	h := newTestHandler(1)
	cl := newClient(t, Config{Loops: 1}, h)
	c := openConn(t, cl, h, addr, "/")
	ev := recv(t, h.closed, "OnClose")
	var ce *CloseError
	if ev.c != c || !errors.As(ev.err, &ce) || ce.Code != 4001 || ce.Reason != "kicked" {
		t.Fatalf("OnClose err = %v", ev.err)
	}
	var wce *websocket.CloseError
	if err := recv(t, serverErr, "server"); !errors.As(err, &wce) || wce.Code != 4001 {
		t.Fatalf("server got %v, want the close echoed", err)
	}
}

func TestHandshake401(t *testing.T) {
	addr, _ := startServer(t, echo)
	h := newTestHandler(1)
	cl := newClient(t, Config{Loops: 1}, h)
	c, err := cl.Dial(addr, "", "/401", "data")
	if err != nil {
		t.Fatal(err)
	}
	ev := recv(t, h.closed, "OnClose")
	var he *HandshakeError
	if ev.c != c || !errors.As(ev.err, &he) || he.StatusCode != 401 ||
		!strings.Contains(ev.err.Error(), "handshake: HTTP/1.1 401 Unauthorized") {
		t.Fatalf("OnClose err = %v", ev.err)
	}
	if len(h.opened) != 0 {
		t.Fatal("OnOpen called")
	}
	if c.Data() != "data" || !c.OpenedAt().IsZero() {
		t.Fatal("Data/OpenedAt")
	}
	if s := cl.Stats(); s.Failed != 1 || s.Dialing != 0 || s.Open != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestManyConnsSourceIPs(t *testing.T) {
	const n = 500
	srcs := []netip.Addr{
		netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"),
		netip.MustParseAddr("127.0.0.4"), netip.MustParseAddr("127.0.0.5"),
	}
	var mu sync.Mutex
	hosts := map[string]int{}
	// The server greets before it calls this handler, so a client can see its
	// greeting before its host is counted: the test waits for every count.
	counted := make(chan struct{}, n)
	addr, _ := startServer(t, func(ws *websocket.Conn, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		mu.Lock()
		hosts[host]++
		mu.Unlock()
		counted <- struct{}{}
		echo(ws, r)
	})
	h := newTestHandler(n)
	var greeted atomic.Int32
	allGreeted := make(chan struct{})
	h.onMessage = func(c *Conn, op byte, p []byte) {
		if string(p) == connectedMsg && greeted.Add(1) == n {
			close(allGreeted)
		}
	}
	cl := newClient(t, Config{Loops: 4, SourceIPs: srcs}, h)
	conns := map[*Conn]bool{}
	for i := range n {
		c, err := cl.Dial(addr, "", "/ws", i)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns[c] = true
	}
	for range n {
		recv(t, h.opened, "OnOpen")
	}
	recv(t, allGreeted, "connected frames")
	if s := cl.Stats(); s.Open != n || s.Dialed != n {
		t.Fatalf("stats %+v", s)
	}
	for range n {
		recv(t, counted, "the server's count of a host")
	}
	mu.Lock()
	if len(hosts) != len(srcs) {
		t.Errorf("server saw hosts %v", hosts)
	}
	for _, s := range srcs {
		if hosts[s.String()] != n/len(srcs) {
			t.Errorf("server saw hosts %v", hosts)
			break
		}
	}
	mu.Unlock()

	cl.Close()
	for range n {
		ev := recv(t, h.closed, "OnClose")
		if ev.err != nil || !conns[ev.c] {
			t.Fatalf("OnClose(%v) for a known conn: %v", ev.err, conns[ev.c])
		}
		delete(conns, ev.c) // a second OnClose would fail above
	}
	if len(h.closed) != 0 {
		t.Fatal("extra OnClose")
	}
	if s := cl.Stats(); s.Open != 0 || s.Closed != n {
		t.Fatalf("stats %+v", s)
	}
}

// silentListener accepts TCP connections and never answers.
func silentListener(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	return addrOf(t, ln.Addr().String())
}

func TestHandshakeTimeout(t *testing.T) {
	addr := silentListener(t)
	h := newTestHandler(1)
	const timeout = 300 * time.Millisecond
	cl := newClient(t, Config{Loops: 1, HandshakeTimeout: timeout}, h)
	start := time.Now()
	c, err := cl.Dial(addr, "", "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(OpText, []byte("early")); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("Send before open = %v", err)
	}
	ev := recv(t, h.closed, "OnClose")
	if elapsed := time.Since(start); elapsed < timeout {
		t.Fatalf("closed after %v, before the timeout", elapsed)
	}
	if ev.c != c || !errors.Is(ev.err, ErrHandshakeTimeout) {
		t.Fatalf("OnClose err = %v", ev.err)
	}
	if s := cl.Stats(); s.Failed != 1 || s.Dialing != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestConnectRefused(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := addrOf(t, ln.Addr().String())
	ln.Close()
	h := newTestHandler(1)
	cl := newClient(t, Config{Loops: 1}, h)
	if _, err := cl.Dial(addr, "", "/", nil); err != nil {
		return // reported at once: fine too
	}
	ev := recv(t, h.closed, "OnClose")
	if ev.err == nil || !strings.Contains(ev.err.Error(), "refused") {
		t.Fatalf("OnClose err = %v", ev.err)
	}
}

func TestClientCloseClosesAll(t *testing.T) {
	addr, _ := startServer(t, echo)
	silent := silentListener(t)
	const open, pending = 50, 10
	h := newTestHandler(open + pending)
	var mu sync.Mutex
	count := map[*Conn]int{}
	cl := newClient(t, Config{Loops: 3}, &countingHandler{testHandler: h, mu: &mu, count: count})
	for range open {
		if _, err := cl.Dial(addr, "", "/", "open"); err != nil {
			t.Fatal(err)
		}
	}
	for range open {
		recv(t, h.opened, "OnOpen")
	}
	for range pending {
		if _, err := cl.Dial(silent, "", "/", "pending"); err != nil {
			t.Fatal(err)
		}
	}
	cl.Close()
	// Close waited for the loops: every OnClose has run.
	if len(h.closed) != open+pending {
		t.Fatalf("%d OnClose, want %d", len(h.closed), open+pending)
	}
	for range open + pending {
		ev := <-h.closed
		want := error(nil)
		if ev.c.Data() == "pending" {
			want = ErrAborted
		}
		if ev.err != want {
			t.Fatalf("OnClose(%v) err %v, want %v", ev.c.Data(), ev.err, want)
		}
	}
	mu.Lock()
	for c, n := range count {
		if n != 1 {
			t.Fatalf("conn %v: %d OnClose", c.Data(), n)
		}
	}
	mu.Unlock()
	if s := cl.Stats(); s.Open != 0 || s.Dialing != 0 || s.Closed != open || s.Failed != pending {
		t.Fatalf("stats %+v", s)
	}
	if _, err := cl.Dial(addr, "", "/", nil); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("Dial after Close = %v", err)
	}
	cl.Close() // idempotent
}

type countingHandler struct {
	*testHandler
	mu    *sync.Mutex
	count map[*Conn]int
}

func (h *countingHandler) OnClose(c *Conn, err error) {
	h.mu.Lock()
	h.count[c]++
	h.mu.Unlock()
	h.testHandler.OnClose(c, err)
}

func TestConcurrentSend(t *testing.T) {
	addr, _ := startServer(t, echo)
	const senders, perSender = 8, 300
	h := newTestHandler(1)
	done := make(chan error, 1)
	next := make([]int, senders)
	received := 0
	h.onMessage = func(c *Conn, op byte, p []byte) { // loop goroutine only
		if string(p) == connectedMsg {
			return
		}
		var g, seq int
		if _, err := fmt.Sscanf(string(p), "g%d s%d ", &g, &seq); err != nil || g < 0 || g >= senders {
			done <- fmt.Errorf("bad message %.40q", p)
			return
		}
		if seq != next[g] || !bytes.Equal(p, sendPayload(g, seq)) {
			done <- fmt.Errorf("sender %d: got seq %d (%d bytes), want %d", g, seq, len(p), next[g])
			return
		}
		next[g]++
		if received++; received == senders*perSender {
			done <- nil
		}
	}
	cl := newClient(t, Config{Loops: 2}, h)
	c, err := cl.Dial(addr, "", "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, h.opened, "OnOpen")
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for g := range senders {
		wg.Go(func() {
			for s := range perSender {
				if err := c.Send(OpText, sendPayload(g, s)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := recv(t, done, "all echoes"); err != nil {
		t.Fatal(err)
	}
}

func sendPayload(g, s int) []byte {
	size := []int{10, 120, 126, 3000, 70000}[(g+s)%5]
	p := fmt.Appendf(nil, "g%d s%d ", g, s)
	for len(p) < size {
		p = append(p, byte('a'+(len(p)+g+s)%26))
	}
	return p
}

// TestPendingFlush fills the socket while the server does not read: Send
// queues, and the loop flushes on EPOLLOUT once the server reads again, then
// drops the queue buffer.
func TestPendingFlush(t *testing.T) {
	release := make(chan struct{})
	addr, _ := startServer(t, func(ws *websocket.Conn, _ *http.Request) {
		<-release
		n := 0
		for {
			_, p, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if !bytes.Equal(p, pattern(len(p), byte(n))) {
				ws.WriteMessage(websocket.TextMessage, []byte("corrupt"))
				return
			}
			n++
			if len(p) == 1 { // end marker
				ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, "done %d", n))
				ws.ReadMessage()
				return
			}
		}
	})
	var once sync.Once
	defer once.Do(func() { close(release) })
	h := newTestHandler(1)
	cl := newClient(t, Config{Loops: 1, MaxPendingBytes: 256 << 20}, h)
	c := openConn(t, cl, h, addr, "/")
	queued := func() (int, bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending), c.pending != nil
	}
	reply := make(chan string, 1)
	h.onMessage = func(c *Conn, _ byte, p []byte) {
		// On the loop, after the flush that delivered the last bytes.
		if n, held := queued(); n != 0 || held {
			reply <- fmt.Sprintf("pending buffer still held (%d bytes)", n)
			return
		}
		reply <- string(p)
	}
	const size = 256 << 10
	sent := 0
	for n, _ := queued(); n == 0; n, _ = queued() {
		if sent == 1000 {
			t.Fatal("socket never filled up")
		}
		if err := c.Send(OpBinary, pattern(size, byte(sent))); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	for range 4 { // these go to the queue
		if err := c.Send(OpBinary, pattern(size, byte(sent))); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	if err := c.Send(OpBinary, pattern(1, byte(sent))); err != nil {
		t.Fatal(err)
	}
	sent++
	once.Do(func() { close(release) })
	if got, want := recv(t, reply, "server reply"), fmt.Sprintf("done %d", sent); got != want {
		t.Fatalf("server: %q, want %q", got, want)
	}
}

func TestSendBufferFull(t *testing.T) {
	release := make(chan struct{})
	addr, _ := startServer(t, func(ws *websocket.Conn, _ *http.Request) { <-release })
	defer close(release)
	h := newTestHandler(1)
	cl := newClient(t, Config{Loops: 1, MaxPendingBytes: 1 << 20}, h)
	c := openConn(t, cl, h, addr, "/")
	p := make([]byte, 256<<10)
	for i := 0; ; i++ {
		err := c.Send(OpBinary, p)
		if errors.Is(err, ErrSendBufferFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i == 2000 {
			t.Fatal("never reported a full send buffer")
		}
	}
	if !c.IsOpen() {
		t.Fatal("conn closed by a full buffer")
	}
}

// rawServer runs fn on each accepted connection after reading the upgrade
// request; key is the client's Sec-WebSocket-Key.
func rawServer(t *testing.T, fn func(nc net.Conn, br *bufio.Reader, key string)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer nc.Close()
				br := bufio.NewReader(nc)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				if req.Header.Get("Upgrade") != "websocket" || req.Header.Get("Sec-WebSocket-Version") != "13" {
					return
				}
				fn(nc, br, req.Header.Get("Sec-WebSocket-Key"))
			})
		}
	})
	return addrOf(t, ln.Addr().String())
}

func acceptFor(key string) string {
	s := sha1.Sum([]byte(key + acceptGUID))
	return base64.StdEncoding.EncodeToString(s[:])
}

func serverFrame(fin bool, op byte, p []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(p); {
	case n <= 125:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, p...)
}

// readClientFrame reads one frame, which must be masked, and unmasks it.
func readClientFrame(br *bufio.Reader) (op byte, p []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(br, h[:]); err != nil {
		return
	}
	if h[1]&0x80 == 0 || h[0]&0x80 == 0 {
		return 0, nil, errors.New("unmasked or non-final client frame")
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var e [2]byte
		_, err = io.ReadFull(br, e[:])
		n = uint64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		_, err = io.ReadFull(br, e[:])
		n = binary.BigEndian.Uint64(e[:])
	}
	var mask [4]byte
	if _, err = io.ReadFull(br, mask[:]); err != nil {
		return
	}
	p = make([]byte, n)
	if _, err = io.ReadFull(br, p); err != nil {
		return
	}
	for i := range p {
		p[i] ^= mask[i&3]
	}
	return h[0] & 0x0F, p, nil
}

// TestRawSplitStream sends the 101 head and frames in odd pieces: the first
// frame in the same write as the end of the head, then frames byte by byte,
// a ping, a fragmented message, a 64-bit length frame and a close.
func TestRawSplitStream(t *testing.T) {
	pong := make(chan []byte, 1)
	closeReply := make(chan []byte, 1)
	big := pattern(70000, 9)
	addr := rawServer(t, func(nc net.Conn, br *bufio.Reader, key string) {
		head := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: " + acceptFor(key) + "\r\n\r\n"
		nc.Write([]byte(head[:20]))
		nc.Write([]byte(head[20:60]))
		nc.Write(append([]byte(head[60:]), serverFrame(true, OpText, []byte("first"))...))
		var stream []byte
		stream = append(stream, serverFrame(true, OpText, []byte("second"))...)
		stream = append(stream, serverFrame(true, OpPing, []byte("pp"))...)
		stream = append(stream, serverFrame(false, OpText, []byte("frag-"))...)
		stream = append(stream, serverFrame(false, OpContinuation, []byte("ment-"))...)
		stream = append(stream, serverFrame(true, OpPong, nil)...) // interleaved control frame
		stream = append(stream, serverFrame(true, OpContinuation, []byte("ed"))...)
		for i := range stream {
			nc.Write(stream[i : i+1])
		}
		bigFrame := serverFrame(true, OpBinary, big)
		for p := bigFrame; len(p) > 0; {
			n := min(len(p), 1000)
			nc.Write(p[:n])
			p = p[n:]
		}
		op, p, err := readClientFrame(br)
		if err != nil || op != OpPong {
			return
		}
		pong <- p
		nc.Write(serverFrame(true, OpClose, []byte{0x03, 0xE8, 'b', 'y', 'e'}))
		if op, p, err := readClientFrame(br); err == nil && op == OpClose {
			closeReply <- p
		}
	})
	h := newTestHandler(1)
	cl := newClient(t, Config{Loops: 1, ReadBufferSize: 1024}, h)
	c, err := cl.Dial(addr, "", "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, h.opened, "OnOpen")
	for _, want := range []string{"first", "second", "frag-ment-ed"} {
		if m := recv(t, h.msgs, want); m.op != OpText || string(m.data) != want {
			t.Fatalf("got %d %q, want %q", m.op, m.data, want)
		}
	}
	if m := recv(t, h.msgs, "big"); m.op != OpBinary || !bytes.Equal(m.data, big) {
		t.Fatalf("big frame: op %d len %d", m.op, len(m.data))
	}
	if p := recv(t, pong, "pong"); string(p) != "pp" {
		t.Fatalf("pong %q", p)
	}
	ev := recv(t, h.closed, "OnClose")
	var ce *CloseError
	if ev.c != c || !errors.As(ev.err, &ce) || ce.Code != 1000 || ce.Reason != "bye" {
		t.Fatalf("OnClose err %v", ev.err)
	}
	if p := recv(t, closeReply, "close reply"); !bytes.Equal(p, []byte{0x03, 0xE8}) {
		t.Fatalf("close reply %x", p)
	}
}

func TestRawProtocolErrors(t *testing.T) {
	cases := []struct {
		name  string
		head  func(key string) string
		frame []byte
		check func(error) bool
	}{
		{"bad accept", func(string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAA\r\n\r\n"
		}, nil, func(err error) bool {
			var he *HandshakeError
			return errors.As(err, &he) && he.StatusCode == 101 && strings.Contains(he.Reason, "Accept")
		}},
		{"masked frame", nil, []byte{0x81, 0x82, 1, 2, 3, 4, 'a', 'b'}, func(err error) bool { return errors.Is(err, ErrProtocol) }},
		{"orphan continuation", nil, serverFrame(true, OpContinuation, []byte("x")), func(err error) bool { return errors.Is(err, ErrProtocol) }},
		{"reserved opcode", nil, serverFrame(true, 3, nil), func(err error) bool { return errors.Is(err, ErrProtocol) }},
		{"eof", nil, nil, func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := rawServer(t, func(nc net.Conn, br *bufio.Reader, key string) {
				head := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acceptFor(key) + "\r\n\r\n"
				if tc.head != nil {
					head = tc.head(key)
				}
				nc.Write(append([]byte(head), tc.frame...))
				if tc.frame != nil {
					io.Copy(io.Discard, br) // until the client closes
				}
			})
			h := newTestHandler(1)
			cl := newClient(t, Config{Loops: 1}, h)
			if _, err := cl.Dial(addr, "", "/", nil); err != nil {
				t.Fatal(err)
			}
			if ev := recv(t, h.closed, "OnClose"); !tc.check(ev.err) {
				t.Fatalf("OnClose err %v", ev.err)
			}
		})
	}
}

func TestCloseInsideCallbacks(t *testing.T) {
	addr, _ := startServer(t, echo)
	h := newTestHandler(2)
	h.onMessage = func(c *Conn, op byte, p []byte) {
		c.Send(OpText, []byte("ignored")) // Send then Close from the loop goroutine
		c.Close()
	}
	cl := newClient(t, Config{Loops: 1}, h)
	c, err := cl.Dial(addr, "", "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, h.opened, "OnOpen")
	if ev := recv(t, h.closed, "OnClose"); ev.c != c || ev.err != nil {
		t.Fatalf("OnClose err %v", ev.err)
	}
}

func TestIPv6Rejected(t *testing.T) {
	h := newTestHandler(1)
	if _, err := New(Config{SourceIPs: []netip.Addr{netip.MustParseAddr("::1")}}, h); err == nil {
		t.Fatal("IPv6 source accepted")
	}
	cl := newClient(t, Config{Loops: 1}, h)
	if _, err := cl.Dial(netip.MustParseAddrPort("[::1]:80"), "", "/", nil); err == nil {
		t.Fatal("IPv6 dial accepted")
	}
	if s := cl.Stats(); s.DialErrors != 1 || s.Dialed != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestMaskBytes(t *testing.T) {
	for n := range 40 {
		p := pattern(n, 3)
		got := bytes.Clone(p)
		key := uint32(0xA1B2C3D4)
		maskBytes(key, got)
		var k [4]byte
		binary.LittleEndian.PutUint32(k[:], key)
		for i := range p {
			if got[i] != p[i]^k[i%4] {
				t.Fatalf("n=%d i=%d", n, i)
			}
		}
	}
}

func TestConnSize(t *testing.T) {
	// Keep an idle conn small (the brief: well under 1 KB of Go heap).
	if s := unsafe.Sizeof(Conn{}); s > 256 {
		t.Fatalf("Conn is %d bytes", s)
	}
}
