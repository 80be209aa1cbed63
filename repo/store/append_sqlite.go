package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"gorm.io/gorm"
)

// The group commit's statements on SQLite.
//
// The portable statements of append.go grow with the batch — a placeholder per
// value, a CASE arm per conversation. On SQLite they were parsed at every commit (the
// driver of the time kept no prepared statement: 22% of the process in
// sqlite3Prepare at 3,300 sends/s), and every CASE was evaluated against every
// updated row. Here every statement has a constant text and is prepared once
// (sqliteStmts): the lookups take the whole batch as one JSON array, unpacked by
// json_each (JSON keeps 64-bit integers exact and strings byte for byte; all text is
// valid UTF-8, checked by validateMessage); the INSERT binds its values in chunks
// of a fixed size (sqliteInsertMessages says why); each UPDATE writes one row.

// The statements that look rows up by the batch's keys; TestSQLitePlans checks that
// each probes an index once per key.
const (
	sqliteLookupSQL = `SELECT m.id, m.conversation_id, m.seq, m.sender_id, m.sender_name, m.type, m.content, m.client_msg_id, m.created_at_ms
		FROM json_each(?) AS j CROSS JOIN messages AS m
		WHERE m.sender_id = j.value->>0 AND m.client_msg_id = j.value->>1`
	sqliteConversationSeqsSQL = `SELECT c.id, c.last_seq FROM json_each(?) AS j CROSS JOIN conversations AS c
		WHERE c.id = j.value`
	sqliteUpsertReadSeqsSQL = `INSERT INTO conversation_members (conversation_id, user_id, role, last_read_seq, joined_at_ms)
		SELECT value->>0, value->>1, value->>2, value->>3, value->>4 FROM json_each(?) WHERE true
		ON CONFLICT (conversation_id, user_id) DO UPDATE SET last_read_seq = MAX(last_read_seq, excluded.last_read_seq)`
)

// The UPDATEs of the group commit change one row each, found by its primary key,
// and run once per row. An UPDATE of several rows in one statement — FROM json_each
// or FROM (VALUES …), or an IN list — and RETURNING each make SQLite build a
// temporary B-tree at every execution, with its own pager and page buffers, which
// the driver's allocator maps and unmaps (two syscalls per buffer; 13% of the
// process for UPDATE … FROM … RETURNING at 5,000 sends/s); several rows written by
// a statement that may abort also keep a statement journal
// (sqliteInsertMessages). A one-row UPDATE needs none of it
// (TestSQLiteWritesKeepNoStatementJournal reads their bytecode), and binding a
// prepared statement is cheaper than either.
const (
	sqliteAdvanceConversationSQL = `UPDATE OR FAIL conversations
		SET last_seq = ?, last_message_id = ?, last_message_preview = ?, last_message_at_ms = ? WHERE id = ?`
	sqliteAdvanceReadSeqSQL = `UPDATE OR FAIL conversation_members SET last_read_seq = ?
		WHERE conversation_id = ? AND user_id = ? AND last_read_seq < ?`
)

// sqliteFindClientKeys is lookupClientKeys' query on SQLite: one probe of
// uk_messages_sender_client_msg per (sender, client id) pair. CROSS JOIN keeps
// json_each as the outer loop.
func sqliteFindClientKeys(p *sqliteStmts, tx *gorm.DB, pairs [][]any) ([]messageRow, error) {
	arg, err := json.Marshal(pairs)
	if err != nil {
		return nil, fmt.Errorf("encode client message ids: %w", err)
	}
	rows, err := p.query(tx, sqliteLookupSQL, string(arg))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []messageRow
	for rows.Next() {
		var r messageRow
		if err := rows.Scan(&r.ID, &r.ConversationID, &r.Seq, &r.SenderID, &r.SenderName, &r.Type, &r.Content, &r.ClientMsgID, &r.CreatedAtMS); err != nil {
			return nil, fmt.Errorf("scan message: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// sqliteAdvanceConversations is advanceConversations plus the read-back of last_seq:
// it reads the batch's conversations' last_seq in one lookup, then moves each past
// its new messages. The writer's transaction holds the database's write lock, so
// nothing changes last_seq in between. A conversation that does not exist is not
// returned.
func sqliteAdvanceConversations(p *sqliteStmts, tx *gorm.DB, convIDs []string, byConv map[string][]int, items []*item, msgIDs []int64, now int64) ([]conversationRow, error) {
	arg, err := json.Marshal(convIDs)
	if err != nil {
		return nil, fmt.Errorf("encode conversation ids: %w", err)
	}
	convs, err := sqliteConversationSeqs(p, tx, string(arg), len(convIDs))
	if err != nil {
		return nil, fmt.Errorf("read last_seq of %d conversations: %w", len(convIDs), err)
	}
	update := p.stmt(tx, sqliteAdvanceConversationSQL)
	for k := range convs {
		c := &convs[k]
		idx := byConv[c.ID]
		last := idx[len(idx)-1]
		c.LastSeq += int64(len(idx))
		if err := update.exec(tx, c.LastSeq, msgIDs[last], truncateRunes(items[last].msg.Content, maxPreviewLen), now, c.ID); err != nil {
			return nil, fmt.Errorf("advance last_seq of %s: %w", c.ID, err)
		}
	}
	return convs, nil
}

func sqliteConversationSeqs(p *sqliteStmts, tx *gorm.DB, ids string, n int) ([]conversationRow, error) {
	rows, err := p.query(tx, sqliteConversationSeqsSQL, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	convs := make([]conversationRow, 0, n)
	for rows.Next() {
		var c conversationRow
		if err := rows.Scan(&c.ID, &c.LastSeq); err != nil {
			return nil, err
		}
		convs = append(convs, c)
	}
	return convs, rows.Err()
}

// sqliteInsertMessages is the batch's INSERT: multi-row VALUES statements of
// sqliteInsertChunk rows each, INSERT OR FAIL.
//
// Unlike the other statements here it takes no JSON: every function call in a
// statement (value->>0 is one) marks it as one that may abort halfway, and a
// statement that writes several rows and may abort halfway makes SQLite keep a
// statement journal — a copy of every page the statement touches, written to a
// temporary file before the page changes. Each message dirties a leaf page of
// two indexes ((conversation, seq) and (sender, client id)) that no other message
// in the batch shares, so the journal doubled the insert's writes: 11–13% of
// the process at 4,000–7,000 sends/s. OR FAIL instead of the default OR ABORT is the
// other half: a constraint violation stops the statement where it is instead of
// undoing its earlier rows, which the group commit never needs because it rolls
// the whole transaction back (TestSQLiteInsertKeepsNoStatementJournal). A batch
// takes full chunks and one partial one, so sixteen prepared statements (one per
// size) serve every batch.
func sqliteInsertMessages(p *sqliteStmts, tx *gorm.DB, rows []messageRow) error {
	for len(rows) > 0 {
		chunk := rows[:min(sqliteInsertChunk, len(rows))]
		rows = rows[len(chunk):]
		q := sqliteInserts[len(chunk)]
		args := make([]any, 0, sqliteInsertCols*len(chunk))
		for _, r := range chunk {
			args = append(args, r.ID, r.ConversationID, r.Seq, r.SenderID, r.SenderName, r.Type, r.Content, r.ClientMsgID, r.CreatedAtMS)
		}
		if err := p.exec(tx, q, args...); err != nil {
			return fmt.Errorf("insert %d messages: %w", len(chunk), err)
		}
	}
	return nil
}

const (
	sqliteInsertChunk = 16 // rows per INSERT; 8 and 32 were slower in a 200-row batch when every Exec was parsed
	sqliteInsertCols  = 9
)

// sqliteInserts[n] is the INSERT of n messages, 1 ≤ n ≤ sqliteInsertChunk.
var sqliteInserts = func() (qs [sqliteInsertChunk + 1]string) {
	for n := 1; n <= sqliteInsertChunk; n++ {
		qs[n] = sqliteInsertSQL(n)
	}
	return qs
}()

// sqliteInsertSQL is the INSERT of n messages.
func sqliteInsertSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT OR FAIL INTO messages
		(id, conversation_id, seq, sender_id, sender_name, type, content, client_msg_id, created_at_ms) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?,?,?,?,?,?,?)")
	}
	return b.String()
}

// sqliteUpsertReadSeqs creates member rows (world's implicit membership) or moves
// their read pointers forward. "WHERE true" tells SQLite's parser that ON CONFLICT
// belongs to the INSERT, not to a join.
func sqliteUpsertReadSeqs(p *sqliteStmts, tx *gorm.DB, rows []memberRow) error {
	vals := make([][5]any, len(rows))
	for i, r := range rows {
		vals[i] = [5]any{r.ConversationID, r.UserID, r.Role, r.LastReadSeq, r.JoinedAtMS}
	}
	arg, err := json.Marshal(vals)
	if err != nil {
		return fmt.Errorf("encode %d read pointers: %w", len(rows), err)
	}
	return p.exec(tx, sqliteUpsertReadSeqsSQL, string(arg))
}

// sqliteAdvanceReadSeqs is advanceReadSeqs on SQLite: existing read pointers move
// forward to seq[k]; keys without a member row are left alone, and so are pointers
// already there (the row is not written).
func sqliteAdvanceReadSeqs(p *sqliteStmts, tx *gorm.DB, keys []memberKey, seq map[memberKey]int64) error {
	update := p.stmt(tx, sqliteAdvanceReadSeqSQL)
	for _, k := range keys {
		if err := update.exec(tx, seq[k], k.conv, k.user, seq[k]); err != nil {
			return fmt.Errorf("advance the read pointer of %d in %s: %w", k.user, k.conv, err)
		}
	}
	return nil
}

// sqliteStmts holds the group commit's statements prepared on the writer's one
// connection, so a commit binds and steps them without parsing. gorm's statement
// cache does not do it for them: it prepares a statement first met inside a
// transaction on that transaction, and database/sql prepares such a statement again
// in every later transaction. Prepared on the database before any transaction,
// Tx.StmtContext finds them ready on the writer's connection. They are prepared at
// Open because the writer's only connection is inside the transaction when a
// commit runs them; exec and query fall back to gorm for any other text.
type sqliteStmts struct {
	m map[string]*sql.Stmt
}

func prepareSQLiteStmts(ctx context.Context, db *sql.DB) (*sqliteStmts, error) {
	p := &sqliteStmts{m: map[string]*sql.Stmt{}}
	qs := []string{sqliteLookupSQL, sqliteConversationSeqsSQL, sqliteUpsertReadSeqsSQL, sqliteAdvanceConversationSQL, sqliteAdvanceReadSeqSQL}
	qs = append(qs, sqliteInserts[1:]...)
	for _, q := range qs {
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("prepare %s: %w", firstLine(q), err), p.close())
		}
		p.m[q] = st
	}
	return p, nil
}

func (p *sqliteStmts) close() error {
	if p == nil {
		return nil
	}
	var errs []error
	for _, st := range p.m {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}

// in returns q's prepared statement bound to tx, or nil.
func (p *sqliteStmts) in(tx *gorm.DB, q string) *sql.Stmt {
	if p == nil {
		return nil
	}
	st := p.m[q]
	b, ok := tx.Statement.ConnPool.(interface {
		StmtContext(context.Context, *sql.Stmt) *sql.Stmt
	})
	if st == nil || !ok {
		return nil
	}
	return b.StmtContext(tx.Statement.Context, st)
}

func (p *sqliteStmts) exec(tx *gorm.DB, q string, args ...any) error {
	return p.stmt(tx, q).exec(tx, args...)
}

func (p *sqliteStmts) query(tx *gorm.DB, q string, args ...any) (*sql.Rows, error) {
	st := p.in(tx, q)
	if st == nil {
		return tx.Raw(q, args...).Rows()
	}
	return st.QueryContext(stmtCtx(tx), args...)
}

// txStmt is a statement to execute several times in one transaction: prepared
// and bound to it once.
type txStmt struct {
	q  string
	st *sql.Stmt // nil: through gorm
}

func (p *sqliteStmts) stmt(tx *gorm.DB, q string) txStmt {
	return txStmt{q: q, st: p.in(tx, q)}
}

func (s txStmt) exec(tx *gorm.DB, args ...any) error {
	if s.st == nil {
		return tx.Exec(s.q, args...).Error
	}
	_, err := s.st.ExecContext(stmtCtx(tx), args...)
	return err
}

// stmtCtx is the context the group commit's prepared statements run with: tx's,
// minus its cancellation. modernc.org/sqlite starts a goroutine per execution of a
// statement whose context can be cancelled, to interrupt it when the context ends
// (57% of the goroutines started at 7,000 sends/s, with a statement per conversation
// and per read pointer). These statements cannot wait: they run inside the writer's
// transaction, which took the write lock at BEGIN IMMEDIATE, and each probes one
// index. BEGIN and COMMIT keep the cancellable context: a lock wait there is bounded
// by busy_timeout, and the batch's write by writeTimeout.
func stmtCtx(tx *gorm.DB) context.Context {
	return context.WithoutCancel(tx.Statement.Context)
}
