package main

import "testing"

// Workers share the cores; one worker, or a GOMAXPROCS the caller set, is left alone.
func TestWorkerProcs(t *testing.T) {
	for _, c := range []struct {
		procs, cpus int
		env         string
		want        int
	}{
		{1, 2, "", 0},
		{2, 2, "", 1},
		{16, 2, "", 1},
		{2, 8, "", 4},
		{3, 8, "", 2},
		{16, 2, "2", 0},
	} {
		if got := workerProcs(c.procs, c.cpus, c.env); got != c.want {
			t.Errorf("workerProcs(%d, %d, %q) = %d, want %d", c.procs, c.cpus, c.env, got, c.want)
		}
	}
}
