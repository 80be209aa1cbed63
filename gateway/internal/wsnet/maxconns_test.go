package wsnet

import (
	"testing"
	"time"
)

// TestMaxConns: with MaxConns connections held — a WebSocket and a connection that
// has sent nothing yet — the next one is closed as soon as it is accepted and
// counted; the held WebSocket keeps working, and once a held connection closes a
// new one is served again.
func TestMaxConns(t *testing.T) {
	h := newHandler(t)
	ts := startServer(t, Config{MaxConns: 2}, h)
	ws := dialRaw(t, ts.addr)
	h.nextOpen(t)
	idle := dialTCP(t, ts.addr)
	waitFor(t, 5*time.Second, "two connections held", func() bool { return ts.s.tcp.Load() == 2 })

	over := dialTCP(t, ts.addr)
	_, _ = over.conn.Write([]byte(upgradeRequest("/ws"))) // may already fail: the server closed it
	over.expectEOF()
	if st := ts.s.Stats(); st.Refused != 1 || st.Upgrades != 1 {
		t.Fatalf("refused %d, upgrades %d; want 1 and 1", st.Refused, st.Upgrades)
	}

	ws.write(text("still here"))
	ws.expectText("still here")

	_ = idle.conn.Close()
	waitFor(t, 5*time.Second, "the idle connection released", func() bool { return ts.s.tcp.Load() == 1 })
	again := dialRaw(t, ts.addr)
	h.nextOpen(t)
	again.write(text("back"))
	again.expectText("back")
	if st := ts.s.Stats(); st.Refused != 1 || st.Upgrades != 2 {
		t.Errorf("refused %d, upgrades %d; want 1 and 2", st.Refused, st.Upgrades)
	}
}

// Without MaxConns nothing is counted or refused.
func TestMaxConnsOff(t *testing.T) {
	h := newHandler(t)
	ts := startServer(t, Config{}, h)
	for range 3 {
		dialRaw(t, ts.addr)
		h.nextOpen(t)
	}
	if n, st := ts.s.tcp.Load(), ts.s.Stats(); n != 0 || st.Refused != 0 || st.Upgrades != 3 {
		t.Errorf("tcp %d, refused %d, upgrades %d; want 0, 0, 3", n, st.Refused, st.Upgrades)
	}
}
