package wsnet

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudwego/hertz/pkg/app/server"
	"golang.org/x/sys/unix"
)

// schedSlack is what the close-time bounds allow, beyond HandshakeTimeout plus one
// sweeper tick, for scheduling under -race on a busy machine.
const schedSlack = 500 * time.Millisecond

// dialAt connects to addr and returns the connection with the time just before the
// dial: the server accepts after that, so its handshake deadline is later than
// dialed + HandshakeTimeout.
func dialAt(t testing.TB, addr string) (conn net.Conn, dialed time.Time) {
	t.Helper()
	dialed = time.Now()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn, dialed
}

// awaitServerClose reads (and discards) until the server ends conn (EOF or reset) and
// returns how long after since that happened. It reports an error if conn is still
// open at since+bound. Safe to call from any goroutine.
func awaitServerClose(t testing.TB, conn net.Conn, since time.Time, bound time.Duration) time.Duration {
	_ = conn.SetReadDeadline(since.Add(bound))
	_, err := io.Copy(io.Discard, conn)
	d := time.Since(since)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("%v: server kept the connection open for %v (bound %v)", conn.LocalAddr(), d, bound)
	}
	return d
}

// TestSilentConnectionsAreClosed: sockets that connect and never send a byte never run
// OnRequest; without the pending set nothing would ever close them.
func TestSilentConnectionsAreClosed(t *testing.T) {
	const ht = 500 * time.Millisecond
	cfg := Config{HandshakeTimeout: ht}
	tick := cfg.withDefaults().tick()
	ts := startServer(t, cfg, newHandler(t))

	settle := func() int {
		runtime.GC()
		return runtime.NumGoroutine()
	}
	base := settle()
	const n = 64
	conns := make([]net.Conn, n)
	dialed := make([]time.Time, n)
	for i := range conns {
		conns[i], dialed[i] = dialAt(t, ts.addr)
	}
	waitFor(t, ht/2, "silent connections pending", func() bool { return ts.s.Pending() == n })
	if extra := settle() - base; extra > 10 {
		t.Fatalf("%d pending connections hold %d goroutines", n, extra)
	}

	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat[i] = awaitServerClose(t, c, dialed[i], ht+tick+schedSlack)
		}()
	}
	wg.Wait()
	var lo, hi time.Duration = time.Hour, 0
	for i, d := range lat {
		if d < ht {
			t.Errorf("conn %d closed %v after dial, before HandshakeTimeout %v", i, d, ht)
		}
		lo, hi = min(lo, d), max(hi, d)
	}
	t.Logf("%d silent conns closed %v..%v after dial (HandshakeTimeout %v, tick %v)", n, lo, hi, ht, tick)
	// The sweeper counts and unlists a connection before it closes it.
	if p := ts.s.Pending(); p != 0 {
		t.Fatalf("Pending() = %d after every silent conn was closed", p)
	}
	if st := ts.s.Stats(); st.HandshakeTimeouts != n || st.Rejected != 0 || st.Upgrades != 0 {
		t.Fatalf("stats %+v; want HandshakeTimeouts %d, nothing else", st, n)
	}
	if c := ts.s.Conns(); c != 0 {
		t.Fatalf("Conns() = %d", c)
	}
}

// TestStalledHandshakesAreClosed: request lines and upgrade heads that start and stall
// (or drip) are closed at accept + HandshakeTimeout, whether OnRequest is peeking in
// sniff or in readHead; the server keeps serving both protocols.
func TestStalledHandshakesAreClosed(t *testing.T) {
	const ht = 300 * time.Millisecond
	cfg := Config{HandshakeTimeout: ht}
	tick := cfg.withDefaults().tick()
	h := newHandler(t)
	ts := startServer(t, cfg, h)

	tests := []struct {
		name   string
		sent   string
		drip   string // then written a byte every ht/30, far too slowly to finish in time
		upgHdr bool   // reached readHead: an abandoned upgrade, counted in Rejected too
	}{
		{name: "partial request line on the WebSocket path", sent: "GET /ws HT", upgHdr: true},
		{name: "partial path", sent: "GET /w"},
		{name: "one byte", sent: "G"},
		{name: "partial upgrade head", sent: upgradeRequest("/ws")[:40], upgHdr: true},
		{name: "dripped upgrade head", sent: "GET /ws?", drip: upgradeRequest("/ws")[len("GET /ws"):], upgHdr: true},
	}
	lat := make([]time.Duration, len(tests))
	var wg sync.WaitGroup
	wantRejected := 0
	for i, tt := range tests {
		if tt.upgHdr {
			wantRejected++
		}
		conn, dialed := dialAt(t, ts.addr)
		if _, err := conn.Write([]byte(tt.sent)); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		if tt.drip != "" {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tk := time.NewTicker(ht / 30)
				defer tk.Stop()
				for j := range len(tt.drip) {
					select {
					case <-done:
						return
					case <-tk.C:
					}
					if _, err := conn.Write([]byte{tt.drip[j]}); err != nil {
						return // closed by the server
					}
				}
				t.Errorf("%s: the whole head was dripped before the server closed", tt.name)
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done)
			lat[i] = awaitServerClose(t, conn, dialed, ht+tick+schedSlack)
		}()
	}
	wg.Wait()
	for i, tt := range tests {
		if lat[i] < ht {
			t.Errorf("%s: closed %v after dial, before HandshakeTimeout %v", tt.name, lat[i], ht)
		}
		t.Logf("%s: closed %v after dial (HandshakeTimeout %v, tick %v)", tt.name, lat[i], ht, tick)
	}
	if p := ts.s.Pending(); p != 0 {
		t.Fatalf("Pending() = %d after every stalled conn was closed", p)
	}
	st := ts.s.Stats()
	if st.HandshakeTimeouts != uint64(len(tests)) || st.Rejected != uint64(wantRejected) || st.Upgrades != 0 {
		t.Fatalf("stats %+v; want HandshakeTimeouts %d, Rejected %d", st, len(tests), wantRejected)
	}
	if n := ts.s.handshakes.Load(); n != 0 {
		t.Fatalf("%d handshakes still counted in progress", n)
	}

	// A normal upgrade and normal HTTP right after.
	rc := dialRaw(t, ts.addr)
	h.nextOpen(t)
	rc.write(text("after the stalls"))
	rc.expectText("after the stalls")
	hc := dialTCP(t, ts.addr)
	hc.write([]byte("GET /api/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
	if resp := hc.response(); resp.StatusCode != 200 {
		t.Fatalf("HTTP after the stalls: %d", resp.StatusCode)
	}
	if p := ts.s.Pending(); p != 0 {
		t.Fatalf("Pending() = %d with only classified connections", p)
	}
}

// TestClassifiedConnectionsOutliveHandshakeTimeout: an upgraded WebSocket and an HTTP
// keep-alive connection leave the pending set when classified, so the handshake
// deadline that closes a silent socket accepted after them leaves them alone.
func TestClassifiedConnectionsOutliveHandshakeTimeout(t *testing.T) {
	const ht = 200 * time.Millisecond
	cfg := Config{HandshakeTimeout: ht}
	h := newHandler(t)
	ts := startServer(t, cfg, h)

	ws := dialRaw(t, ts.addr)
	h.nextOpen(t)
	get := func(hc *rawClient) {
		t.Helper()
		hc.write([]byte("GET /api/ping HTTP/1.1\r\nHost: x\r\n\r\n"))
		resp := hc.response()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	keepAlive := dialTCP(t, ts.addr)
	get(keepAlive)

	// Accepted last, so its deadline is the latest of the three: once the sweeper
	// closed it, the other two would have been closed already were they still pending.
	silent, dialed := dialAt(t, ts.addr)
	awaitServerClose(t, silent, dialed, ht+cfg.withDefaults().tick()+schedSlack)
	if st := ts.s.Stats(); st.HandshakeTimeouts != 1 {
		t.Fatalf("HandshakeTimeouts = %d, want 1 (the silent conn only)", st.HandshakeTimeouts)
	}
	if p := ts.s.Pending(); p != 0 {
		t.Fatalf("Pending() = %d", p)
	}
	ws.write(text("still here"))
	ws.expectText("still here")
	get(keepAlive)
}

// TestHertzOwnsItsConnections: a connection handed to Hertz leaves the pending set at
// once; from then on Hertz's own timeouts bound it (here far below HandshakeTimeout):
// ReadTimeout a stalled request line, IdleTimeout an idle keep-alive connection, whose
// serving goroutine blocks in Peek only until then.
func TestHertzOwnsItsConnections(t *testing.T) {
	const hertzTimeout = 300 * time.Millisecond
	ts := startServerWith(t, Config{HandshakeTimeout: 5 * time.Second}, newHandler(t),
		server.WithReadTimeout(hertzTimeout), server.WithIdleTimeout(hertzTimeout))

	keepAlive := dialTCP(t, ts.addr)
	keepAlive.write([]byte("GET /api/ping HTTP/1.1\r\nHost: x\r\n\r\n"))
	resp := keepAlive.response()
	_, _ = io.Copy(io.Discard, resp.Body)
	idleFrom := time.Now()
	if p := ts.s.Pending(); p != 0 { // classified before Hertz saw the request
		t.Fatalf("Pending() = %d with a connection served by Hertz", p)
	}

	partial, dialed := dialAt(t, ts.addr)
	if _, err := partial.Write([]byte("GET /api/pi")); err != nil { // not ours after "/a"
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the partial request handed to Hertz", func() bool { return ts.s.Pending() == 0 })

	if d := awaitServerClose(t, partial, dialed, 3*time.Second); d < hertzTimeout {
		t.Fatalf("stalled request line closed after %v, before Hertz's ReadTimeout", d)
	} else {
		t.Logf("stalled request line (Hertz's) closed after %v", d)
	}
	_ = keepAlive.conn.SetReadDeadline(idleFrom.Add(3 * time.Second))
	if _, err := keepAlive.br.ReadByte(); err == nil {
		t.Fatal("idle keep-alive connection got bytes")
	} else if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("Hertz did not close the idle keep-alive connection")
	}
	t.Logf("idle keep-alive connection closed after %v", time.Since(idleFrom))
	if st := ts.s.Stats(); st.HandshakeTimeouts != 0 {
		t.Fatalf("HandshakeTimeouts = %d for connections that were Hertz's", st.HandshakeTimeouts)
	}
}

// TestPendingClaimIsExclusive races classification against expiry: exactly one wins
// each record, the winner unlists it, and only expiries are counted.
func TestPendingClaimIsExclusive(t *testing.T) {
	s := New(Config{}, newHandler(t))
	const n = 1000
	ps := make([]*pendingConn, n)
	for i := range ps {
		ps[i] = &pendingConn{srv: s, sh: &s.shards[i%nShards], idx: -1}
		s.addPending(ps[i])
	}
	if got := s.Pending(); got != n {
		t.Fatalf("Pending() = %d, want %d", got, n)
	}
	var classified, expired atomic.Int64
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if s.classify(p) {
				classified.Add(1)
			}
		}()
		go func() {
			defer wg.Done()
			if s.expire(p) {
				expired.Add(1)
			}
		}()
	}
	wg.Wait()
	if c, e := classified.Load(), expired.Load(); c+e != n || uint64(e) != s.handshakeTimeouts.Load() {
		t.Fatalf("classified %d + expired %d != %d, or counter %d", c, e, n, s.handshakeTimeouts.Load())
	}
	for _, p := range ps {
		_ = p.closed(nil) // the close callback after either outcome: no-op
		if s.expire(p) {
			t.Fatal("a decided record expired again")
		}
	}
	if got := s.Pending(); got != 0 {
		t.Fatalf("Pending() = %d", got)
	}
	for i := range s.shards {
		if l := len(s.shards[i].pending); l != 0 {
			t.Fatalf("shard %d still lists %d", i, l)
		}
	}

	// Closed by the peer before anything was decided: the close callback unlists it.
	p := &pendingConn{srv: s, sh: &s.shards[0], idx: -1}
	s.addPending(p)
	_ = p.closed(nil)
	if got := s.Pending(); got != 0 {
		t.Fatalf("Pending() = %d after the close callback", got)
	}
}

// TestTCPKeepAliveOnlyForHertz checks that connections Hertz serves get TCP
// keepalive, as stock netpoll gives every connection at accept, and that a
// WebSocket does not: its pings and idle timeout find dead peers, and the three
// setsockopts were 4% of a connect storm.
func TestTCPKeepAliveOnlyForHertz(t *testing.T) {
	ts := startServerWith(t, Config{}, newHandler(t), server.WithKeepAliveTimeout(45*time.Second))

	httpc := dialTCP(t, ts.addr)
	httpc.write([]byte("GET /api/ping HTTP/1.1\r\nHost: x\r\n\r\n"))
	resp := httpc.response()
	_, _ = io.Copy(io.Discard, resp.Body)
	fd := serverSideFD(t, httpc.conn.LocalAddr())
	if on, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE); on != 1 {
		t.Errorf("Hertz's connection: SO_KEEPALIVE = %d, want 1", on)
	}
	if idle, _ := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); idle != 45 {
		t.Errorf("Hertz's connection: TCP_KEEPIDLE = %d s, want Hertz's KeepAliveTimeout (45)", idle)
	}

	wsc := dialRaw(t, ts.addr)
	ts.h.nextOpen(t)
	if on, _ := unix.GetsockoptInt(serverSideFD(t, wsc.conn.LocalAddr()), unix.SOL_SOCKET, unix.SO_KEEPALIVE); on != 0 {
		t.Errorf("WebSocket: SO_KEEPALIVE = %d, want 0", on)
	}
}

// serverSideFD finds, among this process's open files, the socket whose peer is
// the client address local (the test server runs in the test's process).
func serverSideFD(t testing.TB, local net.Addr) int {
	t.Helper()
	want := local.(*net.TCPAddr)
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if sa, err := unix.Getpeername(fd); err == nil {
			if in4, ok := sa.(*unix.SockaddrInet4); ok && in4.Port == want.Port && net.IP(in4.Addr[:]).Equal(want.IP) {
				return fd
			}
		}
	}
	t.Fatalf("no socket in this process has the peer %v", local)
	return -1
}

// TestUpgradedSocketIsCloseOnExec: the descriptor takeOver dups for the Conn is not
// inherited by a child process (F_DUPFD_CLOEXEC).
func TestUpgradedSocketIsCloseOnExec(t *testing.T) {
	ts := startServer(t, Config{}, newHandler(t))
	wsc := dialRaw(t, ts.addr)
	ts.h.nextOpen(t)
	flags, err := unix.FcntlInt(uintptr(serverSideFD(t, wsc.conn.LocalAddr())), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("upgraded socket's descriptor flags %#x, %v; want FD_CLOEXEC", flags, err)
	}
}
