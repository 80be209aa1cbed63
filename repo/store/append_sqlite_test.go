package store

import (
	"strings"
	"testing"

	"github.com/gochat/gochat/repo/repotest"
)

// TestSQLitePlans guards the cost of the group commit on SQLite: each statement that
// finds rows by the batch's keys must walk the JSON array once and probe an index per
// element, never scan a table (which would make a commit cost grow with the table).
func TestSQLitePlans(t *testing.T) {
	h := &harness{driver: DriverSQLite, dsn: repotest.SQLiteDSN(t)}
	s := h.open(t)
	for name, q := range map[string]string{
		"lookup":               sqliteLookupSQL,
		"advanceConversations": sqliteAdvanceConversationsSQL,
		"advanceReadSeqs":      sqliteAdvanceReadSeqsSQL,
	} {
		var args []any
		for range strings.Count(q, "?") {
			args = append(args, "[]")
		}
		rows, err := s.wdb.Raw("EXPLAIN QUERY PLAN "+q, args...).Rows()
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
		// Want exactly: SCAN j VIRTUAL TABLE …, then SEARCH <table> USING INDEX ….
		if len(plan) != 2 || !strings.HasPrefix(plan[0], "SCAN j ") || !strings.HasPrefix(plan[1], "SEARCH ") || !strings.Contains(plan[1], " INDEX ") {
			t.Errorf("%s: plan %q; want a scan of the JSON array and an index search per element", name, plan)
		}
	}
}
