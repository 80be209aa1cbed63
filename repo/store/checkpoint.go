package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// The WAL checkpointer (SQLite only).
//
// In WAL mode a commit appends the pages it changed to the -wal file; a checkpoint
// copies them back into the database file and fsyncs both, and once everything is
// copied the next commit starts the WAL over from its beginning. By default the
// committing connection checkpoints itself whenever the WAL passes 1,000 pages, so
// every few group commits one of them also copied and fsynced a few megabytes: the
// writer, which is the only one, spent that time on the checkpoint (4% of the
// process in copies and fsyncs at 7,000 sends/s; letting the WAL grow to 10,000
// pages before checkpointing raised throughput by 15% but put the whole copy into
// single commits, and their p99).
//
// So the writer never checkpoints (wal_autocheckpoint(0) on its connection), and a
// goroutine with a connection of its own does, concurrently with the commits:
// every checkpointEvery a PASSIVE checkpoint, which copies what the WAL holds and
// waits for no one. A PASSIVE checkpoint alone never lets the WAL start over under
// steady load: that needs every page copied at the moment a commit begins, and
// commits keep appending while it copies. So when the WAL has grown past
// walRestartPages the checkpointer runs a second PASSIVE checkpoint while it holds
// the writer's lock: it copies only what was appended during the first (at most
// a quarter of walRestartPages, else it waits for the next round), and the next
// commit starts the WAL over. The writer pauses for that copy, not for the whole
// WAL. A reader in the middle of a long query can still hold pages in the WAL (they
// are not copied past its snapshot); a later round gets them.
const (
	checkpointEvery = 100 * time.Millisecond
	walRestartPages = 8192 // 32 MiB of 4 KiB pages
)

// Checkpoint describes one WAL checkpoint, for metrics.
type Checkpoint struct {
	Paused   bool          // run while holding the writer's lock, to let the WAL start over
	WALPages int           // pages in the WAL when it ran
	Copied   int           // of those, pages in the database file when it ended
	Duration time.Duration // the checkpoint alone; for Paused, what the writer waited for it
	Err      error
}

// WithCheckpointObserver has fn called after every WAL checkpoint of the SQLite
// store's checkpointer; fn must be quick and must not call the Store. A nil fn
// observes nothing.
func WithCheckpointObserver(fn func(Checkpoint)) Option {
	return func(s *Store) {
		if fn != nil {
			s.observeCheckpoint = fn
		}
	}
}

// checkpointer runs the checkpoints on db, a connection of its own, until the
// store closes; it closes db when it returns.
type checkpointer struct {
	s            *Store
	db           *sql.DB
	every        time.Duration
	restartPages int
	failing      bool // the last checkpoint failed: logged once until one succeeds
}

func (c *checkpointer) run(done chan<- struct{}) {
	defer close(done)
	defer func() {
		if err := c.db.Close(); err != nil {
			c.s.log.Warn("close checkpoint connection", "err", err)
		}
	}()
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		select {
		case <-c.s.closing:
			return
		case <-t.C:
		}
		// When no commit landed during the checkpoint, everything is copied and
		// the next commit starts the WAL over by itself. When much is left, a
		// reader's snapshot is holding it (or the copy failed): pausing the writer
		// would not free it, only stall the commits.
		pages, copied := c.checkpoint(false)
		if pages >= c.restartPages && copied < pages && pages-copied <= max(c.restartPages/4, 1024) {
			c.s.wmu.Lock()
			c.checkpoint(true)
			c.s.wmu.Unlock()
		}
	}
}

// checkpoint runs one PASSIVE checkpoint and reports it; pages is the WAL's size
// and copied how much of it is in the database file.
func (c *checkpointer) checkpoint(paused bool) (pages, copied int) {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	start := time.Now()
	var busy int
	err := c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &pages, &copied)
	if err != nil {
		err = fmt.Errorf("wal checkpoint: %w", err)
	}
	c.s.observeCheckpoint(Checkpoint{Paused: paused, WALPages: pages, Copied: copied, Duration: time.Since(start), Err: err})
	switch {
	case err != nil && !c.failing:
		c.failing = true
		c.s.log.Warn("WAL checkpoint failed; the WAL grows until one succeeds", "err", err)
	case err == nil && c.failing:
		c.failing = false
		c.s.log.Info("WAL checkpoint succeeded again", "wal_pages", pages)
	}
	return pages, copied
}
