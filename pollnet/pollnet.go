// Package pollnet hands listening sockets to netpoll (Kitex servers, the gateway's
// event loop) without netpoll's double close.
//
// netpoll v0.7.5's ConvertListener dups the socket (net.TCPListener.File) and its
// Close closes the dup twice: syscall.Close(fd), then the os.File holding the same
// number. A descriptor that another goroutine opens between the two gets closed
// under it: strace showed 15 failed closes (EBADF) per run of
// TestFailureConcurrentResend, and when the number had been reused an unrelated
// connection died (EOF, "bad file descriptor", a request never answered).
package pollnet

import (
	"errors"
	"net"
	"sync"
	"syscall"

	"github.com/cloudwego/netpoll"
)

// Listener converts ln for netpoll. Closing the result stops the listening socket
// with shutdown(2) (new connections are refused at once), closes ln, and leaves the
// dup to the os.File netpoll holds, which closes it exactly once when collected.
func Listener(ln net.Listener) (netpoll.Listener, error) {
	nl, err := netpoll.ConvertListener(ln)
	if err != nil {
		return nil, err
	}
	return &listener{Listener: nl, std: ln}, nil
}

type listener struct {
	netpoll.Listener
	std  net.Listener
	once sync.Once
	err  error
}

// Close stops accepting; it is idempotent.
func (l *listener) Close() error {
	l.once.Do(func() {
		serr := syscall.Shutdown(l.Fd(), syscall.SHUT_RDWR)
		if errors.Is(serr, syscall.ENOTCONN) {
			serr = nil // a listening socket may report it; it is stopped all the same
		}
		l.err = errors.Join(serr, l.std.Close())
	})
	return l.err
}
