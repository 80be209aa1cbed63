package wsnet

import (
	"context"
	"io"
	"os"
	"syscall"
	"testing"
	"time"
)

// sweepHandler records OnClose; the connections of TestSweeperTakesConnectionsWhenDue
// are made by hand, without a handshake.
type sweepHandler struct{ closed chan closeEvent }

func (h *sweepHandler) Authorize(context.Context, *Request) (any, *Reject) { return nil, nil }
func (h *sweepHandler) OnOpen(*Conn)                                       {}
func (h *sweepHandler) OnText(*Conn, []byte)                               {}
func (h *sweepHandler) OnClose(c *Conn, code int, reason string) {
	h.closed <- closeEvent{id: c.ID(), code: code, reason: reason}
}

// TestSweeperTakesConnectionsWhenDue drives the sweeper by hand, on a clock of its
// own, over open connections on socket pairs whose peers never answer: an idle
// connection is taken from the wheel only at the tick its ping or idle close is due,
// not at every tick, and a close grace set outside the sweeper (wrote's closeAt) is
// looked at on the next tick, not at the slot the connection was parked in. The
// sweeper writes a ping itself.
func TestSweeperTakesConnectionsWhenDue(t *testing.T) {
	h := &sweepHandler{closed: make(chan closeEvent, 256)}
	cfg := Config{PingInterval: 30 * time.Second, IdleTimeout: 90 * time.Second}
	s := New(cfg, h) // not serving: no sweeper goroutine, sweepTick is called below
	tick := int64(s.tick)
	if s.tick != 250*time.Millisecond {
		t.Fatalf("tick %v, want 250ms (a quarter of the default CloseGrace)", s.tick)
	}
	const n = 100
	conns := make([]*Conn, n)
	peers := make([]*os.File, n)
	peerFDs := make([]int, n)
	for i := range n {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		peers[i] = os.NewFile(uintptr(fds[1]), "peer") // blocking reads with deadlines through the runtime poller
		peerFDs[i] = fds[1]
		t.Cleanup(func() { _ = peers[i].Close() })
		c := s.newConn(fds[0], nil)
		if err := c.attach(); err != nil {
			t.Fatal(err)
		}
		if s.register(c) {
			t.Fatal("register reports a shutdown")
		}
		conns[i] = c
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.abort()
		}
	})
	// readFrame reads one server frame (unmasked, payload < 126) from peer i.
	readFrame := func(i int) (op byte, payload []byte) {
		t.Helper()
		_ = peers[i].SetReadDeadline(time.Now().Add(5 * time.Second))
		hdr := make([]byte, 2)
		if _, err := io.ReadFull(peers[i], hdr); err != nil {
			t.Fatalf("peer %d: %v", i, err)
		}
		payload = make([]byte, hdr[1]&0x7f)
		if _, err := io.ReadFull(peers[i], payload); err != nil {
			t.Fatalf("peer %d: %v", i, err)
		}
		return hdr[0] & 0x0f, payload
	}
	var b sweepBufs
	sweepUntil := func(from, to int64) {
		for now := from; now <= to; now += tick {
			s.sweepTick(now, &b)
		}
	}

	// The connections were created at the epoch: their first ping is due at 30 s.
	sweepUntil(s.epoch+tick, s.epoch+int64(cfg.PingInterval)-tick)
	if v := s.visited.Load(); v != 0 {
		t.Fatalf("119 ticks before any ping was due took %d connections from the wheel, want 0", v)
	}
	s.sweepTick(s.epoch+int64(cfg.PingInterval), &b)
	if v := s.visited.Load(); v != n {
		t.Fatalf("the tick of the first ping took %d connections, want %d", v, n)
	}
	// The sweeper wrote every ping itself before sweepTick returned.
	for i, fd := range peerFDs {
		hdr := make([]byte, 2)
		if k, _, err := syscall.Recvfrom(fd, hdr, syscall.MSG_DONTWAIT|syscall.MSG_PEEK); k != 2 || hdr[0] != 0x89 {
			t.Fatalf("peer %d right after the tick: %d bytes %x (%v), want the ping written", i, k, hdr, err)
		}
	}
	for i := range n {
		if op, _ := readFrame(i); op != 0x9 {
			t.Fatalf("peer %d: opcode %#x, want a ping", i, op)
		}
	}

	// The second ping, at 60 s: nothing taken in between.
	sweepUntil(s.epoch+int64(cfg.PingInterval)+tick, s.epoch+2*int64(cfg.PingInterval))
	if v := s.visited.Load(); v != 2*n {
		t.Fatalf("after the second ping %d connections taken, want %d", v, 2*n)
	}
	for i := range n {
		if op, _ := readFrame(i); op != 0x9 {
			t.Fatalf("peer %d: opcode %#x, want the second ping", i, op)
		}
	}

	// A sweeper 40 s late (more than the wheel's 32 s) takes every slot once. The
	// peers never answered, so every connection is past IdleTimeout: idle close.
	late := s.epoch + 100*int64(time.Second)
	s.sweepTick(late, &b)
	if v := s.visited.Load(); v != 3*n {
		t.Fatalf("the late tick took %d connections in all, want %d", v, 3*n)
	}
	for i := range n {
		op, p := readFrame(i)
		if op != 0x8 || len(p) < 2 || int(p[0])<<8|int(p[1]) != CloseGoingAway {
			t.Fatalf("peer %d: opcode %#x payload %q, want close 1001", i, op, p)
		}
	}
	// Each connection's close frame is written, so wrote set closeAt (CloseGrace from
	// the real clock, long before this test's) and expedited it: the next tick
	// closes every socket. Parked, they would wait for the slot 32 s on.
	waitFor(t, 5*time.Second, "every close frame written", func() bool {
		for _, c := range conns {
			if c.closeAt.Load() == 0 {
				return false
			}
		}
		return true
	})
	s.sweepTick(late+tick, &b)
	for range n {
		select {
		case ev := <-h.closed:
			if ev.code != CloseGoingAway || ev.reason != "idle timeout" {
				t.Fatalf("OnClose %+v, want 1001 idle timeout", ev)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a connection was not closed on the tick after its close grace")
		}
	}
	for i := range n {
		_ = peers[i].SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := peers[i].Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("peer %d: read %v after the close, want EOF", i, err)
		}
	}
	if c := s.Conns(); c != 0 {
		t.Fatalf("%d connections still registered", c)
	}
}
