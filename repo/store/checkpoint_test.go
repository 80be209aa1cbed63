package store

import (
	"database/sql"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gochat/gochat/repo/repotest"
)

// TestCheckpointerBoundsWAL appends without a pause — the load under which PASSIVE
// checkpoints alone never let the WAL start over — and checks that the writer
// never checkpoints, that the checkpointer's paused round lets the WAL start over
// again and again so it stays far below what was written, and that every message
// is there afterwards, also for a new Store on the same file. "long copies" counts
// no copy as short, as when commits append about as fast as a checkpoint copies:
// then the paused round must come from the WAL's length alone.
func TestCheckpointerBoundsWAL(t *testing.T) {
	t.Run("short copies", func(t *testing.T) { testCheckpointerBoundsWAL(t, 0) })
	t.Run("long copies", func(t *testing.T) { testCheckpointerBoundsWAL(t, -1) })
}

func testCheckpointerBoundsWAL(t *testing.T, shortCopy int) {
	h := &harness{driver: DriverSQLite, dsn: repotest.SQLiteDSN(t)}
	const (
		restartPages = 64
		// A WAL that starts over whenever it passes restartPages stays within a
		// few times that; one that starts over only when a copy happens to overlap
		// no commit grew to 9,578 pages in this test.
		maxWALPages = 16 * restartPages
		minAppends  = 6000 // twenty times what three restarts take
	)
	var mu sync.Mutex
	var seen []Checkpoint
	tune := func(s *Store) {
		s.checkpointEvery = 2 * time.Millisecond
		s.walRestartPages = restartPages
		s.walShortCopy = shortCopy
	}
	observe := WithCheckpointObserver(func(c Checkpoint) {
		mu.Lock()
		seen = append(seen, c)
		mu.Unlock()
	})
	s := h.openWith(t, []Option{tune, observe}, window(50*time.Microsecond))
	var commits int
	s.observe = func(c Commit) {
		if c.Err == nil {
			commits++ // on the committing goroutine, under wmu
		}
	}
	addConversation(t, s, "busy", "group")

	// restarts counts the paused checkpoints after which the WAL started over: the
	// next checkpoint that found a different number of pages found fewer.
	restarts := func() (n, paused, most int) {
		mu.Lock()
		defer mu.Unlock()
		for i, c := range seen {
			if c.Err != nil {
				t.Fatalf("checkpoint failed: %v", c.Err)
			}
			most = max(most, c.WALPages)
			if !c.Paused {
				continue
			}
			paused++
			for _, next := range seen[i+1:] {
				if next.WALPages != c.WALPages {
					if next.WALPages < c.WALPages {
						n++
					}
					break
				}
			}
		}
		return n, paused, most
	}

	const workers = 8
	var appended atomic.Int64
	stop := make(chan struct{})
	errs := make(chan error, workers)
	var sent [workers]int
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, _, err := s.Append(t.Context(), Message{ConversationID: "busy", SenderID: int64(w + 1), ClientMsgID: fmt.Sprintf("%d-%d", w, i), Content: "a message long enough to fill pages a little faster"}); err != nil {
					errs <- fmt.Errorf("worker %d append %d: %w", w, i, err)
					return
				}
				sent[w]++
				appended.Add(1)
			}
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, paused, _ := restarts()
		if n >= 3 && paused >= 3 && appended.Load() >= minAppends {
			break
		}
		if time.Now().After(deadline) {
			close(stop)
			wg.Wait()
			t.Fatalf("after 30 s of appends (%d): the WAL started over %d times with %d paused checkpoints; want 3 of each", appended.Load(), n, paused)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	var total int
	for _, n := range sent {
		total += n
	}
	_, _, most := restarts()
	t.Logf("%d messages in %d commits; largest WAL seen %d pages", total, commits, most)
	if most > maxWALPages {
		t.Errorf("the WAL grew to %d pages; want at most %d (%d × the restart size)", most, maxWALPages, maxWALPages/restartPages)
	}
	var autoCheckpoints int
	if err := s.wdb.Raw("PRAGMA wal_autocheckpoint").Scan(&autoCheckpoints).Error; err != nil {
		t.Fatalf("read the writer's wal_autocheckpoint: %v", err)
	}
	if autoCheckpoints != 0 {
		t.Errorf("writer's wal_autocheckpoint = %d, want 0 (the checkpointer's job)", autoCheckpoints)
	}
	wantStored(t, s, "busy", total)

	done := s.checkpointerDone
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-done:
	default:
		t.Fatal("Close returned while the checkpointer still ran")
	}
	wantStored(t, h.open(t), "busy", total)
}

// wantStored fails unless conv holds exactly the seqs 1..n.
func wantStored(t *testing.T, s *Store, conv string, n int) {
	t.Helper()
	var got struct{ Cnt, Seqs, Lo, Hi int }
	if err := s.rdb.Raw(`SELECT COUNT(*) AS cnt, COUNT(DISTINCT seq) AS seqs, MIN(seq) AS lo, MAX(seq) AS hi
		FROM messages WHERE conversation_id = ?`, conv).Scan(&got).Error; err != nil {
		t.Fatalf("count %s: %v", conv, err)
	}
	if got.Cnt != n || got.Seqs != n || (n > 0 && (got.Lo != 1 || got.Hi != n)) {
		t.Fatalf("%s holds %+v; want %d messages with seqs 1..%d", conv, got, n, n)
	}
}

// TestNoCheckpointerWhenDSNSetsIt: a DSN that sets wal_autocheckpoint keeps the
// checkpoints in the writer, as configured, and no checkpointer runs.
func TestNoCheckpointerWhenDSNSetsIt(t *testing.T) {
	h := &harness{driver: DriverSQLite, dsn: repotest.SQLiteDSN(t) + "?_pragma=wal_autocheckpoint(500)"}
	s := h.open(t)
	if s.checkpointerDone != nil {
		t.Error("a checkpointer runs although the DSN sets wal_autocheckpoint")
	}
	var pages int
	if err := s.wdb.Raw("PRAGMA wal_autocheckpoint").Scan(&pages).Error; err != nil {
		t.Fatalf("read wal_autocheckpoint: %v", err)
	}
	if pages != 500 {
		t.Errorf("writer's wal_autocheckpoint = %d, want the DSN's 500", pages)
	}
}

// TestCheckpointerSparesWriterWhileReaderPinsWAL: a reader in a long transaction
// keeps the WAL's pages past its snapshot from being copied. Pausing the writer
// would not free them, so the checkpointer must not; once the reader ends, the WAL
// starts over again.
func TestCheckpointerSparesWriterWhileReaderPinsWAL(t *testing.T) {
	h := &harness{driver: DriverSQLite, dsn: repotest.SQLiteDSN(t)}
	var mu sync.Mutex
	var seen []Checkpoint
	tune := func(s *Store) {
		s.checkpointEvery = 2 * time.Millisecond
		s.walRestartPages = 64
	}
	observe := WithCheckpointObserver(func(c Checkpoint) {
		mu.Lock()
		seen = append(seen, c)
		mu.Unlock()
	})
	s := h.openWith(t, []Option{tune, observe})
	addConversation(t, s, "pinned", "group")
	last := func() (Checkpoint, int) {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			return Checkpoint{}, 0
		}
		return seen[len(seen)-1], len(seen)
	}
	sent := 0
	appendUntil := func(what string, done func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !done() {
			if time.Now().After(deadline) {
				t.Fatalf("after 30 s of appends (%d in all): %s did not happen", sent, what)
			}
			sent++
			if _, _, err := s.Append(t.Context(), Message{ConversationID: "pinned", SenderID: 1, ClientMsgID: fmt.Sprint(sent), Content: "x"}); err != nil {
				t.Fatalf("append %d: %v", sent, err)
			}
		}
	}

	sqlDB, err := s.rdb.DB()
	if err != nil {
		t.Fatal(err)
	}
	reader, err := sqlDB.BeginTx(t.Context(), &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("begin the reader: %v", err)
	}
	var before int
	if err := reader.QueryRow("SELECT COUNT(*) FROM messages").Scan(&before); err != nil { // takes the snapshot
		t.Fatalf("reader: %v", err)
	}
	// Past the limit (max(64/4, 1024) pinned pages) and some way on.
	const pinned = 1024 + 256
	appendUntil("a WAL pinned by 1,280 pages", func() bool {
		c, _ := last()
		return c.WALPages-c.Copied > pinned
	})
	_, mark := last()
	appendUntil("two more checkpoints", func() bool { _, n := last(); return n >= mark+2 })
	mu.Lock()
	for _, c := range seen[mark:] {
		if c.Paused {
			t.Errorf("the writer was paused for a checkpoint while a reader pinned %d pages", c.WALPages-c.Copied)
		}
	}
	mu.Unlock()
	if err := reader.Rollback(); err != nil {
		t.Fatalf("end the reader: %v", err)
	}
	walFile := h.dsn + "-wal"
	grown := fileSize(t, walFile)
	if limit := walLimitBytes(64); grown <= limit {
		t.Fatalf("the pinned WAL is %d bytes; the test needs it past the writer's journal_size_limit %d", grown, limit)
	}
	top, _ := last()
	appendUntil("the WAL starting over after the reader ended", func() bool {
		c, _ := last()
		return c.WALPages < top.WALPages
	})
	// The commit that started the WAL over cut the file back.
	if size, limit := fileSize(t, walFile), walLimitBytes(64); size > limit {
		t.Errorf("the WAL file is %d bytes after starting over (%d while pinned); want at most the journal_size_limit %d", size, grown, limit)
	}
	wantStored(t, s, "pinned", sent)
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return fi.Size()
}
