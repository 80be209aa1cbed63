package pollnet

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// Closing the converted listener refuses new connections and closes no descriptor
// twice: a socket opened right after the close keeps working.
func TestCloseStopsAcceptingAndClosesOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	nl, err := Listener(ln)
	if err != nil {
		t.Fatal(err)
	}
	dup := nl.Fd()
	if err := nl.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := nl.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("a closed listener still accepts connections")
	}
	// netpoll's own Close would have closed the dup's number a second time; here the
	// number is still the dup's until netpoll's os.File is collected, so it is valid.
	if _, err := syscall.Getsockname(dup); errors.Is(err, syscall.EBADF) {
		t.Fatalf("the dup %d was closed by Close (a later close would hit another socket)", dup)
	}
	// A new listener on the same port works (the stopped socket no longer listens).
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	ln2.Close()
}
