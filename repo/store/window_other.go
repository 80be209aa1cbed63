//go:build !linux

package store

import "time"

// alarm is a no-op where timerfd is not at hand: a sub-millisecond window then ends
// on its runtime timer alone, rounded up to the poller's millisecond when the process
// is idle (see waitWindow).
type alarm struct{}

func newAlarm() (*alarm, error)     { return nil, nil }
func (a *alarm) ring(time.Duration) {}
func (a *alarm) close() error       { return nil }
