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
// steady load: that needs every page copied at the moment a commit begins (SQLite
// restarts the WAL only for a writer whose transaction began with nothing left to
// copy), and commits keep appending while it copies. So once the WAL has grown past
// walRestartPages the checkpointer copies again at once, which takes only what was
// appended during the first copy, and when that was little (at most a quarter of
// walRestartPages) it copies a last time while it holds the writer's lock: what
// was appended during the short second copy. The next commit starts the WAL over.
// The writer pauses for that last copy, not for the whole WAL. When the copies
// stay long — commits append about as fast as a checkpoint copies — the last copy
// runs anyway once the WAL is four times walRestartPages: the pause is then
// longer, and it holds the writer to the rate the WAL is copied at, which bounds
// the WAL (and its file, cut back by journal_size_limit) instead of letting both
// grow. A reader in the middle of a long query can still hold pages in the WAL
// (they are not copied past its snapshot); pausing the writer would not free them,
// and a later round gets them.
//
// A PASSIVE checkpoint reports the WAL's size as it was when the checkpoint began,
// so it never shows what was appended while it copied. Until 2026-12-08 the
// checkpointer took "all copied" for "nothing appended" and never paused the
// writer: under steady load the WAL started over only when a copy happened to
// overlap no commit. At 18,000 sends/s it passed a million pages in 20 s and its
// file 5.9 GB within a minute, and commits took twice as long per message while
// the file grew.
const (
	checkpointEvery = 100 * time.Millisecond
	// walRestartPages is 128 MiB of 4 KiB pages. Each restart pauses the writer for
	// a last copy (7–12 ms, most of it two fsyncs); at 8,192 pages that happened
	// about five times a second at 18,000 sends/s, and four alternating pairs of
	// open-loop runs at 10,000 sends/s gave recipient p90 7.0–8.4 ms at 32,768
	// against 8.7–10.6 ms at 8,192 (docs/performance.md).
	walRestartPages = 32768
)

// walLimitBytes is the writer's journal_size_limit (config.go): four times the
// restart size in 4 KiB pages, above what the WAL reaches between two restarts
// under load (walRestartPages plus a round's appends), so that it is not cut
// and grown again at every restart.
func walLimitBytes(restartPages int) int64 { return 4 * int64(restartPages) * 4096 }

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
	// shortCopy is the most pages a copy may have taken for the paused copy to
	// follow it before the WAL is four times restartPages.
	shortCopy int
	failing   bool // the last checkpoint failed: logged once until one succeeds
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
		c.round()
	}
}

// round runs one scheduled checkpoint and, when the WAL has grown past
// restartPages, the copies that let it start over.
func (c *checkpointer) round() {
	pages, copied := c.checkpoint(false)
	for range 3 {
		if pages < c.restartPages || copied < pages {
			return // small enough, or a reader's snapshot holds the rest
		}
		// Everything up to pages is in the database file; the commits made
		// while it was copied are not. Copy them now.
		next, nextCopied := c.checkpoint(false)
		if next < pages {
			return // the WAL started over meanwhile
		}
		if nextCopied == next && (next-pages <= c.shortCopy || next >= 4*c.restartPages) {
			// That copy was short, so little was appended during it (or the WAL
			// is too long to wait for one): copy that with the writer paused,
			// and its next commit starts the WAL over.
			c.s.wmu.Lock()
			c.checkpoint(true)
			c.s.wmu.Unlock()
			return
		}
		pages, copied = next, nextCopied
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
