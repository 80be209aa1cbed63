package store

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bwmarrin/snowflake"

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
	b, err := os.ReadFile(from)
	if err == nil {
		err = os.WriteFile(to, b, 0o600)
	}
	if err != nil {
		t.Fatalf("copy %s: %v", from, err)
	}
}

// TestWALBufferSurvivesKill kills a process that is appending (SIGKILL, at a moment
// the test does not choose, usually with a batch's frames in the buffer or being
// written) and reopens its database: every message whose AppendMany had returned is
// there, each conversation's seqs run 1..n without a gap, and the file passes
// integrity_check. The child is this test binary (TestMain runs walKillChild).
func TestWALBufferSurvivesKill(t *testing.T) {
	path := repotest.SQLiteDSN(t)
	for round := range 3 {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), walKillEnv+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The child prints the running total of acked messages after every
		// AppendMany; kill it after a random number of them.
		acked, target := 0, 20+rand.IntN(60)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "acked "); ok {
				acked, _ = strconv.Atoi(n)
				if target--; target == 0 {
					break
				}
			}
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		if acked == 0 {
			t.Fatalf("round %d: the child acked nothing", round)
		}

		h := &harness{driver: DriverSQLite, dsn: path}
		s := h.open(t)
		var check string
		if err := s.rdb.Raw("PRAGMA integrity_check").Scan(&check).Error; err != nil || check != "ok" {
			t.Fatalf("round %d: integrity_check: %q, %v", round, check, err)
		}
		var total int64
		for _, c := range []string{"a", "b", "c"} {
			conv := mustConversation(t, s, c)
			var got struct{ N, Lo, Hi, Uniq int64 }
			if err := s.rdb.Raw("SELECT COUNT(*) AS n, COALESCE(MIN(seq), 0) AS lo, COALESCE(MAX(seq), 0) AS hi, COUNT(DISTINCT seq) AS uniq FROM messages WHERE conversation_id = ?", c).Scan(&got).Error; err != nil {
				t.Fatal(err)
			}
			if n := conv.LastSeq; got.N != n || got.Uniq != n || got.Hi != n || (n > 0 && got.Lo != 1) {
				t.Fatalf("round %d: conversation %s has last_seq %d and seqs %+v, want 1..%d each once", round, c, n, got, n)
			}
			total += conv.LastSeq
		}
		if total < int64(acked) {
			t.Fatalf("round %d: %d messages after the kill, %d were acked", round, total, acked)
		}
		t.Logf("round %d: %d acked before the kill, %d stored", round, acked, total)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

const walKillEnv = "GOCHAT_WAL_KILL_CHILD"

// TestMain runs TestWALBufferSurvivesKill's appending process when started as it.
func TestMain(m *testing.M) {
	if path := os.Getenv(walKillEnv); path != "" {
		if err := walKillChild(path); err != nil {
			fmt.Fprintln(os.Stderr, "wal kill child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// walKillChild appends batches of 1 to 200 messages to three conversations until it
// is killed, printing the running total of acked messages after every AppendMany.
// Its 16-page cache makes large batches spill and rewrite frames.
func walKillChild(path string) error {
	ctx := context.Background()
	node, err := snowflake.NewNode(1)
	if err != nil {
		return err
	}
	s, err := Open(ctx, Config{Driver: DriverSQLite, DSN: path + "?_pragma=cache_size(16)", MaxBatch: maxBatchLimit}, node, nil)
	if err != nil {
		return err
	}
	var acked int64
	for _, c := range []string{"a", "b", "c"} {
		conv, err := s.Conversation(ctx, c)
		switch {
		case errors.Is(err, ErrNotFound):
			if err := s.wdb.Create(&conversationRow{ID: c, Type: "group", Name: c}).Error; err != nil {
				return err
			}
			if err := s.wdb.Create(&memberRow{ConversationID: c, UserID: 1, Role: RoleMember}).Error; err != nil {
				return err
			}
		case err != nil:
			return err
		default:
			acked += conv.LastSeq
		}
	}
	for i := 0; ; i++ {
		ms := make([]Message, 1+i%200)
		for k := range ms {
			ms[k] = Message{ConversationID: []string{"a", "b", "c"}[k%3], SenderID: 1, Content: strings.Repeat("k", 1+(i*131+k*17)%3000)}
		}
		for _, r := range s.AppendMany(ctx, ms) {
			if r.Err != nil {
				return r.Err
			}
		}
		acked += int64(len(ms))
		fmt.Printf("acked %d\n", acked)
	}
}
