package repo_test

import (
	"errors"
	"math"
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
		{Appends: 4, Duration: time.Millisecond, Err: boom, Recheck: true},
		{Appends: 4, Duration: time.Millisecond, Err: boom, Recheck: true},
	} {
		observe(c)
	}
	want := `
# HELP gochat_repo_commit_failures_total Failed group-commit transactions: scope batch (retried whole after a lock conflict, else message by message) or alone (one message retried on its own).
# TYPE gochat_repo_commit_failures_total counter
gochat_repo_commit_failures_total{scope="alone"} 1
gochat_repo_commit_failures_total{scope="batch"} 1
# HELP gochat_repo_commit_rechecks_total Group-commit transactions written without looking their client message ids up that met a stored one (a resend) and were written again with the lookup.
# TYPE gochat_repo_commit_rechecks_total counter
gochat_repo_commit_rechecks_total 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gochat_repo_commit_failures_total", "gochat_repo_commit_rechecks_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "gochat_repo_commit_seconds"); n != 3 {
		t.Errorf("commit_seconds has %d series, want 3 (ok, error, recheck)", n)
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
				want := map[string]uint64{"ok": 3, "error": 2, "recheck": 2}[m.GetLabel()[0].GetValue()]
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

func TestCheckpointMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	observe, err := repo.CheckpointMetrics(reg)
	if err != nil {
		t.Fatalf("CheckpointMetrics: %v", err)
	}
	for _, c := range []store.Checkpoint{
		{WALPages: 9000, Copied: 8500, Duration: 20 * time.Millisecond},
		{Paused: true, WALPages: 9100, Copied: 9100, Duration: 2 * time.Millisecond},
		{WALPages: 40, Copied: 40, Duration: time.Millisecond},
		{Err: errors.New("disk I/O error")}, // leaves the gauge at the last good reading
	} {
		observe(c)
	}
	want := `
# HELP gochat_repo_wal_checkpoint_failures_total SQLite WAL checkpoints that failed.
# TYPE gochat_repo_wal_checkpoint_failures_total counter
gochat_repo_wal_checkpoint_failures_total 1
# HELP gochat_repo_wal_pages Pages in the SQLite WAL at the last checkpoint; one that only grows means checkpoints cannot catch up.
# TYPE gochat_repo_wal_pages gauge
gochat_repo_wal_pages 40
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gochat_repo_wal_checkpoint_failures_total", "gochat_repo_wal_pages"); err != nil {
		t.Error(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "gochat_repo_wal_checkpoint_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			kind := m.GetLabel()[0].GetValue()
			h := m.GetHistogram()
			want := map[string]float64{"background": 0.021, "writer_paused": 0.002}[kind]
			if math.Abs(h.GetSampleSum()-want) > 1e-9 {
				t.Errorf("wal_checkpoint_seconds{kind=%q} sums to %v, want %v", kind, h.GetSampleSum(), want)
			}
		}
	}
}
