package store

import (
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gochat/gochat/repo/repotest"
)

// TestWALBufferKeepsEveryCommit checks the writer's buffered WAL writes (walvfs.go)
// against what SQLite itself guarantees: after every AppendMany returns, a copy of
// the database and WAL files, opened by a new connection with the default VFS (which
// recovers the WAL from the file alone, checking every frame's checksum), holds
// exactly the messages appended so far and passes integrity_check. A commit whose
// frames were still in memory, or a rewritten frame header left unwritten, would be
// missing from the copy.
//
// The writer's page cache is 16 pages, so large batches spill pages into the WAL
// before their commit and write some of them again, which makes SQLite rewrite
// frames in place and recompute their checksums after the commit frame (walvfs.go
// must write those straight through). The batches run from one message to ones
// whose frames pass both the 64 KiB write limit and the 1 MiB buffer.
func TestWALBufferKeepsEveryCommit(t *testing.T) {
	path := repotest.SQLiteDSN(t)
	h := &harness{driver: DriverSQLite, dsn: path + "?_pragma=cache_size(16)"}
	noCheckpoints := func(s *Store) { s.checkpointEvery = time.Hour } // the copy needs the WAL whole
	s := h.openWith(t, []Option{noCheckpoints}, maxBatch(maxBatchLimit))
	for _, c := range []string{"a", "b", "c"} {
		addConversation(t, s, c, "group")
		addMember(t, s, c, 1)
	}
	buffered0, direct0 := walStats.buffered.Load(), walStats.direct.Load()

	var total int
	for round, n := range []int{1, 2, 45, 3, 256, 7, 256, 1, 100, 500} {
		ms := make([]Message, n)
		for i := range ms {
			// Up to 6 KiB of content each: the large batches write megabytes.
			size := 1 + (i*733+round*97)%6000
			ms[i] = Message{
				ConversationID: []string{"a", "b", "c"}[i%3], SenderID: 1,
				Content: strings.Repeat(string(rune('a'+round)), size), ClientMsgID: fmt.Sprintf("r%d-%d", round, i),
			}
		}
		for i, r := range s.AppendMany(t.Context(), ms) {
			if r.Err != nil {
				t.Fatalf("round %d: message %d: %v", round, i, r.Err)
			}
		}
		total += n
		if got := countInCopy(t, path); got != total {
			t.Fatalf("round %d: a copy of the files holds %d messages, want %d", round, got, total)
		}
	}
	if walStats.buffered.Load() == buffered0 {
		t.Error("no frame went through the WAL buffer")
	}
	if walStats.direct.Load() == direct0 {
		t.Error("no write went straight to the WAL: the in-place rewrites were not exercised")
	}
}

// countInCopy copies the database and its WAL (not the shared-memory index) and
// counts the messages a fresh connection finds there after checking the copy.
func countInCopy(t *testing.T, path string) int {
	t.Helper()
	dir := t.TempDir()
	dst := filepath.Join(dir, "copy.db")
	for _, suffix := range []string{"", "-wal"} {
		copyFile(t, path+suffix, dst+suffix)
	}
	db, err := sql.Open("sqlite", dst)
	if err != nil {
		t.Fatalf("open the copy: %v", err)
	}
	defer db.Close()
	var check string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check of the copy: %q, %v", check, err)
	}
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM messages").Scan(&n); err != nil {
		t.Fatalf("count the copy's messages: %v", err)
	}
	return n
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatalf("copy %s: %v", from, err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatalf("copy to %s: %v", to, err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatalf("copy %s: %v", from, err)
	}
	if err := dst.Close(); err != nil {
		t.Fatalf("copy %s: %v", from, err)
	}
}
