package wsnet

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// sockPair returns a descriptor for one end of a loopback TCP connection, in
// blocking mode (os.File.Fd sets it), and the other end.
func sockPair(t *testing.T) (fd int, peer *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer = pc.(*net.TCPConn)
	t.Cleanup(func() { peer.Close() })
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.(*net.TCPConn).File()
	c.Close() // f holds its own descriptor for the socket
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd()), peer
}

// recvWithin calls recv until it returns something other than EAGAIN.
func recvWithin(t *testing.T, fd int, buf []byte) (int, error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := recv(fd, buf)
		if !errors.Is(err, syscall.EAGAIN) || time.Now().After(deadline) {
			return n, err
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSendRecv(t *testing.T) {
	fd, peer := sockPair(t)
	buf := make([]byte, 64)

	// Nothing to read: EAGAIN at once, although the descriptor blocks.
	done := make(chan struct{})
	var n int
	var err error
	go func() { n, err = recv(fd, buf); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("recv on an empty socket blocked")
	}
	if n != 0 || !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("recv on an empty socket = %d, %v; want 0, EAGAIN", n, err)
	}

	if n, err := send(fd, []byte("hello")); n != 5 || err != nil {
		t.Fatalf("send = %d, %v; want 5, nil", n, err)
	}
	if n, err := send(fd, nil); n != 0 || err != nil {
		t.Fatalf("send of nothing = %d, %v; want 0, nil", n, err)
	}
	got := make([]byte, 5)
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "hello" {
		t.Fatalf("peer read %q, %v; want hello", got, err)
	}

	if _, err := peer.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	if n, err := recvWithin(t, fd, buf); err != nil || string(buf[:n]) != "world" {
		t.Fatalf("recv = %q, %v; want world", buf[:n], err)
	}

	// An orderly close reads as EOF: (0, nil).
	if err := peer.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := recvWithin(t, fd, buf); n != 0 || err != nil {
		t.Fatalf("recv after the peer's FIN = %d, %v; want 0, nil", n, err)
	}
}

func TestSendToResetPeer(t *testing.T) {
	fd, peer := sockPair(t)
	_ = peer.SetLinger(0)
	peer.Close() // RST
	buf := make([]byte, 8)
	if _, err := recvWithin(t, fd, buf); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("recv after the peer's reset: %v; want ECONNRESET", err)
	}
	// The socket reports the reset to a write too, as an errno.
	n, err := send(fd, []byte("x"))
	if n != 0 || !(errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("send to a reset peer = %d, %v; want 0, EPIPE or ECONNRESET", n, err)
	}
}
