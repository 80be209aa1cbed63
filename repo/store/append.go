package store

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"
)

// Group commit, leader/follower style, with no background goroutine:
//
//   - The first Append that finds no open batch opens one and becomes its
//     leader; later callers join it as followers.
//   - The leader waits until the batch is full (MaxBatch, never for the timer
//     then), BatchWindow passes, the Store closes or its own ctx ends. It then
//     takes wmu, which it may have to wait for while the previous batch
//     commits; meanwhile its batch stays open and keeps growing. Holding wmu
//     it seals the batch, writes every live item in one transaction, stores
//     each item's outcome and closes batch.done.
//   - Followers wait for batch.done and read their outcome.
//
// Cancellation: an item can be withdrawn while it is queued. A follower whose
// ctx ends before the leader seals the batch withdraws its item and returns
// ctx.Err(); the item is never written. Once sealed the item is being written
// and the follower waits for the outcome even though its ctx has ended (at
// most writeTimeout): an ack is never lost, and an Append that returns a ctx
// error never wrote its message. A leader whose ctx ends stops collecting,
// withdraws its own item, still writes the followers' items (they depend on
// it) and then returns ctx.Err(). The write itself runs on a ctx detached from
// any one caller, since it carries everyone's messages.

// writeTimeout bounds one batch write, including retries and the item-by-item
// fallback; callers waiting for a sealed batch wait at most this long.
const writeTimeout = 30 * time.Second

// maxAttempts bounds how often one transaction is retried after a lock
// conflict (deadlock victim, lock wait timeout, SQLITE_BUSY).
const maxAttempts = 3

// recheckHold is how long batches keep looking their client message ids up after a
// lookup found one stored (writeRetrying).
const recheckHold = time.Second

// itemState says who may still touch an item; guarded by Store.bmu.
type itemState int8

const (
	stateQueued    itemState = iota // in a batch, not yet sealed; its caller may withdraw it
	stateWriting                    // sealed for writing; its caller must wait for the outcome
	stateWithdrawn                  // its caller gave up first; the leader skips it
)

// item is one Append call travelling through a batch.
type item struct {
	msg   Message
	state itemState // guarded by Store.bmu
	out   outcome   // written by the leader before it closes batch.done
}

type outcome struct {
	msg Message
	dup bool
	err error
}

// batch collects concurrent appends for one transaction.
type batch struct {
	items []*item       // appended under Store.bmu while the batch is Store.open
	full  chan struct{} // closed under Store.bmu when items reaches MaxBatch; the batch is sealed for joiners then
	done  chan struct{} // closed by the leader once every live item has its outcome
}

// Append stores m in its conversation and returns the stored message.
//
// It is durable when it returns (the transaction committed). It assigns the
// next gap-free seq of the conversation, a snowflake id and the creation time;
// updates the conversation's last message; and moves the sender's read
// pointer to the new seq (creating it in world; elsewhere only a member has
// one). If m.ClientMsgID is set and (SenderID, ClientMsgID) is already stored
// — earlier, in the same batch, or by another process at the same moment — it
// stores nothing and returns the stored message with duplicate = true. A missing conversation yields ErrNotFound and consumes no
// seq. See the comment at the top of this file for ctx cancellation.
func (s *Store) Append(ctx context.Context, m Message) (stored Message, duplicate bool, err error) {
	r := s.AppendMany(ctx, []Message{m})[0]
	return r.Msg, r.Duplicate, r.Err
}

// Appended is one message's outcome in AppendMany: what Append would have returned.
type Appended struct {
	Msg       Message
	Duplicate bool
	Err       error
}

// AppendMany is Append for several messages in one call, each with its own
// outcome, exactly what its own Append would have returned. They join the open
// batch together and in order (one that fills up continues in the next), so a
// caller with many messages neither starts a goroutine per message nor wakes one
// per message when the commit is done. Messages of one conversation get their
// seqs in the order given. See the comment at the top of this file for ctx
// cancellation; it applies to each message.
func (s *Store) AppendMany(ctx context.Context, ms []Message) []Appended {
	res := make([]Appended, len(ms))
	done, err := s.enter()
	if err != nil {
		for i := range res {
			res[i].Err = err
		}
		return res
	}
	defer done()
	items := make([]*item, len(ms))
	for i, m := range ms {
		err := validateMessage(m)
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			res[i].Err = fmt.Errorf("append to %s: %w", m.ConversationID, err)
			continue
		}
		items[i] = &item{msg: m}
	}

	// One part per batch the items land in: a run of items in the same batch,
	// which this call leads when it opened that batch.
	type part struct {
		b      *batch
		leader bool
		items  []*item
	}
	var parts []part
	s.bmu.Lock()
	for _, it := range items {
		if it == nil {
			continue
		}
		b, leader := s.open, false
		if b == nil {
			b = &batch{full: make(chan struct{}), done: make(chan struct{})}
			s.open, leader = b, true
		}
		b.items = append(b.items, it)
		if len(parts) == 0 || parts[len(parts)-1].b != b {
			parts = append(parts, part{b: b, leader: leader})
		}
		parts[len(parts)-1].items = append(parts[len(parts)-1].items, it)
		if len(b.items) >= s.cfg.MaxBatch {
			s.open = nil
			close(b.full)
		}
	}
	s.bmu.Unlock()
	if s.hooks.enqueued != nil {
		for range parts {
			s.hooks.enqueued()
		}
	}

	// In order: a batch this call opened after another filled up can only commit
	// after it anyway (wmu), and it stays open to joiners meanwhile.
	for _, p := range parts {
		if p.leader {
			s.lead(ctx, p.b, p.items)
		} else {
			s.follow(ctx, p.b, p.items)
		}
	}
	for i, it := range items {
		if it != nil {
			res[i] = Appended{Msg: it.out.msg, Duplicate: it.out.dup, Err: it.out.err}
		}
	}
	return res
}

// lead waits for b to fill up or its window to pass, then writes it, own items
// included. Own items are withdrawn, with ctx's error as their outcome, when ctx
// ended first.
func (s *Store) lead(ctx context.Context, b *batch, own []*item) {
	growStack()
	s.waitWindow(ctx, b)

	s.wmu.Lock()
	defer s.wmu.Unlock()
	items := s.seal(ctx, b, own)
	s.writeBatch(ctx, b, items)
}

// writeBatch commits items and publishes their outcomes by closing b.done.
func (s *Store) writeBatch(ctx context.Context, b *batch, items []*item) {
	defer func() {
		// A panic must not strand the followers, who wait on b.done even
		// after their ctx ends: fail their items, then keep panicking.
		if r := recover(); r != nil {
			for _, it := range items {
				it.out = outcome{err: fmt.Errorf("append to %s: batch write panicked: %v", it.msg.ConversationID, r)}
			}
			close(b.done)
			panic(r)
		}
	}()
	if len(items) > 0 {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
		defer cancel()
		s.commit(wctx, items)
	}
	close(b.done)
}

// follow waits for b's outcomes for own. When ctx ends first, own items not yet
// sealed are withdrawn with ctx's error; sealed ones are being written, and their
// outcomes must reach the caller.
func (s *Store) follow(ctx context.Context, b *batch, own []*item) {
	select {
	case <-b.done:
		return
	case <-ctx.Done():
	}
	sealed := false
	s.bmu.Lock()
	for _, it := range own {
		if it.state == stateQueued {
			it.state = stateWithdrawn
			it.out = withdrawnOutcome(ctx, it)
		} else {
			sealed = true
		}
	}
	s.bmu.Unlock()
	if sealed {
		<-b.done
	}
}

// withdrawnOutcome is the outcome of an item its caller gave up on before it was
// sealed: it was never written.
func withdrawnOutcome(ctx context.Context, it *item) outcome {
	return outcome{err: fmt.Errorf("append to %s: %w", it.msg.ConversationID, ctx.Err())}
}

// seal closes b to joiners and claims its live items for writing. It
// withdraws the leader's own items when the leader's ctx has ended.
func (s *Store) seal(ctx context.Context, b *batch, own []*item) (live []*item) {
	s.bmu.Lock()
	defer s.bmu.Unlock()
	if s.open == b {
		s.open = nil
	}
	if ctx.Err() != nil {
		for _, it := range own {
			if it.state == stateQueued {
				it.state = stateWithdrawn
				it.out = withdrawnOutcome(ctx, it)
			}
		}
	}
	live = make([]*item, 0, len(b.items))
	for _, it := range b.items {
		if it.state == stateQueued {
			it.state = stateWriting
			live = append(live, it)
		}
	}
	return live
}

// commit writes items in one transaction. If that fails, it writes them one
// by one, so that one bad message fails only its own caller.
func (s *Store) commit(ctx context.Context, items []*item) {
	outs, err := s.writeRetrying(ctx, items, false)
	if err == nil {
		for i, it := range items {
			it.out = outs[i]
		}
		return
	}
	if len(items) == 1 {
		items[0].out = s.failed(ctx, items[0].msg, err)
		return
	}
	s.fallbacks.Add(1)
	s.log.Warn("append batch failed, committing its messages one by one", "messages", len(items), "err", err)
	for i, it := range items {
		outs, err := s.writeRetrying(ctx, items[i:i+1], true)
		if err != nil {
			it.out = s.failed(ctx, it.msg, err)
			continue
		}
		it.out = outs[0]
	}
}

// failed turns the error of a single-message write into its outcome.
func (s *Store) failed(ctx context.Context, m Message, err error) outcome {
	if isUniqueViolation(err) && m.ClientMsgID != "" {
		// The unique index is the backstop against a concurrent writer
		// (another process, or another Store on the same file) that inserted
		// the same (sender, client id) after our lookup: the row is now
		// committed, so return it as the duplicate it is.
		var row messageRow
		lerr := s.rdb.WithContext(ctx).
			Where("sender_id = ? AND client_msg_id = ?", m.SenderID, m.ClientMsgID).
			Take(&row).Error
		if lerr == nil {
			return outcome{msg: row.toMessage(), dup: true}
		}
	}
	return outcome{err: fmt.Errorf("append to %s: %w", m.ConversationID, err)}
}

// writeRetrying writes items, again after a lock conflict; alone says they are one
// message retried on its own after its batch failed.
//
// A batch is written without first looking its client message ids up unless a
// lookup found one stored within the last recheckHold. Resends are rare, and the
// INSERT probes uk_messages_sender_client_msg for every message anyway, so the
// lookup was a second probe of the same index per message: 15–17% of the SQLite
// writer's time. A batch written unchecked that holds a stored id fails on that
// index, rolls back with its seqs, and is written again with the lookup, which
// turns the stored message into the duplicate's answer. For recheckHold after that
// every batch looks first: when clients reconnect they resend what was not acked,
// and without the hold a batch would be written twice every other time. A message
// written alone is always checked.
func (s *Store) writeRetrying(ctx context.Context, items []*item, alone bool) ([]outcome, error) {
	check := alone || s.now().Before(s.checkKeysUntil)
	for attempt := 1; ; {
		outs, found, err := s.write(ctx, items, alone, check)
		if err == nil {
			if found {
				s.checkKeysUntil = s.now().Add(recheckHold)
			}
			return outs, nil
		}
		if !check && isUniqueViolation(err) && ctx.Err() == nil {
			check = true // not a lock conflict: no attempt spent
			continue
		}
		// No backoff: a deadlock victim retries at once, the winner already
		// holds what it needs; SQLite's busy_timeout has already waited.
		if attempt == maxAttempts || !isRetryable(err) || ctx.Err() != nil {
			return outs, err
		}
		attempt++
	}
}

type clientKey struct {
	sender int64
	id     string
}

// write runs one transaction for items and returns their outcomes; on error
// nothing was committed and no outcome is valid. check looks the items' client
// message ids up first; found says the lookup found one stored. Unchecked, an item
// whose id is stored fails the whole transaction with a unique violation.
func (s *Store) write(ctx context.Context, items []*item, alone, check bool) (outs []outcome, found bool, err error) {
	start := time.Now()
	outs = make([]outcome, len(items))
	alias := map[int]int{} // item → earlier item of the same batch with the same client key
	var inserted int
	err = s.wdb.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		clear(outs)
		clear(alias)

		// 1. De-duplicate within the batch, and against stored messages when
		// checked (writeRetrying says when).
		var stored map[clientKey]messageRow
		if check {
			var err error
			if stored, err = s.lookupClientKeys(tx, items); err != nil {
				return err
			}
		}
		found = len(stored) > 0
		first := map[clientKey]int{}
		byConv := map[string][]int{} // items to insert, in arrival order
		for i, it := range items {
			if it.msg.ClientMsgID != "" {
				k := clientKey{it.msg.SenderID, it.msg.ClientMsgID}
				if row, ok := stored[k]; ok {
					outs[i] = outcome{msg: row.toMessage(), dup: true}
					continue
				}
				if j, ok := first[k]; ok {
					alias[i] = j
					continue
				}
				first[k] = i
			}
			byConv[it.msg.ConversationID] = append(byConv[it.msg.ConversationID], i)
		}

		// 2. Allocate seqs: advance each conversation's last_seq by its number
		// of new messages, in this transaction, so that a failed insert rolls
		// the allocation back with it. One UPDATE for every conversation of the
		// batch (a statement per conversation made a batch of 200 1:1 sends
		// cost 200 round trips); InnoDB locks the rows in primary-key order, so
		// batches of several processes cannot deadlock on each other.
		now := s.now().UnixMilli()
		msgIDs := make([]int64, len(items))
		convIDs := slices.Sorted(maps.Keys(byConv))
		if len(convIDs) == 0 {
			return nil
		}
		for _, convID := range convIDs {
			for _, i := range byConv[convID] {
				msgIDs[i] = s.ids.Generate().Int64()
			}
		}
		convs, err := s.advanceConversations(tx, convIDs, byConv, items, msgIDs, now)
		if err != nil {
			return err
		}
		found := make(map[string]bool, len(convs))
		for _, c := range convs {
			found[c.ID] = true
		}
		for _, convID := range convIDs {
			if !found[convID] {
				for _, i := range byConv[convID] {
					outs[i] = outcome{err: fmt.Errorf("append to %s: %w", convID, ErrNotFound)}
				}
			}
		}
		if len(convs) == 0 {
			return nil
		}

		// 3. One multi-row INSERT for the whole batch.
		rows := make([]messageRow, 0, len(items))
		readSeq := map[memberKey]int64{}
		for _, c := range convs {
			idx := byConv[c.ID]
			firstSeq := c.LastSeq - int64(len(idx)) + 1
			for n, i := range idx {
				m := items[i].msg
				row := messageRow{
					ID:             msgIDs[i],
					ConversationID: c.ID,
					Seq:            firstSeq + int64(n),
					SenderID:       m.SenderID,
					SenderName:     m.SenderName,
					Type:           m.Type,
					Content:        m.Content,
					CreatedAtMS:    now,
				}
				if m.ClientMsgID != "" {
					row.ClientMsgID = &m.ClientMsgID
				}
				rows = append(rows, row)
				outs[i] = outcome{msg: row.toMessage()}
				k := memberKey{c.ID, m.SenderID}
				readSeq[k] = max(readSeq[k], row.Seq)
			}
		}
		if err := s.insertMessages(tx, rows); err != nil {
			return err
		}

		// 4. The sender has read their own messages. World membership is
		// implicit, so its rows are created here. Elsewhere the row is the
		// membership and only membership changes create it: a message that
		// raced with its sender's removal must not make them a member again.
		var worldRows []memberRow
		var others []memberKey
		for _, k := range slices.SortedFunc(maps.Keys(readSeq), compareMemberKeys) {
			if k.conv != WorldID {
				others = append(others, k)
				continue
			}
			worldRows = append(worldRows, memberRow{
				ConversationID: k.conv, UserID: k.user, Role: RoleMember,
				LastReadSeq: readSeq[k], JoinedAtMS: now,
			})
		}
		if len(worldRows) > 0 {
			if err := s.upsertReadSeqs(tx, worldRows); err != nil {
				return fmt.Errorf("advance senders' read seq in world: %w", err)
			}
		}
		if err := s.advanceReadSeqs(tx, others, readSeq); err != nil {
			return fmt.Errorf("advance senders' read seq: %w", err)
		}

		if s.hooks.beforeCommit != nil {
			ms := make([]Message, len(rows))
			for i, r := range rows {
				ms[i] = r.toMessage()
			}
			if err := s.hooks.beforeCommit(ms); err != nil {
				return err
			}
		}
		inserted = len(rows)
		return nil
	})
	if err != nil {
		s.observe(Commit{Appends: len(items), Duration: time.Since(start), Err: err, Alone: alone,
			Checked: check, Recheck: !check && isUniqueViolation(err)})
		return nil, false, err
	}
	s.observe(Commit{Appends: len(items), Inserted: inserted, Duration: time.Since(start), Alone: alone, Checked: check})
	for i, j := range alias {
		o := outs[j]
		o.dup = o.err == nil
		outs[i] = o
	}
	if inserted > 0 {
		s.batches.Add(1)
		s.messages.Add(uint64(inserted))
		for {
			cur := s.largest.Load()
			if uint64(inserted) <= cur || s.largest.CompareAndSwap(cur, uint64(inserted)) {
				break
			}
		}
	}
	return outs, found, nil
}

// advanceConversations moves every conversation of the batch past its new messages
// and returns the id and new last_seq of those that exist.
func (s *Store) advanceConversations(tx *gorm.DB, convIDs []string, byConv map[string][]int, items []*item, msgIDs []int64, now int64) ([]conversationRow, error) {
	if s.driver == DriverSQLite {
		return sqliteAdvanceConversations(s.sqlite, tx, convIDs, byConv, items, msgIDs, now)
	}
	if err := advanceConversations(tx, convIDs, byConv, items, msgIDs, now); err != nil {
		return nil, err
	}
	var convs []conversationRow
	if err := tx.Select("id", "last_seq").Where("id IN ?", convIDs).Find(&convs).Error; err != nil {
		return nil, fmt.Errorf("read back last_seq: %w", err)
	}
	return convs, nil
}

// insertMessages inserts the batch's rows in one statement.
func (s *Store) insertMessages(tx *gorm.DB, rows []messageRow) error {
	if s.driver == DriverSQLite {
		return sqliteInsertMessages(s.sqlite, tx, rows)
	}
	if err := tx.Create(&rows).Error; err != nil {
		return fmt.Errorf("insert %d messages: %w", len(rows), err)
	}
	return nil
}

// upsertReadSeqs creates member rows or moves their read pointers forward only.
func (s *Store) upsertReadSeqs(tx *gorm.DB, rows []memberRow) error {
	if s.driver == DriverSQLite {
		return sqliteUpsertReadSeqs(s.sqlite, tx, rows)
	}
	return tx.Clauses(s.readSeqUpsert()).Create(&rows).Error
}

// advanceReadSeqs moves existing read pointers forward to seq[k], in one
// statement; keys without a member row are left alone.
func (s *Store) advanceReadSeqs(tx *gorm.DB, keys []memberKey, seq map[memberKey]int64) error {
	if len(keys) == 0 {
		return nil
	}
	if s.driver == DriverSQLite {
		return sqliteAdvanceReadSeqs(s.sqlite, tx, keys, seq)
	}
	var b strings.Builder
	args := make([]any, 0, 3*len(keys)+1)
	pairs := make([][]any, len(keys))
	b.WriteString("UPDATE conversation_members SET last_read_seq = ")
	b.WriteString(s.greatest())
	b.WriteString("(last_read_seq, CASE")
	for i, k := range keys {
		b.WriteString(" WHEN conversation_id = ? AND user_id = ? THEN ?")
		args = append(args, k.conv, k.user, seq[k])
		pairs[i] = []any{k.conv, k.user}
	}
	b.WriteString(" ELSE 0 END) WHERE (conversation_id, user_id) IN ?")
	args = append(args, pairs)
	return tx.Exec(b.String(), args...).Error
}

// advanceConversations moves every conversation of a batch past its new messages in
// one statement: last_seq by their number, the last-message fields to the last one.
// A conversation that does not exist matches no row.
func advanceConversations(tx *gorm.DB, convIDs []string, byConv map[string][]int, items []*item, msgIDs []int64, now int64) error {
	var b strings.Builder
	args := make([]any, 0, 6*len(convIDs)+2)
	// column writes "<set>CASE id WHEN <conv> THEN <value> ... END"; value gets the
	// conversation and the index of its last item in the batch.
	column := func(set string, value func(convID string, last int) any) {
		b.WriteString(set)
		b.WriteString("CASE id")
		for _, convID := range convIDs {
			idx := byConv[convID]
			b.WriteString(" WHEN ? THEN ?")
			args = append(args, convID, value(convID, idx[len(idx)-1]))
		}
		b.WriteString(" END")
	}
	b.WriteString("UPDATE conversations SET ")
	column("last_seq = last_seq + ", func(convID string, _ int) any { return len(byConv[convID]) })
	column(", last_message_id = ", func(_ string, last int) any { return msgIDs[last] })
	column(", last_message_preview = ", func(_ string, last int) any {
		return truncateRunes(items[last].msg.Content, maxPreviewLen)
	})
	b.WriteString(", last_message_at_ms = ? WHERE id IN ?")
	args = append(args, now, convIDs)
	if err := tx.Exec(b.String(), args...).Error; err != nil {
		return fmt.Errorf("advance last_seq of %d conversations: %w", len(convIDs), err)
	}
	return nil
}

type memberKey struct {
	conv string
	user int64
}

func compareMemberKeys(a, b memberKey) int {
	if c := cmp.Compare(a.conv, b.conv); c != 0 {
		return c
	}
	return cmp.Compare(a.user, b.user)
}

// lookupClientKeys loads the stored messages whose (sender_id, client_msg_id)
// matches an item's.
func (s *Store) lookupClientKeys(tx *gorm.DB, items []*item) (map[clientKey]messageRow, error) {
	var pairs [][]any
	for _, it := range items {
		if it.msg.ClientMsgID != "" {
			pairs = append(pairs, []any{it.msg.SenderID, it.msg.ClientMsgID})
		}
	}
	if len(pairs) == 0 {
		return nil, nil
	}
	var rows []messageRow
	var err error
	if s.driver == DriverSQLite {
		rows, err = sqliteFindClientKeys(s.sqlite, tx, pairs)
	} else {
		// A row-value IN is an index range scan on uk_messages_sender_client_msg,
		// unlike sender_id IN (…) AND client_msg_id IN (…), which matches the
		// cross product when clients reuse ids such as "1".
		err = tx.Where("(sender_id, client_msg_id) IN ?", pairs).Find(&rows).Error
	}
	if err != nil {
		return nil, fmt.Errorf("look up client message ids: %w", err)
	}
	stored := make(map[clientKey]messageRow, len(rows))
	for _, r := range rows {
		if r.ClientMsgID != nil {
			stored[clientKey{r.SenderID, *r.ClientMsgID}] = r
		}
	}
	return stored, nil
}

func validateMessage(m Message) error {
	if m.ConversationID == "" {
		return fmt.Errorf("%w: empty conversation id", ErrInvalid)
	}
	if err := checkText("conversation id", m.ConversationID, maxIDLen); err != nil {
		return err
	}
	if err := checkText("client message id", m.ClientMsgID, maxIDLen); err != nil {
		return err
	}
	if err := checkText("sender name", m.SenderName, maxNameLen); err != nil {
		return err
	}
	if len(m.Content) > maxContentSize {
		return fmt.Errorf("%w: content has %d bytes, max %d", ErrInvalid, len(m.Content), maxContentSize)
	}
	return checkText("content", m.Content, maxContentSize)
}

// truncateRunes cuts s to at most n characters without splitting one.
func truncateRunes(s string, n int) string {
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos]
		}
		i++
	}
	return s
}
