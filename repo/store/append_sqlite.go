package store

import (
	"encoding/json"
	"fmt"
	"strings"

	"gorm.io/gorm"
)

// The group commit's statements on SQLite.
//
// github.com/glebarez/go-sqlite keeps no prepared statement: every Exec parses its SQL
// again (gorm's PrepareStmt only caches the text). The portable statements of
// append.go grow with the batch — a placeholder per value, a CASE arm per
// conversation — so on SQLite a batch of 200 messages spent more time in the parser
// than in the B-trees (22% of the process in sqlite3Prepare at 3,300 sends/s), and
// every CASE was evaluated against every updated row. Here each statement but the
// INSERT has a constant text and takes the whole batch as one JSON array, unpacked
// by json_each: parsing costs the same for 1 message or 1,000, and each row is found
// through its index once. JSON keeps 64-bit integers exact and strings byte for
// byte (all text is valid UTF-8, checked by validateMessage). The INSERT binds its
// values (sqliteInsertMessages says why).

// The statements that look rows up by the batch's keys; TestSQLitePlans checks that
// each probes an index once per key.
const (
	sqliteLookupSQL = `SELECT m.* FROM json_each(?) AS j CROSS JOIN messages AS m
		WHERE m.sender_id = j.value->>0 AND m.client_msg_id = j.value->>1`
	sqliteAdvanceConversationsSQL = `UPDATE conversations SET
			last_seq = last_seq + (j.value->>'n'),
			last_message_id = j.value->>'m',
			last_message_preview = j.value->>'p',
			last_message_at_ms = ?
		FROM json_each(?) AS j WHERE conversations.id = j.value->>'i'
		RETURNING conversations.id, conversations.last_seq`
	sqliteAdvanceReadSeqsSQL = `UPDATE conversation_members SET last_read_seq = MAX(last_read_seq, j.value->>2)
		FROM json_each(?) AS j
		WHERE conversation_members.conversation_id = j.value->>0 AND conversation_members.user_id = j.value->>1`
)

// sqliteFindClientKeys is lookupClientKeys' query on SQLite: one probe of
// uk_messages_sender_client_msg per (sender, client id) pair. CROSS JOIN keeps
// json_each as the outer loop.
func sqliteFindClientKeys(tx *gorm.DB, pairs [][]any) ([]messageRow, error) {
	arg, err := json.Marshal(pairs)
	if err != nil {
		return nil, fmt.Errorf("encode client message ids: %w", err)
	}
	var rows []messageRow
	err = tx.Raw(sqliteLookupSQL, string(arg)).Scan(&rows).Error
	return rows, err
}

// sqliteAdvanceConversations is advanceConversations plus the read-back of last_seq,
// in one statement: UPDATE … FROM json_each … RETURNING. A conversation that does not
// exist matches no row and is not returned.
func sqliteAdvanceConversations(tx *gorm.DB, convIDs []string, byConv map[string][]int, items []*item, msgIDs []int64, now int64) ([]conversationRow, error) {
	type convArg struct {
		ID      string `json:"i"`
		N       int    `json:"n"`
		LastID  int64  `json:"m"`
		Preview string `json:"p"`
	}
	args := make([]convArg, len(convIDs))
	for k, convID := range convIDs {
		idx := byConv[convID]
		last := idx[len(idx)-1]
		args[k] = convArg{convID, len(idx), msgIDs[last], truncateRunes(items[last].msg.Content, maxPreviewLen)}
	}
	arg, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("encode conversations: %w", err)
	}
	var convs []conversationRow
	if err := tx.Raw(sqliteAdvanceConversationsSQL, now, string(arg)).
		Scan(&convs).Error; err != nil {
		return nil, fmt.Errorf("advance last_seq of %d conversations: %w", len(convIDs), err)
	}
	return convs, nil
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
// the whole transaction back (TestSQLiteInsertKeepsNoStatementJournal). The
// chunks bound the statement text the driver parses at every Exec and its
// argument binding, which is quadratic in the number of placeholders.
func sqliteInsertMessages(tx *gorm.DB, rows []messageRow) error {
	for len(rows) > 0 {
		chunk := rows[:min(sqliteInsertChunk, len(rows))]
		rows = rows[len(chunk):]
		q := sqliteInsertFull
		if len(chunk) < sqliteInsertChunk {
			q = sqliteInsertSQL(len(chunk))
		}
		args := make([]any, 0, sqliteInsertCols*len(chunk))
		for _, r := range chunk {
			args = append(args, r.ID, r.ConversationID, r.Seq, r.SenderID, r.SenderName, r.Type, r.Content, r.ClientMsgID, r.CreatedAtMS)
		}
		if err := tx.Exec(q, args...).Error; err != nil {
			return fmt.Errorf("insert %d messages: %w", len(chunk), err)
		}
	}
	return nil
}

const (
	sqliteInsertChunk = 16 // rows per INSERT; 8 and 32 were slower in a 200-row batch
	sqliteInsertCols  = 9
)

var sqliteInsertFull = sqliteInsertSQL(sqliteInsertChunk)

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
func sqliteUpsertReadSeqs(tx *gorm.DB, rows []memberRow) error {
	vals := make([][5]any, len(rows))
	for i, r := range rows {
		vals[i] = [5]any{r.ConversationID, r.UserID, r.Role, r.LastReadSeq, r.JoinedAtMS}
	}
	arg, err := json.Marshal(vals)
	if err != nil {
		return fmt.Errorf("encode %d read pointers: %w", len(rows), err)
	}
	return tx.Exec(`INSERT INTO conversation_members (conversation_id, user_id, role, last_read_seq, joined_at_ms)
		SELECT value->>0, value->>1, value->>2, value->>3, value->>4 FROM json_each(?) WHERE true
		ON CONFLICT (conversation_id, user_id) DO UPDATE SET last_read_seq = MAX(last_read_seq, excluded.last_read_seq)`,
		string(arg)).Error
}

// sqliteAdvanceReadSeqs is advanceReadSeqs on SQLite: existing read pointers move
// forward to seq[k]; keys without a member row are left alone.
func sqliteAdvanceReadSeqs(tx *gorm.DB, keys []memberKey, seq map[memberKey]int64) error {
	vals := make([][3]any, len(keys))
	for i, k := range keys {
		vals[i] = [3]any{k.conv, k.user, seq[k]}
	}
	arg, err := json.Marshal(vals)
	if err != nil {
		return fmt.Errorf("encode %d read pointers: %w", len(keys), err)
	}
	return tx.Exec(sqliteAdvanceReadSeqsSQL, string(arg)).Error
}
