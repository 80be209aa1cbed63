package gateway

import (
	"strings"
	"syscall"
	"testing"
)

func TestMaxConns(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	c := Default()
	if got, want := c.maxConns(), max(int(lim.Cur)-fdReserve, 64); lim.Cur < 1<<31 && got != want {
		t.Errorf("derived max_conns = %d with an open-file limit of %d, want %d", got, lim.Cur, want)
	}
	c.MaxConns = 5
	if got := c.maxConns(); got != 5 {
		t.Errorf("max_conns 5 → %d", got)
	}
	c.MaxConns = -1
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "max_conns") {
		t.Errorf("Validate(max_conns -1) = %v, want a max_conns error", err)
	}
	if err := Default().Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
}
