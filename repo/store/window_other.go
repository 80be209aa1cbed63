//go:build !linux

package store

import "time"

// sleepThread is time.Sleep where nanosleep(2) is not at hand (see waitWindow).
func sleepThread(d time.Duration) { time.Sleep(d) }
