package main

import "syscall"

// foSysProcAttr makes the kernel SIGKILL a cluster process when the thread that
// started it dies, so a test binary that panics or is killed (go test -timeout)
// leaves no gochat processes behind. foSpawn starts every process from one thread
// that lives as long as the test binary.
func foSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
