package wsnet

import (
	"bytes"
	"encoding/binary"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		in   string
		want verdict
	}{
		{"G", needMore},
		{"GET", needMore},
		{"GET ", needMore},
		{"GET /w", needMore},
		{"GET /ws", needMore},
		{"GET /ws ", ourPath},
		{"GET /ws?token=1", ourPath},
		{"POST /ws HTTP/1.1", ourPath}, // method is checked after the head is read
		{"GET /wsx", notOurs},
		{"GET /ws/", notOurs},
		{"GET /api/ping HTTP/1.1", notOurs},
		{"GET / HTTP/1.1", notOurs},
		{"get /ws ", notOurs},
		{" GET /ws ", notOurs},
		{"\x16\x03\x01", notOurs}, // TLS hello
		{strings.Repeat("A", maxMethod+1), notOurs},
		{strings.Repeat("A", maxMethod), needMore},
	}
	for _, tt := range tests {
		if got := classify([]byte(tt.in), "/ws"); got != tt.want {
			t.Errorf("classify(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestParseHead(t *testing.T) {
	head := "GET /ws?token=abc&x=%zz&y=2 HTTP/1.1\r\n" +
		"Host: h\r\nupgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n" +
		"Sec-WebSocket-Key: " + testKey + "\r\nSec-WebSocket-Version: 13\r\n" +
		"Origin: http://a.test\r\nSec-WebSocket-Protocol: v1, v2\r\nX-Forwarded-For: 10.0.0.1\r\nCookie: secret\r\n\r\n"
	h := parseHead([]byte(head))
	if !h.websocket || h.status != 0 {
		t.Fatalf("websocket %v status %d %q", h.websocket, h.status, h.problem)
	}
	if h.req.URI != "/ws?token=abc&x=%zz&y=2" || h.req.Query.Get("token") != "abc" || h.req.Query.Get("y") != "2" {
		t.Fatalf("URI %q query %v", h.req.URI, h.req.Query)
	}
	if h.req.Header.Get("Origin") != "http://a.test" || h.req.Header.Get("X-Forwarded-For") != "10.0.0.1" ||
		h.req.Header.Get("Cookie") != "" || !offeredProtocol(h.req.Header, "v2") || offeredProtocol(h.req.Header, "v3") {
		t.Fatalf("header %v", h.req.Header)
	}

	plain := parseHead([]byte("GET /ws HTTP/1.1\r\nHost: h\r\n\r\n"))
	if plain.websocket || plain.status != 0 {
		t.Fatalf("a request without Upgrade must go to Hertz: %+v", plain)
	}
	dupKey := strings.Replace(head, "Origin:", "Sec-WebSocket-Key: "+testKey+"\r\nOrigin:", 1)
	if h := parseHead([]byte(dupKey)); h.status != http.StatusBadRequest {
		t.Fatalf("duplicate key: status %d", h.status)
	}
	ctl := strings.Replace(head, "Origin: http://a.test", "Origin: http://a.test\x01", 1)
	if h := parseHead([]byte(ctl)); h.status != http.StatusBadRequest {
		t.Fatalf("control character in a value: status %d", h.status)
	}
}

func TestAcceptKey(t *testing.T) {
	if got := acceptKey(testKey); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" { // RFC 6455 §1.3
		t.Fatalf("acceptKey = %q", got)
	}
}

func TestClosePayload(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	tests := []struct {
		code     int
		reason   string
		wantCode int
	}{
		{CloseGoingAway, "bye", CloseGoingAway},
		{CloseNoStatus, "", CloseNormal},
		{CloseAbnormal, "", CloseNormal},
		{4999, long, 4999},
		{5000, "", CloseNormal},
		{1004, "", CloseNormal},
	}
	for _, tt := range tests {
		p := closePayload(tt.code, tt.reason)
		if len(p) > 125 || int(binary.BigEndian.Uint16(p)) != tt.wantCode || !utf8.Valid(p[2:]) {
			t.Errorf("closePayload(%d, %d bytes) = code %d, %d bytes", tt.code, len(tt.reason), binary.BigEndian.Uint16(p), len(p))
		}
	}
}

func TestFrameHeader(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536, 1 << 20} {
		b := appendFrameHeader(nil, 0x1, n)
		if len(b) != frameHeaderLen(n) || b[0] != 0x81 {
			t.Fatalf("n=%d: header % x", n, b)
		}
		var got int
		switch l := int(b[1]); l {
		case 126:
			got = int(binary.BigEndian.Uint16(b[2:]))
		case 127:
			got = int(binary.BigEndian.Uint64(b[2:]))
		default:
			got = l
		}
		if got != n {
			t.Fatalf("n=%d encoded as %d", n, got)
		}
	}
}

// TestPongs: received skips the process goroutine only for input that is nothing
// but whole client pongs; anything else readFrame must see (and may reject).
func TestPongs(t *testing.T) {
	pong := func(payload int) []byte { return clientFrame(true, 0xA, make([]byte, payload), true) }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tt := range []struct {
		name string
		p    []byte
		want int
	}{
		{"one empty pong", pong(0), 1},
		{"pong of 125 bytes", pong(125), 1},
		{"two pongs", cat(pong(4), pong(0)), 2},
		{"nothing", nil, 0},
		{"pong of 126 bytes", pong(126), 0},
		{"unmasked pong", clientFrame(true, 0xA, nil, false), 0},
		{"unmasked pong of 4 bytes, then 4 more", cat(clientFrame(true, 0xA, make([]byte, 4), false), []byte{0x81, 0x84, 1, 2}), 0},
		{"pong without FIN", clientFrame(false, 0xA, nil, true), 0},
		{"pong with a reserved bit", func() []byte { f := pong(0); f[0] |= 0x40; return f }(), 0},
		{"half a pong", pong(8)[:7], 0},
		{"pong then half a pong", cat(pong(0), pong(8)[:9]), 0},
		{"ping", clientFrame(true, 0x9, nil, true), 0},
		{"pong then text", cat(pong(0), text("hi")), 0},
		{"text then pong", cat(text("hi"), pong(0)), 0},
	} {
		if got := pongs(tt.p); got != tt.want {
			t.Errorf("%s: pongs(% x) = %d, want %d", tt.name, tt.p, got, tt.want)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{Path: "chat"}.withDefaults()
	if c.Path != "/chat" || c.MaxFrame != DefaultMaxFrame || c.SendQueue != DefaultSendQueue ||
		c.IdleTimeout != DefaultIdleTimeout || c.CloseGrace != DefaultCloseGrace {
		t.Fatalf("%+v", c)
	}
	if got := c.tick(); got != 250*time.Millisecond {
		t.Fatalf("tick = %v", got)
	}
	if got := (Config{PingInterval: time.Millisecond}).withDefaults().tick(); got != 5*time.Millisecond {
		t.Fatalf("tick floor = %v", got)
	}
}
