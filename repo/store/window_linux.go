package store

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// alarm is a timerfd registered with the Go runtime's poller (os.NewFile registers a
// non-blocking descriptor). Nothing reads it: its expiry only has to end the poller's
// epoll_wait so the runtime looks at its timers (see waitWindow). Setting it again
// resets its count, so one timer serves every window; a nil alarm never rings.
type alarm struct {
	f  *os.File
	fd int
}

func newAlarm() (*alarm, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd_create: %w", err)
	}
	return &alarm{f: os.NewFile(uintptr(fd), "store-window-alarm"), fd: fd}, nil
}

// ring sets the alarm to expire once, d from now, replacing any earlier setting. A
// failure costs only precision (the window ends on its runtime timer), so it is
// ignored.
func (a *alarm) ring(d time.Duration) {
	if a == nil || d <= 0 {
		return
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	_ = unix.TimerfdSettime(a.fd, 0, &spec, nil)
}

func (a *alarm) close() error {
	if a == nil {
		return nil
	}
	return a.f.Close()
}
