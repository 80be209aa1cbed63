package store

import (
	"syscall"
	"time"
)

// sleepThread sleeps d in nanosleep(2), to the kernel's timer precision, where
// time.Sleep would wait for the runtime's poller (see waitWindow). A signal ends it
// early; waitWindow's loop sleeps what is left.
func sleepThread(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil)
}
