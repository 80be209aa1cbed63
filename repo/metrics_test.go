package repo_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gochat/gochat/repo"
	"github.com/gochat/gochat/repo/store"
)

func TestStoreMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	observe, err := repo.StoreMetrics(reg)
	if err != nil {
		t.Fatalf("StoreMetrics: %v", err)
	}
	boom := errors.New("boom")
	for _, c := range []store.Commit{
		{Appends: 200, Inserted: 190, Duration: 3 * time.Millisecond},
		{Appends: 3, Inserted: 3, Duration: 300 * time.Microsecond},
		{Appends: 5, Duration: time.Millisecond, Err: boom},
		{Appends: 1, Duration: time.Millisecond, Err: boom, Alone: true},
		{Appends: 1, Inserted: 0, Duration: 100 * time.Microsecond}, // a duplicate: nothing inserted
	} {
		observe(c)
	}
	want := `
# HELP gochat_repo_commit_failures_total Failed group-commit transactions: scope batch (retried whole after a lock conflict, else message by message) or alone (one message retried on its own).
# TYPE gochat_repo_commit_failures_total counter
gochat_repo_commit_failures_total{scope="alone"} 1
gochat_repo_commit_failures_total{scope="batch"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gochat_repo_commit_failures_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "gochat_repo_commit_seconds"); n != 2 {
		t.Errorf("commit_seconds has %d series, want 2 (ok, error)", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "gochat_repo_commit_messages":
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 2 || h.GetSampleSum() != 193 {
				t.Errorf("commit_messages: %d samples summing to %v; want 2 summing to 193", h.GetSampleCount(), h.GetSampleSum())
			}
		case "gochat_repo_commit_seconds":
			for _, m := range mf.GetMetric() {
				want := map[string]uint64{"ok": 3, "error": 2}[m.GetLabel()[0].GetValue()]
				if got := m.GetHistogram().GetSampleCount(); got != want {
					t.Errorf("commit_seconds{result=%q}: %d samples, want %d", m.GetLabel()[0].GetValue(), got, want)
				}
			}
		}
	}
	if _, err := repo.StoreMetrics(reg); err == nil {
		t.Error("registering twice on one registry succeeded")
	}
}
