package wsnet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/common/config"
	"github.com/cloudwego/hertz/pkg/common/hlog"
	"github.com/cloudwego/hertz/pkg/common/utils"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
	"github.com/cloudwego/netpoll"
	"github.com/gorilla/websocket"
)

func TestMain(m *testing.M) {
	hlog.SetOutput(io.Discard)
	// Run netpoll tasks on plain goroutines: gopool recovers panics and only logs them,
	// which would hide a panic on the read path from these tests. Now it crashes.
	_ = netpoll.DisableGopool()
	// The production buffer policy (cmd/gochat sets it too): reads borrow a pooled
	// node that is freed once drained, so frame parsing is tested across node swaps.
	if err := OnDemandBuffers(); err != nil {
		panic(err)
	}
	os.Exit(m.Run())
}

type closeEvent struct {
	id     uint64
	code   int
	reason string
}

// testHandler accepts everything by default and echoes text. It records opens and
// closes and, at cleanup, checks that every opened Conn got exactly one OnClose.
type testHandler struct {
	t         testing.TB
	authorize func(r *Request) (any, *Reject) // nil: accept with data = query "name"
	onText    func(c *Conn, msg []byte)       // nil: echo a copy; guarded by mu once serving

	opened chan *Conn
	closed chan closeEvent

	mu     sync.Mutex
	opens  map[uint64]int
	closes map[uint64]int
	reqs   []*Request

	forgetRequests bool        // do not keep Authorize's requests in reqs
	onOpen         func(*Conn) // nil: nothing beyond the bookkeeping; set before serving
}

func newHandler(t testing.TB) *testHandler {
	return &testHandler{
		t:      t,
		opened: make(chan *Conn, 4096),
		closed: make(chan closeEvent, 4096),
		opens:  map[uint64]int{},
		closes: map[uint64]int{},
	}
}

func (h *testHandler) Authorize(_ context.Context, r *Request) (any, *Reject) {
	h.mu.Lock()
	if !h.forgetRequests {
		h.reqs = append(h.reqs, r)
	}
	h.mu.Unlock()
	if h.authorize != nil {
		return h.authorize(r)
	}
	return r.Query.Get("name"), nil
}

func (h *testHandler) OnOpen(c *Conn) {
	h.mu.Lock()
	h.opens[c.ID()]++
	f := h.onOpen
	h.mu.Unlock()
	h.opened <- c
	if f != nil {
		f(c)
	}
}

func (h *testHandler) OnText(c *Conn, msg []byte) {
	h.mu.Lock()
	f := h.onText
	h.mu.Unlock()
	if f != nil {
		f(c, msg)
		return
	}
	_ = c.Send(bytes.Clone(msg))
}

func (h *testHandler) OnClose(c *Conn, code int, reason string) {
	h.mu.Lock()
	h.closes[c.ID()]++
	if h.opens[c.ID()] != 1 {
		h.t.Errorf("OnClose(%d) for a conn opened %d times", c.ID(), h.opens[c.ID()])
	}
	h.mu.Unlock()
	h.closed <- closeEvent{id: c.ID(), code: code, reason: reason}
}

func (h *testHandler) setOnText(f func(c *Conn, msg []byte)) {
	h.mu.Lock()
	h.onText = f
	h.mu.Unlock()
}

// checkClosedOnce verifies OnOpen/OnClose pairing; call it after Shutdown.
func (h *testHandler) checkClosedOnce(t testing.TB) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, n := range h.opens {
		if c := h.closes[id]; c != 1 || n != 1 {
			t.Errorf("conn %d: OnOpen %d times, OnClose %d times; want 1 and 1", id, n, c)
		}
	}
}

// nextOpen waits for the next OnOpen.
func (h *testHandler) nextOpen(t testing.TB) *Conn {
	t.Helper()
	select {
	case c := <-h.opened:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no OnOpen within 5s")
		return nil
	}
}

// waitClose waits for OnClose of conn id (other events are kept for later).
func (h *testHandler) waitClose(t testing.TB, id uint64, within time.Duration) closeEvent {
	t.Helper()
	var others []closeEvent
	defer func() {
		for _, ev := range others {
			h.closed <- ev
		}
	}()
	deadline := time.After(within)
	for {
		select {
		case ev := <-h.closed:
			if ev.id == id {
				return ev
			}
			others = append(others, ev)
		case <-deadline:
			t.Fatalf("no OnClose for conn %d within %v", id, within)
		}
	}
}

type testServer struct {
	s    *Server
	addr string
	h    *testHandler
}

// startServer runs a real Hertz server with the wsnet transport on 127.0.0.1:0 and a
// GET /api/ping route. Cleanup shuts it down and checks OnClose pairing.
func startServer(t *testing.T, cfg Config, h *testHandler) *testServer {
	t.Helper()
	return startServerWith(t, cfg, h)
}

// startServerWith is startServer with extra Hertz options, applied after (and so
// overriding) the defaults: ReadTimeout 2s, IdleTimeout 2s.
func startServerWith(t *testing.T, cfg Config, h *testHandler, hertzOpts ...config.Option) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(cfg, h)
	opts := []config.Option{
		server.WithListener(ln),
		server.WithTransport(s.Transport),
		server.WithDisablePrintRoute(true),
		server.WithExitWaitTime(2 * time.Second),
		server.WithReadTimeout(2 * time.Second),
		server.WithIdleTimeout(2 * time.Second),
	}
	hz := server.New(append(opts, hertzOpts...)...)
	hz.GET("/api/ping", func(_ context.Context, c *app.RequestContext) {
		c.JSON(consts.StatusOK, utils.H{"pong": true})
	})
	runErr := make(chan error, 1)
	go func() { runErr <- hz.Run() }()
	waitFor(t, 5*time.Second, "hertz running", hz.IsRunning)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		_ = hz.Shutdown(ctx)
		select {
		case <-runErr:
		case <-ctx.Done():
			t.Error("hertz Run did not return after Shutdown")
		}
		h.checkClosedOnce(t)
	})
	return &testServer{s: s, addr: ln.Addr().String(), h: h}
}

// waitFor polls cond every few milliseconds until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func dialGorilla(t testing.TB, addr, query string, hdr http.Header) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial("ws://"+addr+"/ws"+query, hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (status %d)", err, status)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

const testKey = "dGhlIHNhbXBsZSBub25jZQ==" // RFC 6455 §1.3 example

func upgradeRequest(path string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", path)
	fmt.Fprintf(&b, "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", testKey)
	for _, e := range extra {
		b.WriteString(e + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// rawClient is a hand-driven WebSocket client for byte-exact tests.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
}

func dialTCP(t testing.TB, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawClient{t: t, conn: conn, br: bufio.NewReader(conn)}
}

// dialRaw connects and completes an upgrade of /ws, checking the 101.
func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	rc := dialTCP(t, addr)
	rc.write([]byte(upgradeRequest("/ws")))
	rc.expect101()
	return rc
}

func (rc *rawClient) write(b []byte) {
	rc.t.Helper()
	if _, err := rc.conn.Write(b); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

func (rc *rawClient) response() *http.Response {
	rc.t.Helper()
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		rc.t.Fatalf("read response: %v", err)
	}
	return resp
}

func (rc *rawClient) expect101() {
	rc.t.Helper()
	resp := rc.response()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		rc.t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; got != want {
		rc.t.Fatalf("Sec-WebSocket-Accept %q, want %q", got, want)
	}
}

// readFrame reads one server frame; server frames must be final and unmasked.
func (rc *rawClient) readFrame() (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(rc.br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0x80 == 0 || h[0]&0x70 != 0 || h[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("bad server frame header % x", h)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var x [2]byte
		if _, err = io.ReadFull(rc.br, x[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(x[:]))
	case 127:
		var x [8]byte
		if _, err = io.ReadFull(rc.br, x[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(x[:])
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(rc.br, payload)
	return h[0] & 0x0f, payload, err
}

// expectText reads frames, skipping pings, until a text frame, and checks it.
func (rc *rawClient) expectText(want string) {
	rc.t.Helper()
	for {
		op, p, err := rc.readFrame()
		if err != nil {
			rc.t.Fatalf("waiting for text %q: %v", want, err)
		}
		if op == 0x9 {
			continue
		}
		if op != 0x1 || string(p) != want {
			rc.t.Fatalf("got op %#x %q, want text %q", op, p, want)
		}
		return
	}
}

// expectClose reads frames until a close frame, checks its code, then expects the
// server to close the TCP connection.
func (rc *rawClient) expectClose(code int) {
	rc.t.Helper()
	for {
		op, p, err := rc.readFrame()
		if err != nil {
			rc.t.Fatalf("waiting for close %d: %v", code, err)
		}
		if op != 0x8 {
			continue
		}
		got := CloseNoStatus
		if len(p) >= 2 {
			got = int(binary.BigEndian.Uint16(p))
		}
		if got != code {
			rc.t.Fatalf("close code %d (%q), want %d", got, p, code)
		}
		break
	}
	rc.expectEOF()
}

func (rc *rawClient) expectEOF() {
	rc.t.Helper()
	_ = rc.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := rc.br.ReadByte()
	if err == nil {
		rc.t.Fatal("server sent more after its close frame")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		rc.t.Fatal("server did not close the TCP connection")
	}
}

// clientFrame encodes a client frame; masked frames use a fixed, non-zero key.
func clientFrame(fin bool, op byte, payload []byte, masked bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	var m byte
	if masked {
		m = 0x80
	}
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, m|byte(n))
	case n <= 0xFFFF:
		b = append(b, m|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !masked {
		return append(b, payload...)
	}
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

func text(s string) []byte { return clientFrame(true, 0x1, []byte(s), true) }
