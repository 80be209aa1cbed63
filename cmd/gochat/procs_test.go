package main

import (
	"runtime"
	"testing"
)

// TestMaxProcs: one P more than the CPUs the process started with, whatever
// GOMAXPROCS run set before (tests call run many times); a GOMAXPROCS variable keeps
// the runtime's.
func TestMaxProcs(t *testing.T) {
	if got, set := maxProcs([]string{"PATH=/bin"}); got != defaultProcs+1 || !set {
		t.Errorf("maxProcs = %d, %v; want %d, true", got, set, defaultProcs+1)
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(defaultProcs + 5))
	if got, _ := maxProcs(nil); got != defaultProcs+1 {
		t.Errorf("maxProcs at GOMAXPROCS %d = %d; want %d", defaultProcs+5, got, defaultProcs+1)
	}
	if got, set := maxProcs([]string{"GOMAXPROCS=1"}); set {
		t.Errorf("maxProcs with GOMAXPROCS set = %d, true; want the runtime's", got)
	}
}
