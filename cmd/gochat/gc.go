package main

import (
	"slices"
	"strings"
)

// gatewayGCPercent is the GOGC of a process that runs only gateways. Its heap is
// mostly long-lived socket state (~0.6 KiB per idle WebSocket) over a ~25 MB base, and
// with Go's default of 100 a connect storm lets the heap, and so the RSS that stays
// after it, grow to twice that: 2.3–3.2 KiB of RSS per idle socket at 10,000 sockets a
// gateway, 1.5–1.7 KiB at 25 (bench conns, split). The flood and time-to-all of bench
// fanout were within run-to-run noise at 25 and 100.
const gatewayGCPercent = 25

// gcPercent is the GOGC the process should run with, and false when it should keep
// the runtime's: the GOGC environment variable (the runtime already applied it) wins
// over gc_percent, which wins over the target's default.
func gcPercent(cfg Config, environ []string) (int, bool) {
	for _, kv := range environ {
		if strings.HasPrefix(kv, "GOGC=") {
			return 0, false
		}
	}
	if cfg.GCPercent > 0 {
		return cfg.GCPercent, true
	}
	targets, err := expandTargets(cfg.Target)
	if err == nil && len(targets) > 0 && !slices.ContainsFunc(targets, func(t string) bool { return t != "gateway" }) {
		return gatewayGCPercent, true
	}
	return 0, false
}
