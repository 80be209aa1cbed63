package store

import (
	"encoding/json"
	"fmt"

	"gorm.io/gorm"
)

// The group commit's statements on SQLite.
//
// github.com/glebarez/go-sqlite keeps no prepared statement: every Exec parses its SQL
// again (gorm's PrepareStmt only caches the text). The portable statements of
// append.go grow with the batch — a placeholder per value, a CASE arm per
// conversation — so on SQLite a batch of 200 messages spent more time in the parser
// than in the B-trees (22% of the process in sqlite3Prepare at 3,300 sends/s), and
// every CASE was evaluated against every updated row. Here each statement has a
// constant text and takes the whole batch as one JSON array, unpacked by json_each:
// parsing costs the same for 1 message or 1,000, and each row is found through its
// index once. JSON keeps 64-bit integers exact and strings byte for byte (all text
// is valid UTF-8, checked by validateMessage).

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

// sqliteInsertMessages is the batch's multi-row INSERT.
func sqliteInsertMessages(tx *gorm.DB, rows []messageRow) error {
	vals := make([][8]any, len(rows))
	for i, r := range rows {
		var client any
		if r.ClientMsgID != nil {
			client = *r.ClientMsgID
		}
		vals[i] = [8]any{r.ID, r.ConversationID, r.Seq, r.SenderID, r.SenderName, r.Type, r.Content, client}
	}
	arg, err := json.Marshal(vals)
	if err != nil {
		return fmt.Errorf("encode %d messages: %w", len(rows), err)
	}
	now := rows[0].CreatedAtMS // one commit, one time
	if err := tx.Exec(`INSERT INTO messages
		(id, conversation_id, seq, sender_id, sender_name, type, content, client_msg_id, created_at_ms)
		SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, ?
		FROM json_each(?)`, now, string(arg)).Error; err != nil {
		return fmt.Errorf("insert %d messages: %w", len(rows), err)
	}
	return nil
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
