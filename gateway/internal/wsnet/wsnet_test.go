package wsnet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestHTTPSharesThePort(t *testing.T) {
	ts := startServer(t, Config{}, newHandler(t))

	t.Run("net/http client", func(t *testing.T) {
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get("http://" + ts.addr + "/api/ping")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Pong bool }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 || !body.Pong {
			t.Fatalf("status %d, body %+v, err %v", resp.StatusCode, body, err)
		}
	})

	t.Run("keep-alive: three requests on one connection", func(t *testing.T) {
		rc := dialTCP(t, ts.addr)
		for i := range 3 {
			rc.write([]byte("GET /api/ping HTTP/1.1\r\nHost: x\r\n\r\n"))
			resp := rc.response()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"pong":true`)) {
				t.Fatalf("request %d: status %d body %q", i, resp.StatusCode, b)
			}
		}
	})

	t.Run("GET /ws without Upgrade goes to Hertz", func(t *testing.T) {
		rc := dialTCP(t, ts.addr)
		rc.write([]byte("GET /ws?token=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
		if resp := rc.response(); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d, want Hertz's 404", resp.StatusCode)
		}
	})

	t.Run("upgrade on another path goes to Hertz", func(t *testing.T) {
		rc := dialTCP(t, ts.addr)
		rc.write([]byte(upgradeRequest("/wsx")))
		if resp := rc.response(); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d, want Hertz's 404", resp.StatusCode)
		}
	})

	if n := ts.s.Stats().Upgrades; n != 0 {
		t.Fatalf("Upgrades = %d after HTTP only", n)
	}
}

func TestUpgradeAndEcho(t *testing.T) {
	h := newHandler(t)
	ts := startServer(t, Config{}, h)
	hdr := http.Header{"Origin": {"http://127.0.0.1:5173"}, "User-Agent": {"wsnet-test"}}
	c := dialGorilla(t, ts.addr, "?name=alice&token=t1", hdr)
	sc := h.nextOpen(t)
	if sc.Data() != "alice" {
		t.Fatalf("Data() = %v, want alice", sc.Data())
	}
	for _, msg := range []string{"hello", "", strings.Repeat("é", 3000), "{\"type\":\"ping\"}"} {
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		typ, got, err := c.ReadMessage()
		if err != nil || typ != websocket.TextMessage || string(got) != msg {
			t.Fatalf("echo of %d bytes: type %d, %d bytes, err %v", len(msg), typ, len(got), err)
		}
	}
	h.mu.Lock()
	r := h.reqs[0]
	h.mu.Unlock()
	if r.URI != "/ws?name=alice&token=t1" || r.Query.Get("token") != "t1" ||
		r.Header.Get("Origin") != "http://127.0.0.1:5173" || r.Header.Get("User-Agent") != "wsnet-test" ||
		!strings.HasPrefix(r.RemoteAddr, "127.0.0.1:") {
		t.Fatalf("Authorize saw %+v", r)
	}
	if ts.s.Conns() != 1 {
		t.Fatalf("Conns() = %d", ts.s.Conns())
	}
	// The drainer counts a batch after its write returns, so the client can read
	// the last echo before the count moves: wait for it.
	waitFor(t, 5*time.Second, "four frames counted out", func() bool { return ts.s.Stats().FramesOut >= 4 })
	st := ts.s.Stats()
	if st.Upgrades != 1 || st.FramesIn < 4 || st.FramesOut < 4 || st.BytesIn == 0 || st.BytesOut == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSubprotocol(t *testing.T) {
	h := newHandler(t)
	h.authorize = func(r *Request) (any, *Reject) {
		r.Protocol = "v2"
		return nil, nil
	}
	ts := startServer(t, Config{}, h)
	d := websocket.Dialer{Subprotocols: []string{"v1", "v2"}}
	c, _, err := d.Dial("ws://"+ts.addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Subprotocol() != "v2" {
		t.Fatalf("subprotocol %q, want v2", c.Subprotocol())
	}
}

func TestAuthorizeReject(t *testing.T) {
	h := newHandler(t)
	const body = `{"success":false,"message":"invalid token","code":"UNAUTHORIZED"}`
	h.authorize = func(r *Request) (any, *Reject) {
		if r.Query.Get("token") != "good" {
			return nil, &Reject{Status: http.StatusUnauthorized, Body: []byte(body)}
		}
		return nil, nil
	}
	ts := startServer(t, Config{}, h)
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	_, resp, err := d.Dial("ws://"+ts.addr+"/ws?token=bad", http.Header{"Origin": {"http://localhost:4173"}})
	if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil {
		t.Fatalf("err %v, resp %v; want ErrBadHandshake with a response", err, resp)
	}
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusUnauthorized || string(got) != body ||
		resp.Header.Get("Content-Type") != "application/json" ||
		resp.Header.Get("Access-Control-Allow-Origin") != "http://localhost:4173" {
		t.Fatalf("status %d, headers %v, body %q", resp.StatusCode, resp.Header, got)
	}
	if st := ts.s.Stats(); st.Rejected != 1 || st.Upgrades != 0 {
		t.Fatalf("stats %+v", st)
	}
	dialGorilla(t, ts.addr, "?token=good", nil) // and a good token still works
}

func TestBadHandshakes(t *testing.T) {
	ts := startServer(t, Config{HandshakeTimeout: 300 * time.Millisecond}, newHandler(t))
	valid := upgradeRequest("/ws")
	tests := []struct {
		name   string
		req    string
		status int
	}{
		{"missing key", strings.Replace(valid, "Sec-WebSocket-Key: "+testKey+"\r\n", "", 1), 400},
		{"short key", strings.Replace(valid, testKey, "c2hvcnQ=", 1), 400},
		{"wrong version", strings.Replace(valid, "Version: 13", "Version: 8", 1), 426},
		{"missing version", strings.Replace(valid, "Sec-WebSocket-Version: 13\r\n", "", 1), 400},
		{"POST", strings.Replace(valid, "GET", "POST", 1), 400},
		{"HTTP/1.0", strings.Replace(valid, "HTTP/1.1", "HTTP/1.0", 1), 400},
		{"no Connection upgrade", strings.Replace(valid, "Connection: Upgrade", "Connection: keep-alive", 1), 400},
		{"missing host", strings.Replace(valid, "Host: example.test\r\n", "", 1), 400},
		{"folded header", strings.Replace(valid, "Host: example.test\r\n", "Host: example.test\r\n  folded\r\n", 1), 400},
		{"head over 8 KiB", upgradeRequest("/ws", "X-Big: "+strings.Repeat("a", 9000)), 431},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := dialTCP(t, ts.addr)
			rc.write([]byte(tt.req))
			resp := rc.response()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status == 426 && resp.Header.Get("Sec-WebSocket-Version") != "13" {
				t.Fatalf("426 without Sec-WebSocket-Version: 13")
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			rc.expectEOF()
		})
	}
	t.Run("head not finished before HandshakeTimeout", func(t *testing.T) {
		rc := dialTCP(t, ts.addr)
		start := time.Now()
		rc.write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n"))
		rc.expectEOF()
		if d := time.Since(start); d < 250*time.Millisecond {
			t.Fatalf("closed after %v, before the handshake timeout", d)
		}
	})
	if st := ts.s.Stats(); st.Rejected != uint64(len(tests))+1 {
		t.Fatalf("Rejected = %d, want %d", st.Rejected, len(tests)+1)
	}
}

func TestMaxHandshakes(t *testing.T) {
	ts := startServer(t, Config{MaxHandshakes: 1, HandshakeTimeout: 5 * time.Second}, newHandler(t))
	slow := dialTCP(t, ts.addr)
	req := upgradeRequest("/ws")
	slow.write([]byte(req[:30])) // an upgrade in progress
	waitFor(t, 5*time.Second, "handshake in progress", func() bool { return ts.s.handshakes.Load() == 1 })

	other := dialTCP(t, ts.addr)
	other.write([]byte(req))
	if resp := other.response(); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second handshake: status %d, want 503", resp.StatusCode)
	}
	slow.write([]byte(req[30:]))
	slow.expect101()
	waitFor(t, 5*time.Second, "handshake slot free", func() bool { return ts.s.handshakes.Load() == 0 })
	dialRaw(t, ts.addr) // a slot is free again
}

func TestPipelinedFramesAfterUpgrade(t *testing.T) {
	ts := startServer(t, Config{}, newHandler(t))
	rc := dialTCP(t, ts.addr)
	var b []byte
	b = append(b, upgradeRequest("/ws")...)
	b = append(b, text("first")...)
	b = append(b, text("second")...)
	rc.write(b) // one write: request head and two frames
	rc.expect101()
	rc.expectText("first")
	rc.expectText("second")
}

func TestDrippedHandshakeAndFrame(t *testing.T) {
	ts := startServer(t, Config{}, newHandler(t))
	rc := dialTCP(t, ts.addr)
	drip := func(b []byte) {
		for i := range b {
			rc.write(b[i : i+1])
			time.Sleep(time.Millisecond)
		}
	}
	drip([]byte(upgradeRequest("/ws?name=drip")))
	rc.expect101()
	drip(text("dripped one byte at a time"))
	rc.expectText("dripped one byte at a time")
	drip(clientFrame(true, 0x1, bytes.Repeat([]byte("x"), 300), true)) // 16-bit length
	rc.expectText(strings.Repeat("x", 300))
}

func TestFragmentedMessage(t *testing.T) {
	ts := startServer(t, Config{}, newHandler(t))
	rc := dialRaw(t, ts.addr)
	var b []byte
	b = append(b, clientFrame(false, 0x1, []byte("hel"), true)...)
	b = append(b, clientFrame(false, 0x0, []byte("lo, "), true)...)
	b = append(b, clientFrame(true, 0x9, []byte("mid"), true)...) // control frames may interleave
	// split a multi-byte rune across fragments: UTF-8 is checked on the whole message
	w := []byte("wörld")
	b = append(b, clientFrame(false, 0x0, w[:2], true)...)
	b = append(b, clientFrame(true, 0x0, w[2:], true)...)
	rc.write(b)
	op, p, err := rc.readFrame()
	if err != nil || op != 0xA || string(p) != "mid" {
		t.Fatalf("want pong \"mid\" first, got op %#x %q err %v", op, p, err)
	}
	rc.expectText("hello, wörld")
}

func TestPingPong(t *testing.T) {
	ts := startServer(t, Config{}, newHandler(t))
	rc := dialRaw(t, ts.addr)
	rc.write(clientFrame(true, 0x9, []byte("abc"), true))
	op, p, err := rc.readFrame()
	if err != nil || op != 0xA || string(p) != "abc" {
		t.Fatalf("got op %#x %q err %v, want pong \"abc\"", op, p, err)
	}
	rc.write(clientFrame(true, 0xA, []byte("unsolicited"), true)) // ignored
	rc.write(text("still open"))
	rc.expectText("still open")
}

func TestProtocolErrors(t *testing.T) {
	const maxFrame = 1024
	long := func(n int) []byte { return bytes.Repeat([]byte("a"), n) }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	tests := []struct {
		name  string
		input []byte
		code  int
	}{
		{"unmasked", clientFrame(true, 0x1, []byte("hi"), false), CloseProtocolError},
		{"binary", clientFrame(true, 0x2, []byte{1, 2, 3}, true), CloseUnsupportedData},
		{"invalid UTF-8", clientFrame(true, 0x1, []byte{'a', 0xff, 0xfe}, true), CloseInvalidPayload},
		{"truncated UTF-8 across fragments", cat(clientFrame(false, 0x1, []byte("ok"), true), clientFrame(true, 0x0, []byte{0xc3}, true)), CloseInvalidPayload},
		{"oversize frame", clientFrame(true, 0x1, long(maxFrame+1), true), CloseMessageTooBig},
		{"oversize header only", []byte{0x81, 0xFF, 0, 0, 0, 0, 0x10, 0, 0, 0, 1, 2, 3, 4}, CloseMessageTooBig},
		{"oversize reassembled", cat(clientFrame(false, 0x1, long(600), true), clientFrame(true, 0x0, long(600), true)), CloseMessageTooBig},
		{"reserved bit", func() []byte { f := text("x"); f[0] |= 0x40; return f }(), CloseProtocolError},
		{"unknown opcode", clientFrame(true, 0x3, nil, true), CloseProtocolError},
		{"unknown control opcode", clientFrame(true, 0xB, nil, true), CloseProtocolError},
		{"ping over 125 bytes", clientFrame(true, 0x9, long(126), true), CloseProtocolError},
		{"fragmented ping", clientFrame(false, 0x9, nil, true), CloseProtocolError},
		{"continuation without start", clientFrame(true, 0x0, []byte("x"), true), CloseProtocolError},
		{"text inside fragmented message", cat(clientFrame(false, 0x1, []byte("a"), true), text("b")), CloseProtocolError},
		{"64-bit length with top bit", []byte{0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}, CloseProtocolError},
		{"close with 1-byte payload", clientFrame(true, 0x8, []byte{3}, true), CloseProtocolError},
		{"close with reserved code 1005", clientFrame(true, 0x8, []byte{0x03, 0xED}, true), CloseProtocolError},
		{"close reason not UTF-8", clientFrame(true, 0x8, []byte{0x03, 0xE8, 0xff}, true), CloseInvalidPayload},
	}
	h := newHandler(t)
	ts := startServer(t, Config{MaxFrame: maxFrame}, h)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := dialRaw(t, ts.addr)
			sc := h.nextOpen(t)
			rc.write(tt.input)
			rc.expectClose(tt.code)
			if ev := h.waitClose(t, sc.ID(), 5*time.Second); ev.code != tt.code {
				t.Fatalf("OnClose code %d, want %d", ev.code, tt.code)
			}
		})
	}
	if got := ts.s.Stats().Closes[CloseProtocolError]; got < 10 {
		t.Fatalf("Stats().Closes[1002] = %d", got)
	}
}

func TestSlowFrameTimesOut(t *testing.T) {
	h := newHandler(t)
	ts := startServer(t, Config{ReadTimeout: 200 * time.Millisecond}, h)
	rc := dialRaw(t, ts.addr)
	sc := h.nextOpen(t)
	f := text(strings.Repeat("z", 100))
	start := time.Now()
	rc.write(f[:20]) // a started frame that never finishes
	rc.expectClose(ClosePolicyViolation)
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("closed after %v, before ReadTimeout", d)
	}
	if ev := h.waitClose(t, sc.ID(), 5*time.Second); ev.code != ClosePolicyViolation {
		t.Fatalf("OnClose code %d", ev.code)
	}
}

func TestCloseHandshake(t *testing.T) {
	h := newHandler(t)
	ts := startServer(t, Config{}, h)

	t.Run("client closes with a code", func(t *testing.T) {
		c := dialGorilla(t, ts.addr, "", nil)
		sc := h.nextOpen(t)
		msg := websocket.FormatCloseMessage(4001, "bye")
		if err := c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		_, _, err := c.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 4001 {
			t.Fatalf("client read %v, want the echoed close 4001", err)
		}
		if ev := h.waitClose(t, sc.ID(), 5*time.Second); ev.code != 4001 || ev.reason != "bye" {
			t.Fatalf("OnClose %+v", ev)
		}
	})

	t.Run("client closes without a code", func(t *testing.T) {
		rc := dialRaw(t, ts.addr)
		sc := h.nextOpen(t)
		rc.write(clientFrame(true, 0x8, nil, true))
		rc.expectClose(CloseNoStatus) // echoed with an empty payload
		if ev := h.waitClose(t, sc.ID(), 5*time.Second); ev.code != CloseNoStatus {
			t.Fatalf("OnClose %+v", ev)
		}
	})

	t.Run("server closes", func(t *testing.T) {
		c := dialGorilla(t, ts.addr, "", nil)
		sc := h.nextOpen(t)
		if err := sc.Send([]byte("last words")); err != nil {
			t.Fatal(err)
		}
		sc.Close(4000, "kicked")
		sc.Close(4002, "second close is a no-op")
		if err := sc.Send([]byte("too late")); !errors.Is(err, ErrClosed) {
			t.Fatalf("Send after Close = %v, want ErrClosed", err)
		}
		if _, m, err := c.ReadMessage(); err != nil || string(m) != "last words" {
			t.Fatalf("queued frame before close: %q %v", m, err)
		}
		_, _, err := c.ReadMessage() // gorilla answers the close
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 4000 || ce.Text != "kicked" {
			t.Fatalf("client read %v, want close 4000 kicked", err)
		}
		if ev := h.waitClose(t, sc.ID(), 5*time.Second); ev.code != 4000 || ev.reason != "kicked" {
			t.Fatalf("OnClose %+v", ev)
		}
	})

	t.Run("peer vanishes", func(t *testing.T) {
		rc := dialRaw(t, ts.addr)
		sc := h.nextOpen(t)
		_ = rc.conn.Close()
		if ev := h.waitClose(t, sc.ID(), 5*time.Second); ev.code != CloseAbnormal {
			t.Fatalf("OnClose %+v, want 1006", ev)
		}
	})

	t.Run("close from OnText", func(t *testing.T) {
		h.setOnText(func(c *Conn, msg []byte) { c.Close(CloseNormal, string(msg)) })
		defer h.setOnText(nil)
		rc := dialRaw(t, ts.addr)
		sc := h.nextOpen(t)
		rc.write(append(text("done"), text("dropped: arrives after the close")...))
		rc.expectClose(CloseNormal) // raw client never answers: closed after CloseGrace
		if ev := h.waitClose(t, sc.ID(), 5*time.Second); ev.code != CloseNormal || ev.reason != "done" {
			t.Fatalf("OnClose %+v", ev)
		}
	})
	waitFor(t, 5*time.Second, "no open conns", func() bool { return ts.s.Conns() == 0 })
}

func TestServerPingAndIdleClose(t *testing.T) {
	h := newHandler(t)
	cfg := Config{PingInterval: 100 * time.Millisecond, IdleTimeout: 400 * time.Millisecond, CloseGrace: 200 * time.Millisecond}
	ts := startServer(t, cfg, h)

	// gorilla answers pings while it reads, so this client stays alive.
	alive := dialGorilla(t, ts.addr, "", nil)
	aliveConn := h.nextOpen(t)
	aliveErr := make(chan error, 1)
	go func() {
		for {
			if _, _, err := alive.ReadMessage(); err != nil {
				aliveErr <- err
				return
			}
		}
	}()

	// The idle clock starts when the server creates the Conn, before OnOpen and so
	// before nextOpen returns: measure from before the dial, or the wait looks
	// shorter than IdleTimeout by the time the open took (396 ms once in CI).
	start := time.Now()
	rc := dialRaw(t, ts.addr) // never answers
	silent := h.nextOpen(t)
	pings := 0
	for {
		op, p, err := rc.readFrame()
		if err != nil {
			t.Fatalf("after %d pings: %v", pings, err)
		}
		if op == 0x9 {
			if pings == 0 && time.Since(start) < 50*time.Millisecond {
				t.Fatalf("first ping after %v, PingInterval is 100ms", time.Since(start))
			}
			pings++
			continue
		}
		if op != 0x8 || len(p) < 2 || int(p[0])<<8|int(p[1]) != CloseGoingAway {
			t.Fatalf("got op %#x %q, want close 1001", op, p)
		}
		break
	}
	idle := time.Since(start)
	if pings < 2 || idle < cfg.IdleTimeout {
		t.Fatalf("idle close after %v with %d pings; want >= %v and >= 2 pings", idle, pings, cfg.IdleTimeout)
	}
	rc.expectEOF() // after CloseGrace, since the client never answers
	if ev := h.waitClose(t, silent.ID(), 5*time.Second); ev.code != CloseGoingAway || ev.reason != "idle timeout" {
		t.Fatalf("OnClose %+v", ev)
	}

	// The pong-answering client outlived several IdleTimeouts.
	select {
	case err := <-aliveErr:
		t.Fatalf("pong-answering client closed: %v", err)
	default:
	}
	if time.Since(start) < 2*cfg.IdleTimeout {
		waitFor(t, 2*time.Second, "2×IdleTimeout to pass", func() bool { return time.Since(start) >= 2*cfg.IdleTimeout })
	}
	if err := aliveConn.Send([]byte("still here")); err != nil {
		t.Fatalf("pong-answering conn: %v", err)
	}
}

// tinyRecvBuf dials with a 4 KiB receive buffer so the server's writes block quickly.
func tinyRecvBuf(t testing.TB, addr string) *rawClient {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	rc := &rawClient{t: t, conn: conn, br: bufio.NewReader(conn)}
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	rc.write([]byte(upgradeRequest("/ws")))
	rc.expect101()
	return rc
}

func TestSlowReaderClosedWith1013(t *testing.T) {
	h := newHandler(t)
	ts := startServer(t, Config{SendQueue: 8, WriteTimeout: 300 * time.Millisecond, CloseGrace: 200 * time.Millisecond}, h)
	tinyRecvBuf(t, ts.addr) // upgrades, then never reads
	slow := h.nextOpen(t)
	fast := dialGorilla(t, ts.addr, "", nil)
	fastConn := h.nextOpen(t)
	got := make(chan string, 64)
	go func() {
		defer close(got)
		for {
			_, m, err := fast.ReadMessage()
			if err != nil {
				return
			}
			got <- string(m)
		}
	}()
	receive := func(want string) {
		t.Helper()
		select {
		case m := <-got:
			if m != want {
				t.Fatalf("fast client got %q, want %q", m, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("fast client did not get %q", want)
		}
	}

	big := bytes.Repeat([]byte("b"), 256<<10) // shared by every Send
	full := -1
	for i := 0; i < 400 && full < 0; i++ {
		start := time.Now()
		err := slow.Send(big)
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Fatalf("Send to a stuck conn took %v", d)
		}
		switch {
		case errors.Is(err, ErrQueueFull):
			full = i
		case err != nil:
			t.Fatalf("send %d: %v", i, err)
		}
		msg := fmt.Sprintf("tick %d", i)
		if err := fastConn.Send([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		receive(msg)
	}
	if full < 0 {
		t.Fatal("the stuck connection's queue never filled")
	}
	if err := slow.Send(big); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after ErrQueueFull = %v, want ErrClosed", err)
	}
	if ev := h.waitClose(t, slow.ID(), 5*time.Second); ev.code != CloseTryAgainLater {
		t.Fatalf("OnClose %+v, want 1013", ev)
	}
	for i := range 20 {
		msg := fmt.Sprintf("after %d", i)
		if err := fastConn.Send([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		receive(msg)
	}
	if n := ts.s.Stats().Closes[CloseTryAgainLater]; n != 1 {
		t.Fatalf("Closes[1013] = %d", n)
	}
}

func TestShutdownSendsGoingAway(t *testing.T) {
	h := newHandler(t)
	ts := startServer(t, Config{}, h)
	const n = 5
	errs := make(chan error, n)
	for range n {
		c := dialGorilla(t, ts.addr, "", nil)
		go func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	waitFor(t, 5*time.Second, "all open", func() bool { return ts.s.Conns() == n })
	raw := dialRaw(t, ts.addr) // never answers the close: closed after the grace
	waitFor(t, 5*time.Second, "all open", func() bool { return ts.s.Conns() == n+1 })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for range n {
		var ce *websocket.CloseError
		if err := <-errs; !errors.As(err, &ce) || ce.Code != CloseGoingAway {
			t.Fatalf("client got %v, want close 1001", err)
		}
	}
	raw.expectClose(CloseGoingAway)
	if ts.s.Conns() != 0 {
		t.Fatalf("Conns() = %d after Shutdown", ts.s.Conns())
	}
	for range n + 1 {
		if ev := <-h.closed; ev.code != CloseGoingAway {
			t.Fatalf("OnClose %+v", ev)
		}
	}
	if c, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		c.Close()
		t.Fatal("listener still accepting after Shutdown")
	}
}

func TestBroadcastToManyClients(t *testing.T) {
	h := newHandler(t)
	ts := startServer(t, Config{}, h)
	const clients, senders, perSender = 200, 4, 25
	conns := make([]*Conn, 0, clients)
	var wg sync.WaitGroup
	failures := make(chan string, clients)
	for range clients {
		c := dialGorilla(t, ts.addr, "", nil)
		conns = append(conns, h.nextOpen(t))
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := make([]int, senders) // per-sender order must hold
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			for range senders * perSender {
				_, m, err := c.ReadMessage()
				if err != nil {
					failures <- err.Error()
					return
				}
				var s, k int
				if _, err := fmt.Sscanf(string(m), "s%d-%d", &s, &k); err != nil || k != next[s] {
					failures <- fmt.Sprintf("got %q, want s%d-%d", m, s, next[s])
					return
				}
				next[s]++
			}
		}()
	}
	var send sync.WaitGroup
	for s := range senders {
		send.Add(1)
		go func() {
			defer send.Done()
			for k := range perSender {
				frame := fmt.Appendf(nil, "s%d-%d", s, k) // encoded once, shared by all
				for _, c := range conns {
					if err := c.Send(frame); err != nil {
						failures <- err.Error()
						return
					}
				}
			}
		}()
	}
	send.Wait()
	wg.Wait()
	close(failures)
	for f := range failures {
		t.Fatal(f)
	}
}

func TestIdleConnectionsHoldNoGoroutines(t *testing.T) {
	h := newHandler(t)
	ts := startServer(t, Config{}, h)
	dialGorilla(t, ts.addr, "", nil) // warm up pollers and pools
	h.nextOpen(t)
	settle := func() int {
		runtime.GC()
		return runtime.NumGoroutine()
	}
	base := settle()
	const n = 200
	for range n {
		dialGorilla(t, ts.addr, "", nil) // no reader goroutine on the client side
	}
	waitFor(t, 10*time.Second, "200 upgrades", func() bool { return ts.s.Conns() == n+1 })
	var extra int
	deadline := time.Now().Add(5 * time.Second)
	for {
		extra = settle() - base
		if extra <= 10 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if extra > 10 {
		t.Fatalf("%d idle connections added %d goroutines", n, extra)
	}
}

// TestRandomInputNeverHangs feeds random and half-valid bytes after a valid upgrade
// (and random request heads) and checks that the server closes every connection in
// bounded time, never panics (netpoll's gopool is disabled in TestMain, so a panic
// kills the test binary) and keeps serving.
func TestRandomInputNeverHangs(t *testing.T) {
	h := newHandler(t)
	cfg := Config{
		MaxFrame: 4096, ReadTimeout: 200 * time.Millisecond, HandshakeTimeout: 300 * time.Millisecond,
		PingInterval: 100 * time.Millisecond, IdleTimeout: 300 * time.Millisecond, CloseGrace: 100 * time.Millisecond,
	}
	ts := startServer(t, cfg, h)
	rng := rand.New(rand.NewPCG(1, 2))
	randBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}
	randomFrame := func() []byte {
		op := []byte{0, 1, 2, 3, 8, 9, 10, 11}[rng.IntN(8)]
		n := rng.IntN(200)
		if rng.IntN(10) == 0 {
			n = rng.IntN(6000)
		}
		f := clientFrame(rng.IntN(3) > 0, op, randBytes(n), rng.IntN(8) > 0)
		if rng.IntN(10) == 0 {
			f[0] |= byte(rng.IntN(8)) << 4 // reserved bits
		}
		if rng.IntN(10) == 0 {
			f = f[:rng.IntN(len(f))] // truncated
		}
		return f
	}
	inputs := make([][]byte, 0, 200)
	for i := range 160 {
		var b []byte
		b = append(b, upgradeRequest("/ws")...)
		switch i % 4 {
		case 0:
			b = append(b, randBytes(1+rng.IntN(300))...)
		case 1, 2:
			for range 1 + rng.IntN(6) {
				b = append(b, randomFrame()...)
			}
		case 3:
			b = append(b, text("valid first")...)
			b = append(b, randBytes(1+rng.IntN(64))...)
		}
		inputs = append(inputs, b)
	}
	for range 40 { // random request heads on the WebSocket path
		b := []byte("GET /ws")
		b = append(b, randBytes(rng.IntN(200))...)
		if rng.IntN(2) == 0 {
			b = append(b, "\r\n\r\n"...)
		}
		inputs = append(inputs, b)
	}

	var wg sync.WaitGroup
	sem := make(chan struct{}, 40)
	for i, in := range inputs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conn, err := net.Dial("tcp", ts.addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write(in); err != nil {
				return // the server may already have closed
			}
			// The server must end the connection: read until EOF or reset.
			_, err = io.Copy(io.Discard, conn)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("input %d: server kept the connection open for 5s", i)
			}
		}()
	}
	wg.Wait()

	// Still serving both protocols.
	c := dialGorilla(t, ts.addr, "", nil)
	if err := c.WriteMessage(websocket.TextMessage, []byte("after fuzz")); err != nil {
		t.Fatal(err)
	}
	if _, m, err := c.ReadMessage(); err != nil || string(m) != "after fuzz" {
		t.Fatalf("echo after fuzz: %q %v", m, err)
	}
	rc := dialTCP(t, ts.addr)
	rc.write([]byte("GET /api/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
	if resp := rc.response(); resp.StatusCode != 200 {
		t.Fatalf("HTTP after fuzz: %d", resp.StatusCode)
	}
}
