package repo

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gochat/gochat/repo/store"
)

// StoreMetrics registers the store's group-commit metrics on reg (design.md §7, "DB
// batch sizes") and returns the observer to open the store with
// (store.WithCommitObserver):
//
//   - gochat_repo_commit_messages: messages inserted per committed transaction;
//   - gochat_repo_commit_seconds{result}: BEGIN to COMMIT, or to the failure
//     ("error"), or to the stored client message id that sends the batch back to be
//     written with the lookup ("recheck");
//   - gochat_repo_commit_failures_total{scope}: failed transactions, "batch" for a
//     batch's (retried whole after a lock conflict, else message by message) and
//     "alone" for one message's retry on its own;
//   - gochat_repo_commit_rechecks_total: batches written without looking their
//     client message ids up that met a stored one (a resend), and were written
//     again with the lookup. Not failures: their senders get their answers.
func StoreMetrics(reg prometheus.Registerer) (func(store.Commit), error) {
	messages := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "gochat_repo_commit_messages",
		Help:    "Messages inserted by one committed group-commit transaction.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 11), // 1 … 1024
	})
	seconds := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "gochat_repo_commit_seconds",
		Help:    "Duration of one group-commit transaction, BEGIN to COMMIT or to its failure.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	}, []string{"result"})
	failures := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gochat_repo_commit_failures_total",
		Help: "Failed group-commit transactions: scope batch (retried whole after a lock conflict, else message by message) or alone (one message retried on its own).",
	}, []string{"scope"})
	rechecks := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gochat_repo_commit_rechecks_total",
		Help: "Group-commit transactions written without looking their client message ids up that met a stored one (a resend) and were written again with the lookup.",
	})
	if err := register(reg, messages, seconds, failures, rechecks); err != nil {
		return nil, err
	}
	ok, failed, rechecked := seconds.WithLabelValues("ok"), seconds.WithLabelValues("error"), seconds.WithLabelValues("recheck")
	batchFailed, aloneFailed := failures.WithLabelValues("batch"), failures.WithLabelValues("alone")
	return func(c store.Commit) {
		if c.Recheck {
			rechecked.Observe(c.Duration.Seconds())
			rechecks.Inc()
			return
		}
		if c.Err != nil {
			failed.Observe(c.Duration.Seconds())
			if c.Alone {
				aloneFailed.Inc()
			} else {
				batchFailed.Inc()
			}
			return
		}
		ok.Observe(c.Duration.Seconds())
		if c.Inserted > 0 {
			messages.Observe(float64(c.Inserted))
		}
	}, nil
}

// CheckpointMetrics registers the SQLite WAL checkpointer's metrics on reg and
// returns the observer to open the store with (store.WithCheckpointObserver):
//
//   - gochat_repo_wal_checkpoint_seconds{kind}: one checkpoint; kind "background"
//     runs beside the commits, "writer_paused" holds the writer so that the WAL can
//     start over, and is what the commits waited;
//   - gochat_repo_wal_pages: pages in the WAL at the last checkpoint. It grows and
//     falls back under load; one that only grows means checkpoints cannot catch up
//     (a reader holding an old snapshot, or failures);
//   - gochat_repo_wal_checkpoint_failures_total.
func CheckpointMetrics(reg prometheus.Registerer) (func(store.Checkpoint), error) {
	seconds := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "gochat_repo_wal_checkpoint_seconds",
		Help:    "Duration of one SQLite WAL checkpoint: kind background runs beside the commits, writer_paused holds the writer so the WAL can start over.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	}, []string{"kind"})
	pages := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gochat_repo_wal_pages",
		Help: "Pages in the SQLite WAL at the last checkpoint; one that only grows means checkpoints cannot catch up.",
	})
	failures := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gochat_repo_wal_checkpoint_failures_total",
		Help: "SQLite WAL checkpoints that failed.",
	})
	if err := register(reg, seconds, pages, failures); err != nil {
		return nil, err
	}
	background, paused := seconds.WithLabelValues("background"), seconds.WithLabelValues("writer_paused")
	return func(c store.Checkpoint) {
		if c.Err != nil {
			failures.Inc()
			return
		}
		if c.Paused {
			paused.Observe(c.Duration.Seconds())
		} else {
			background.Observe(c.Duration.Seconds())
		}
		pages.Set(float64(c.WALPages))
	}, nil
}

func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("repo: register metrics: %w", err)
		}
	}
	return nil
}
