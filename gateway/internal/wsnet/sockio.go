package wsnet

import (
	"syscall"
	"unsafe"
)

// send and recv are write(2) and read(2) for a connection's socket, made through
// sendto(2) and recvfrom(2). Those go straight to the socket layer; write and read
// first pass through the VFS (vfs_write's checks, the file's notification and
// accounting hooks). Writing one frame to each of 10,000 sockets (fan-out probes,
// perf), write(2) was 74% of the process and 14.6 points of it were around
// tcp_sendmsg; through sendto(2) 11.9 points are.
//
// MSG_DONTWAIT keeps both non-blocking whatever the descriptor's flags, and
// MSG_NOSIGNAL makes a write to a reset peer return EPIPE without raising SIGPIPE.
// Errors are the bare errno (EAGAIN, EINTR, EPIPE, ...), as syscall.Write and
// syscall.Read return them; n is 0 with an error, and recv's (0, nil) is EOF.
func send(fd int, p []byte) (int, error) {
	return sockCall(syscall.SYS_SENDTO, fd, p, syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL)
}

func recv(fd int, p []byte) (int, error) {
	return sockCall(syscall.SYS_RECVFROM, fd, p, syscall.MSG_DONTWAIT)
}

func sockCall(trap uintptr, fd int, p []byte, flags uintptr) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := syscall.Syscall6(trap, uintptr(fd), uintptr(ptr), uintptr(len(p)), flags, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
