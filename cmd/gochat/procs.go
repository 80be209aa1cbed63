package main

import (
	"runtime"
	"strings"
)

// defaultProcs is the runtime's GOMAXPROCS when the process started (the CPUs it may
// use), before run changes it.
var defaultProcs = runtime.GOMAXPROCS(0)

// maxProcs is the GOMAXPROCS the process should run with, and false when it should
// keep the runtime's: a GOMAXPROCS environment variable (the runtime already applied
// it) wins. Otherwise it is one more than the CPUs, for netpoll's poller.
//
// netpoll (Kitex's transport, and the gateway's sockets) runs one poller goroutine
// that, when it finds no events, blocks in epoll_wait through syscall.Syscall6, and a
// thread in a system call keeps its P. sysmon takes a P back only after seeing the
// same call on two of its ticks, and only while the P has work queued or no other P
// is idle; finding nothing to take, it backs off to 10 ms ticks. In a runtime trace
// of the all-mode process at 100 sends in flight on 2 CPUs, the poller's epoll_wait
// held a P for 311–389 ms a second, and no P was taken back. With a P for it:
// ten alternating throughput pairs, acked sends/s higher in 14 of 20 steps (means
// +15% at 100 in flight, +8% at 200); ten open-loop pairs at 8,000 sends/s,
// recipient p50 lower in 8; fan-out probes unchanged (docs/performance.md,
// "Thirteenth machine").
func maxProcs(environ []string) (int, bool) {
	for _, kv := range environ {
		if strings.HasPrefix(kv, "GOMAXPROCS=") {
			return 0, false
		}
	}
	return defaultProcs + 1, true
}
