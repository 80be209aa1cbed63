package store

import (
	"fmt"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/gochat/gochat/repo/repotest"
	"gorm.io/gorm"
)

// TestSQLitePlans guards the cost of the group commit on SQLite: each statement that
// finds rows by the batch's keys must walk the JSON array once and probe an index per
// element, and each one-row UPDATE must find its row through the primary key, never
// scan a table (which would make a commit cost grow with the table).
func TestSQLitePlans(t *testing.T) {
	h := &harness{driver: DriverSQLite, dsn: repotest.SQLiteDSN(t)}
	s := h.open(t)
	for name, c := range map[string]struct {
		q    string
		scan bool // the plan starts with a scan of the JSON array j
	}{
		"lookup":              {sqliteLookupSQL, true},
		"conversationSeqs":    {sqliteConversationSeqsSQL, true},
		"advanceConversation": {sqliteAdvanceConversationSQL, false},
		"advanceReadSeq":      {sqliteAdvanceReadSeqSQL, false},
	} {
		var args []any
		for range strings.Count(c.q, "?") {
			args = append(args, "[]")
		}
		rows, err := s.wdb.Raw("EXPLAIN QUERY PLAN "+c.q, args...).Rows()
		if err != nil {
			t.Fatalf("%s: explain: %v", name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatalf("%s: scan plan: %v", name, err)
			}
			plan = append(plan, detail)
		}
		if err := rows.Close(); err != nil {
			t.Fatalf("%s: plan rows: %v", name, err)
		}
		search := plan
		if c.scan {
			if len(plan) == 0 || !strings.HasPrefix(plan[0], "SCAN j ") {
				t.Errorf("%s: plan %q; want a scan of the JSON array first", name, plan)
				continue
			}
			search = plan[1:]
		}
		// Want exactly one SEARCH <table> USING INDEX ….
		if len(search) != 1 || !strings.HasPrefix(search[0], "SEARCH ") || !strings.Contains(search[0], " INDEX ") {
			t.Errorf("%s: plan %q; want one index search (per element)", name, plan)
		}
	}
}

// TestSQLiteWritesKeepNoStatementJournal guards the form of the group commit's writes
// on SQLite. SQLite keeps a statement journal (a copy of every page before it
// changes) for a statement that writes several rows and may abort halfway; a
// statement may abort when it calls a function or checks a constraint with OR
// ABORT, the default. The test reads each write's bytecode: no function call, every
// constraint check stops with OR FAIL, and no temporary B-tree (OpenEphemeral: a
// pager and page buffers allocated and freed at every execution). The old
// JSON-driven INSERT and UPDATE are the controls: the same reading must flag them.
func TestSQLiteWritesKeepNoStatementJournal(t *testing.T) {
	h := &harness{driver: DriverSQLite, dsn: repotest.SQLiteDSN(t)}
	s := h.open(t)
	// mayAbort lists what in q's bytecode lets it abort halfway; checks counts the
	// constraint checks it found.
	mayAbort := func(q string) (reasons []string, checks int) {
		t.Helper()
		args := make([]any, strings.Count(q, "?"))
		for i := range args {
			args[i] = int64(1)
		}
		rows, err := s.wdb.Raw("EXPLAIN "+q, args...).Rows()
		if err != nil {
			t.Fatalf("explain: %v", err)
		}
		defer rows.Close()
		const oeAbort = 2 // sqliteInt.h: OE_None 0, OE_Rollback 1, OE_Abort 2, OE_Fail 3
		for rows.Next() {
			var addr, p1, p2, p3 int64
			var op string
			var p4, p5, comment any
			if err := rows.Scan(&addr, &op, &p1, &p2, &p3, &p4, &p5, &comment); err != nil {
				t.Fatalf("scan bytecode: %v", err)
			}
			switch {
			case op == "Function" || op == "PureFunc" || op == "OpenEphemeral":
				reasons = append(reasons, fmt.Sprintf("%d: %s %v", addr, op, p4))
			case (op == "Halt" || op == "HaltIfNull") && p1 != 0:
				checks++
				if p2 == oeAbort {
					reasons = append(reasons, fmt.Sprintf("%d: %s on error %v aborts", addr, op, p4))
				}
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("bytecode rows: %v", err)
		}
		return reasons, checks
	}

	writes := map[string]string{
		"UPDATE conversations":        sqliteAdvanceConversationSQL,
		"UPDATE conversation_members": sqliteAdvanceReadSeqSQL,
	}
	for _, n := range []int{1, sqliteInsertChunk} {
		writes[fmt.Sprintf("INSERT of %d rows", n)] = sqliteInsertSQL(n)
	}
	for name, q := range writes {
		reasons, checks := mayAbort(q)
		if len(reasons) > 0 {
			t.Errorf("%s may abort halfway or builds a temporary B-tree: %q", name, reasons)
		}
		if checks == 0 {
			t.Errorf("%s: no constraint check found in its bytecode; the test no longer reads it right", name)
		}
	}
	control := `INSERT INTO messages
		(id, conversation_id, seq, sender_id, sender_name, type, content, client_msg_id, created_at_ms)
		SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, ?
		FROM json_each(?)`
	if reasons, _ := mayAbort(control); len(reasons) == 0 {
		t.Error("the JSON-driven INSERT was not flagged; the test no longer reads bytecode right")
	}
	control = `UPDATE OR FAIL conversations SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq`
	if reasons, _ := mayAbort(control); len(reasons) == 0 {
		t.Error("UPDATE … RETURNING was not flagged; the test no longer reads bytecode right")
	}
}

// TestSQLiteCommitStartsNoGoroutinePerStatement guards stmtCtx: the goroutines a
// group commit starts must not grow with its number of conversations (the driver
// starts one per execution of a statement whose context can be cancelled, and the
// commit runs two statements per conversation).
func TestSQLiteCommitStartsNoGoroutinePerStatement(t *testing.T) {
	h := &harness{driver: DriverSQLite, dsn: repotest.SQLiteDSN(t)}
	s := h.open(t, window(time.Hour), maxBatch(64))
	batch := func(n int, round string) []Message { // n messages in n conversations
		ms := make([]Message, n)
		for i := range ms {
			conv := fmt.Sprintf("c%d", i)
			ms[i] = Message{ConversationID: conv, SenderID: int64(i + 1), Content: round, ClientMsgID: round + conv}
		}
		return ms
	}
	for i := range 64 {
		conv := fmt.Sprintf("c%d", i)
		addConversation(t, s, conv, "group")
		addMember(t, s, conv, int64(i+1))
	}
	created := func() uint64 {
		sample := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	// A full batch commits at once (MaxBatch), without waiting for the window.
	commit := func(round string) uint64 {
		t.Helper()
		before := created()
		for i, r := range s.AppendMany(t.Context(), batch(64, round)) {
			if r.Err != nil {
				t.Fatalf("message %d: %v", i, r.Err)
			}
		}
		return created() - before
	}
	commit("warm") // the statements' first use, the pool's connections
	one := commit("a")
	if st := s.Stats(); st.Batches != 2 {
		t.Fatalf("stats %+v: want each AppendMany of 64 committed as one transaction", st)
	}
	// 64 conversations: at two statements each, a goroutine per statement would
	// start 128 goroutines or more.
	if one > 16 {
		t.Errorf("a commit of 64 messages in 64 conversations started %d goroutines; want a few, not one per statement", one)
	}
}

// TestSQLiteLimitIsLiteral: on SQLite, gorm's LIMIT and OFFSET reach the statement as
// numbers. A bound LIMIT makes SQLite prepare the statement again at every
// execution (sqliteLimit says why), so this fails when the clause builder is gone.
func TestSQLiteLimitIsLiteral(t *testing.T) {
	h := &harness{driver: DriverSQLite, dsn: repotest.SQLiteDSN(t)}
	s := h.open(t)
	for _, c := range []struct {
		limit, offset int
		want          string
	}{
		{limit: 7, want: " LIMIT 7"},
		{limit: 7, offset: 3, want: " LIMIT 7 OFFSET 3"},
		{limit: 0, want: " LIMIT 0"},
	} {
		var rows []memberOut
		q := s.rdb.Session(&gorm.Session{DryRun: true}).Model(&memberRow{}).Where("conversation_id = ?", "group_x").Limit(c.limit)
		if c.offset > 0 {
			q = q.Offset(c.offset)
		}
		stmt := q.Scan(&rows).Statement
		sql := stmt.SQL.String()
		if !strings.HasSuffix(sql, c.want) || len(stmt.Vars) != 1 {
			t.Errorf("limit %d offset %d: %q with %d bound values; want it to end in %q and bind only the conversation", c.limit, c.offset, sql, len(stmt.Vars), c.want)
		}
	}
	// And the numbers select what they say.
	addConversation(t, s, "group_lim", "group")
	for uid := int64(1); uid <= 5; uid++ {
		addMember(t, s, "group_lim", uid)
	}
	got, err := s.Members(t.Context(), "group_lim", 1, 2)
	if err != nil {
		t.Fatalf("Members: %v", err)
	}
	if len(got) != 2 || got[0].UserID != 2 || got[1].UserID != 3 {
		t.Errorf("Members after 1, limit 2 = %+v; want users 2 and 3", got)
	}
}
