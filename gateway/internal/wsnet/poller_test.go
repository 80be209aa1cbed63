package wsnet

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A socket that fills up makes the writer wait for the poller's writable event and
// carry on: every frame of a burst far larger than the socket buffers arrives whole
// and in order at a client with a 4 KiB receive buffer.
func TestBackpressuredSendArrivesWhole(t *testing.T) {
	h := newHandler(t)
	ts := startServer(t, Config{SendQueue: 256, WriteTimeout: 10 * time.Second}, h)
	rc := tinyRecvBuf(t, ts.addr)
	sc := h.nextOpen(t)
	const frames, size = 128, 128 << 10 // 16 MiB: more than both sockets' buffers hold
	for i := range frames {
		p := bytes.Repeat([]byte{'a' + byte(i%26)}, size)
		binary.BigEndian.PutUint32(p, uint32(i))
		if err := sc.Send(p); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	for i := range frames {
		op, p, err := rc.readFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if op != 0x1 || len(p) != size || binary.BigEndian.Uint32(p) != uint32(i) ||
			bytes.Count(p[4:], []byte{'a' + byte(i%26)}) != size-4 {
			t.Fatalf("frame %d: op %d, %d bytes, index %d", i, op, len(p), binary.BigEndian.Uint32(p))
		}
	}
}

// A close frame followed at once by the FIN: the frame is still handled, so OnClose
// reports the peer's code rather than an abnormal closure.
func TestCloseFrameThenHangUp(t *testing.T) {
	h := newHandler(t)
	ts := startServer(t, Config{}, h)
	for range 20 {
		rc := dialRaw(t, ts.addr)
		sc := h.nextOpen(t)
		rc.write(append(clientFrame(true, 0x1, []byte("last"), true),
			clientFrame(true, 0x8, binary.BigEndian.AppendUint16(nil, 4003), true)...))
		_ = rc.conn.Close()
		if ev := h.waitClose(t, sc.ID(), 5*time.Second); ev.code != 4003 {
			t.Fatalf("OnClose %+v, want the peer's 4003", ev)
		}
	}
}

// An idle upgraded socket is a Conn and an FDOperator, not a netpoll Connection (which
// alone costs ~4 KiB): its server-side heap, test handler's bookkeeping included, stays
// under 1.5 KiB (~1.0–1.15 KiB measured; the pollers' event arrays, which grow with
// bursts, add noise). The clients are bare descriptors, so the heap is the server's.
func TestIdleSocketHeap(t *testing.T) {
	h := newHandler(t)
	h.forgetRequests = true
	ts := startServer(t, Config{}, h)
	open := func(n int) {
		for range n {
			rawUpgrade(t, ts.addr)
		}
	}
	open(50) // warm up pollers, pools and the handler's maps
	waitFor(t, 10*time.Second, "50 upgrades", func() bool { return ts.s.Conns() == 50 })
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	const n = 2000
	open(n)
	waitFor(t, 20*time.Second, "2000 upgrades", func() bool { return ts.s.Conns() == n+50 })
	after := heap()
	per := (float64(after) - float64(before)) / n
	t.Logf("server heap per idle socket: %.0f B", per)
	if per > 1536 {
		t.Fatalf("server heap per idle socket %.0f B, want at most 1.5 KiB", per)
	}
}

// rawRequest connects a blocking socket to addr with plain syscalls (no Go object
// beyond the descriptor, closed at cleanup) and sends an upgrade request on it.
func rawRequest(t *testing.T, addr string) int {
	t.Helper()
	_, ps, _ := net.SplitHostPort(addr)
	port, err := strconv.Atoi(ps)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Connect(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := syscall.Write(fd, []byte(upgradeRequest("/ws"))); err != nil {
		t.Fatal(err)
	}
	return fd
}

// rawUpgrade is rawRequest up to a read 101 response.
func rawUpgrade(t *testing.T, addr string) {
	t.Helper()
	fd := rawRequest(t, addr)
	var head []byte
	buf := make([]byte, 512)
	for !bytes.Contains(head, []byte("\r\n\r\n")) {
		n, err := syscall.Read(fd, buf)
		if err != nil || n == 0 {
			t.Fatalf("reading the 101: %d bytes, %v", n, err)
		}
		head = append(head, buf[:n]...)
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101")) {
		t.Fatalf("upgrade answered %q", head)
	}
}

// The 101 and what OnOpen sends leave in one write: a client's first read after the
// request returns both (loopback delivers one write as one segment).
func TestGreetingSharesThe101Write(t *testing.T) {
	h := newHandler(t)
	h.onOpen = func(c *Conn) { _ = c.Send([]byte("hello")) }
	ts := startServer(t, Config{}, h)
	fd := rawRequest(t, ts.addr)
	buf := make([]byte, 4096)
	n, err := syscall.Read(fd, buf)
	if err != nil {
		t.Fatal(err)
	}
	got := buf[:n]
	head, frame, ok := bytes.Cut(got, []byte("\r\n\r\n"))
	if !ok || !bytes.HasPrefix(head, []byte("HTTP/1.1 101")) {
		t.Fatalf("first read %q: no 101 head", got)
	}
	if want := []byte{0x81, 5, 'h', 'e', 'l', 'l', 'o'}; !bytes.Equal(frame, want) {
		t.Fatalf("first read after the head: %q, want the greeting frame %q", frame, want)
	}
}

// A client that sends faster than its messages are handled is closed with 1008 once
// more than the backlog bound (4 MiB here) waits unparsed, instead of growing the
// server's memory without limit; the poller keeps reading (and discarding) meanwhile.
func TestUnreadInputOverflowCloses1008(t *testing.T) {
	h := newHandler(t)
	release := make(chan struct{})
	var once sync.Once
	h.setOnText(func(*Conn, []byte) { once.Do(func() { <-release }) })
	ts := startServer(t, Config{}, h)
	rc := dialRaw(t, ts.addr)
	sc := h.nextOpen(t)
	payload := bytes.Repeat([]byte("x"), 60<<10)
	frame := clientFrame(true, 0x1, payload, true)
	// 9 MiB while the handler sits on the first message. The goroutine that called it
	// holds what it took from the poller before (at most one bound's worth), so only
	// past twice the bound is an overflow certain.
	for range 150 {
		rc.write(frame)
	}
	close(release)
	rc.expectClose(ClosePolicyViolation)
	if ev := h.waitClose(t, sc.ID(), 5*time.Second); ev.code != ClosePolicyViolation || ev.reason != "too much unread input" {
		t.Fatalf("OnClose %+v, want 1008 too much unread input", ev)
	}
}

// A Handler that panics on a message fails that connection with 1011 and nothing else:
// the process keeps serving, the connection gets exactly one OnClose, and another
// connection's messages still flow.
func TestHandlerPanicFailsOnlyItsConnection(t *testing.T) {
	h := newHandler(t)
	h.setOnText(func(c *Conn, msg []byte) {
		if string(msg) == "boom" {
			panic("handler bug")
		}
		_ = c.Send(bytes.Clone(msg))
	})
	var logged lockedBuffer
	ts := startServer(t, Config{Log: slog.New(slog.NewTextHandler(&logged, nil))}, h)
	bad := dialRaw(t, ts.addr)
	badConn := h.nextOpen(t)
	good := dialGorilla(t, ts.addr, "", nil)
	h.nextOpen(t)
	bad.write(clientFrame(true, 0x1, []byte("boom"), true))
	bad.expectClose(CloseInternalError)
	if ev := h.waitClose(t, badConn.ID(), 5*time.Second); ev.code != CloseInternalError {
		t.Fatalf("OnClose %+v, want 1011", ev)
	}
	if err := good.WriteMessage(1, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if _, m, err := good.ReadMessage(); err != nil || string(m) != "still here" {
		t.Fatalf("the other connection read %q, %v", m, err)
	}
	if l := logged.String(); !strings.Contains(l, "handler panicked") || !strings.Contains(l, "handler bug") {
		t.Fatalf("the panic was not logged with its value: %q", l)
	}
}

// lockedBuffer is a bytes.Buffer safe for a logger and a test to share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A send queue that overflows while OnOpen runs (pushes racing the greeting) closes the
// connection with 1013 after the 101, never instead of it.
func TestQueueFullDuringOpenKeepsThe101(t *testing.T) {
	h := newHandler(t)
	h.onOpen = func(c *Conn) {
		for range 8 {
			_ = c.Send([]byte("push"))
		}
	}
	ts := startServer(t, Config{SendQueue: 4}, h)
	rc := dialRaw(t, ts.addr) // reads and checks the 101 first
	sc := h.nextOpen(t)
	rc.expectClose(CloseTryAgainLater)
	if ev := h.waitClose(t, sc.ID(), 5*time.Second); ev.code != CloseTryAgainLater {
		t.Fatalf("OnClose %+v, want 1013", ev)
	}
}

// A panic in OnOpen fails only that connection: the client still gets its 101 and
// then 1011, OnClose follows, and the server is empty again.
func TestOnOpenPanicFailsOnlyItsConnection(t *testing.T) {
	h := newHandler(t)
	h.onOpen = func(*Conn) { panic("open bug") }
	var logged lockedBuffer
	ts := startServer(t, Config{Log: slog.New(slog.NewTextHandler(&logged, nil))}, h)
	rc := dialRaw(t, ts.addr) // checks the 101
	sc := h.nextOpen(t)
	rc.expectClose(CloseInternalError)
	if ev := h.waitClose(t, sc.ID(), 5*time.Second); ev.code != CloseInternalError {
		t.Fatalf("OnClose %+v, want 1011", ev)
	}
	waitFor(t, 5*time.Second, "no open connection", func() bool { return ts.s.Conns() == 0 })
	if !strings.Contains(logged.String(), "open bug") {
		t.Fatalf("the panic was not logged: %q", logged.String())
	}
}

// A burst larger than one readable event reads, followed at once by a close frame and
// the FIN: every frame is still handled (the rest is read when the hang-up is seen),
// so nothing sent before the FIN is lost and OnClose reports the peer's code.
func TestBurstThenHangUpIsReadWhole(t *testing.T) {
	h := newHandler(t)
	var mu sync.Mutex
	got := 0
	h.setOnText(func(*Conn, []byte) { mu.Lock(); got++; mu.Unlock() })
	ts := startServer(t, Config{}, h)
	for range 5 {
		rc := dialRaw(t, ts.addr)
		sc := h.nextOpen(t)
		mu.Lock()
		got = 0
		mu.Unlock()
		var burst []byte
		const frames = 64 // 1 MiB: eight times what one readable event reads
		for range frames {
			burst = append(burst, clientFrame(true, 0x1, bytes.Repeat([]byte("y"), 16<<10), true)...)
		}
		burst = append(burst, clientFrame(true, 0x8, binary.BigEndian.AppendUint16(nil, 4003), true)...)
		rc.write(burst)
		_ = rc.conn.Close()
		if ev := h.waitClose(t, sc.ID(), 5*time.Second); ev.code != 4003 {
			t.Fatalf("OnClose %+v, want the peer's 4003", ev)
		}
		mu.Lock()
		n := got
		mu.Unlock()
		if n != frames {
			t.Fatalf("%d of %d frames handled", n, frames)
		}
	}
}

// The queued 101 does not count against SendQueue: with room for one frame, OnOpen's
// greeting fits.
func TestThe101IsNotInTheSendQueueBound(t *testing.T) {
	h := newHandler(t)
	h.onOpen = func(c *Conn) {
		if err := c.Send([]byte("hello")); err != nil {
			t.Errorf("greeting: %v", err)
		}
	}
	ts := startServer(t, Config{SendQueue: 1}, h)
	rc := dialRaw(t, ts.addr)
	h.nextOpen(t)
	op, p, err := rc.readFrame()
	if err != nil || op != 0x1 || string(p) != "hello" {
		t.Fatalf("first frame: op %d %q, %v", op, p, err)
	}
}
