package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Friends, 1:1 conversations, groups and their members.
//
// Every method that changes more than one row does it in one transaction
// (writeTx). Conversation rows are locked before member rows, as Append does,
// so the two never deadlock on each other; member counts are only changed
// while the conversation row is locked, so they stay exact.

// maxGroupNameLen is the size of conversations.name (characters).
const maxGroupNameLen = 128

// maxMembersPage caps one Members page.
const maxMembersPage = 1000

// writeTx runs fn in one write transaction and retries it after a lock
// conflict, like the append path. fn must reset whatever it records outside
// the transaction, since it may run more than once.
//
// On MySQL the transaction is READ COMMITTED: an INSERT that waited for
// another transaction's row and then found it must be able to read that row
// in the same transaction, which REPEATABLE READ's snapshot would hide.
// (SQLite has one writer at a time, so every transaction sees the latest
// commit anyway.)
func (s *Store) writeTx(ctx context.Context, fn func(tx *gorm.DB) error) error {
	var opts []*sql.TxOptions
	if s.driver == DriverMySQL {
		opts = append(opts, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	}
	for attempt := 1; ; attempt++ {
		err := s.wdb.WithContext(ctx).Transaction(fn, opts...)
		if err == nil || attempt == maxAttempts || !isRetryable(err) || ctx.Err() != nil {
			return err
		}
	}
}

// existingUsers returns which of ids are users, reading through tx.
func existingUsers(tx *gorm.DB, ids []int64) (map[int64]bool, error) {
	found := make(map[int64]bool, len(ids))
	for chunk := range slices.Chunk(ids, usersChunk) {
		var got []int64
		if err := tx.Model(&userRow{}).Where("id IN ?", chunk).Pluck("id", &got).Error; err != nil {
			return nil, fmt.Errorf("look up %d users: %w", len(chunk), err)
		}
		for _, id := range got {
			found[id] = true
		}
	}
	return found, nil
}

// requireUsers fails with ErrNotFound unless every id is a user.
func requireUsers(tx *gorm.DB, ids ...int64) error {
	found, err := existingUsers(tx, ids)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if !found[id] {
			return fmt.Errorf("user %d: %w", id, ErrNotFound)
		}
	}
	return nil
}

// loadConversation reads a conversation row inside tx. With lock it takes the
// row's write lock (MySQL: SELECT … FOR UPDATE; SQLite's writer already holds
// the database lock, and its dialect drops the clause).
func loadConversation(tx *gorm.DB, id string, lock bool) (conversationRow, error) {
	q := tx
	if lock {
		q = q.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate})
	}
	var row conversationRow
	err := q.Where("id = ?", id).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return row, fmt.Errorf("conversation %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return row, fmt.Errorf("load conversation %s: %w", id, err)
	}
	return row, nil
}

func validSingle(convID string, a, b int64) error {
	if err := checkText("conversation id", convID, maxIDLen); err != nil {
		return err
	}
	if !strings.HasPrefix(convID, TypeSingle+"_") {
		return fmt.Errorf("%w: %q is not a single conversation id", ErrInvalid, convID)
	}
	if a == b {
		return fmt.Errorf("%w: a single conversation needs two different users", ErrInvalid)
	}
	return nil
}

// ensureSingle creates the single conversation convID of a and b, or checks
// the existing one, and ensures both member rows. Both users must exist.
func (s *Store) ensureSingle(tx *gorm.DB, convID string, a, b int64) (created bool, err error) {
	now := s.now().UnixMilli()
	conv := conversationRow{ID: convID, Type: TypeSingle, MemberCount: 2}
	// A second caller waits here for the first one's row lock, then does
	// nothing: exactly one of them creates the row.
	res := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&conv)
	if res.Error != nil {
		return false, fmt.Errorf("insert conversation %s: %w", convID, res.Error)
	}
	created = res.RowsAffected == 1
	if !created {
		existing, err := loadConversation(tx, convID, false)
		if err != nil {
			return false, err
		}
		if existing.Type != TypeSingle {
			return false, fmt.Errorf("%w: conversation %s is a %s conversation", ErrInvalid, convID, existing.Type)
		}
		var strangers int64
		err = tx.Model(&memberRow{}).Where("conversation_id = ? AND user_id NOT IN ?", convID, []int64{a, b}).Count(&strangers).Error
		if err != nil {
			return false, fmt.Errorf("check members of %s: %w", convID, err)
		}
		if strangers > 0 {
			return false, fmt.Errorf("%w: conversation %s belongs to other users", ErrInvalid, convID)
		}
	}
	members := []memberRow{
		{ConversationID: convID, UserID: min(a, b), Role: RoleMember, JoinedAtMS: now},
		{ConversationID: convID, UserID: max(a, b), Role: RoleMember, JoinedAtMS: now},
	}
	// DO NOTHING keeps an existing row's read pointer.
	if err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&members).Error; err != nil {
		return false, fmt.Errorf("insert members of %s: %w", convID, err)
	}
	return created, nil
}

// AddFriend makes userID and friendID friends both ways and ensures their
// single conversation convID exists with both as members (it may exist
// already, from an earlier chat), all in one transaction. It returns that
// conversation. Befriending oneself is ErrInvalid, an unknown user
// ErrNotFound, an existing friendship ErrAlreadyFriends: of two concurrent
// calls for the same pair, in either direction, exactly one succeeds.
func (s *Store) AddFriend(ctx context.Context, userID, friendID int64, convID string) (Conversation, error) {
	done, err := s.enter()
	if err != nil {
		return Conversation{}, err
	}
	defer done()
	if err := validSingle(convID, userID, friendID); err != nil {
		return Conversation{}, fmt.Errorf("add friend %d of %d: %w", friendID, userID, err)
	}
	var conv conversationRow
	err = s.writeTx(ctx, func(tx *gorm.DB) error {
		if err := requireUsers(tx, userID, friendID); err != nil {
			return err
		}
		now := s.now().UnixMilli()
		lo, hi := min(userID, friendID), max(userID, friendID)
		// Both directions in one statement, always in the same order, so a
		// concurrent AddFriend of the same pair waits on the first row and
		// then fails on it, instead of deadlocking on the second.
		rows := []friendshipRow{
			{UserID: lo, FriendID: hi, CreatedAtMS: now},
			{UserID: hi, FriendID: lo, CreatedAtMS: now},
		}
		if err := tx.Create(&rows).Error; err != nil {
			if isUniqueViolation(err) {
				return ErrAlreadyFriends
			}
			return fmt.Errorf("insert friendship: %w", err)
		}
		if _, err := s.ensureSingle(tx, convID, userID, friendID); err != nil {
			return err
		}
		conv, err = loadConversation(tx, convID, false)
		return err
	})
	if err != nil {
		return Conversation{}, fmt.Errorf("add friend %d of %d: %w", friendID, userID, err)
	}
	return conv.toConversation(), nil
}

// Friends returns userID's friends ordered by username (byte order).
func (s *Store) Friends(ctx context.Context, userID int64) ([]User, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	var rows []userRow
	err = s.rdb.WithContext(ctx).
		Table("friendships AS f").
		Select("u.*").
		Joins("JOIN users AS u ON u.id = f.friend_id").
		Where("f.user_id = ?", userID).
		Order("u.username, u.id").
		Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("load friends of %d: %w", userID, err)
	}
	users := make([]User, len(rows))
	for i, r := range rows {
		users[i] = r.toUser()
	}
	return users, nil
}

// EnsureSingle ensures the single conversation convID of users a and b exists
// with both as members and returns it; created reports whether this call
// created it. Both users must exist (ErrNotFound). Of concurrent calls for
// the same pair exactly one reports created; all return the same row.
func (s *Store) EnsureSingle(ctx context.Context, convID string, a, b int64) (conv Conversation, created bool, err error) {
	done, err := s.enter()
	if err != nil {
		return Conversation{}, false, err
	}
	defer done()
	if err := validSingle(convID, a, b); err != nil {
		return Conversation{}, false, fmt.Errorf("ensure %s: %w", convID, err)
	}
	var row conversationRow
	err = s.writeTx(ctx, func(tx *gorm.DB) error {
		if err := requireUsers(tx, a, b); err != nil {
			return err
		}
		var err error
		if created, err = s.ensureSingle(tx, convID, a, b); err != nil {
			return err
		}
		row, err = loadConversation(tx, convID, false)
		return err
	})
	if err != nil {
		return Conversation{}, false, fmt.Errorf("ensure %s: %w", convID, err)
	}
	return row.toConversation(), created, nil
}

// CreateGroup creates the group "group_<snowflake>" named name, owned by
// ownerID (who must exist), with the existing users among memberIDs as
// members. Unknown ids, duplicates and the owner repeated are skipped.
func (s *Store) CreateGroup(ctx context.Context, name string, ownerID int64, memberIDs []int64) (Conversation, error) {
	done, err := s.enter()
	if err != nil {
		return Conversation{}, err
	}
	defer done()
	if err := checkText("group name", name, maxGroupNameLen); err != nil {
		return Conversation{}, fmt.Errorf("create group: %w", err)
	}
	if strings.TrimSpace(name) == "" {
		return Conversation{}, fmt.Errorf("create group: %w: empty name", ErrInvalid)
	}
	id := TypeGroup + "_" + strconv.FormatInt(s.ids.Generate().Int64(), 10)
	var conv conversationRow
	err = s.writeTx(ctx, func(tx *gorm.DB) error {
		if err := requireUsers(tx, ownerID); err != nil {
			return err
		}
		others, err := newUsers(tx, "", memberIDs, ownerID)
		if err != nil {
			return err
		}
		conv = conversationRow{ID: id, Type: TypeGroup, Name: name, OwnerID: ownerID, MemberCount: int32(1 + len(others))}
		if err := tx.Create(&conv).Error; err != nil {
			return fmt.Errorf("insert conversation: %w", err)
		}
		now := s.now().UnixMilli()
		rows := make([]memberRow, 0, 1+len(others))
		rows = append(rows, memberRow{ConversationID: id, UserID: ownerID, Role: RoleOwner, JoinedAtMS: now})
		for _, uid := range others {
			rows = append(rows, memberRow{ConversationID: id, UserID: uid, Role: RoleMember, JoinedAtMS: now})
		}
		if err := tx.CreateInBatches(&rows, usersChunk).Error; err != nil {
			return fmt.Errorf("insert %d members: %w", len(rows), err)
		}
		return nil
	})
	if err != nil {
		return Conversation{}, fmt.Errorf("create group %s: %w", id, err)
	}
	return conv.toConversation(), nil
}

// newUsers returns, in the order given and without duplicates, the ids that
// are users, are not skip, and (when convID is set) have no member row in
// convID yet.
func newUsers(tx *gorm.DB, convID string, ids []int64, skip int64) ([]int64, error) {
	candidates := make([]int64, 0, len(ids))
	seen := make(map[int64]bool, len(ids))
	for _, id := range ids {
		if id != skip && !seen[id] {
			seen[id] = true
			candidates = append(candidates, id)
		}
	}
	if len(candidates) == 0 {
		return nil, nil
	}
	exists, err := existingUsers(tx, candidates)
	if err != nil {
		return nil, err
	}
	member := map[int64]bool{}
	if convID != "" {
		for chunk := range slices.Chunk(candidates, usersChunk) {
			var got []int64
			err := tx.Model(&memberRow{}).Where("conversation_id = ? AND user_id IN ?", convID, chunk).Pluck("user_id", &got).Error
			if err != nil {
				return nil, fmt.Errorf("look up members of %s: %w", convID, err)
			}
			for _, id := range got {
				member[id] = true
			}
		}
	}
	out := candidates[:0]
	for _, id := range candidates {
		if exists[id] && !member[id] {
			out = append(out, id)
		}
	}
	return out, nil
}

// memberOut is a member row, or for world a user with their optional row.
type memberOut struct {
	UserID      int64  `gorm:"column:user_id"`
	Role        string `gorm:"column:role"`
	LastReadSeq int64  `gorm:"column:last_read_seq"`
	JoinedAtMS  int64  `gorm:"column:joined_at_ms"`
}

func (r memberOut) toMember() Member {
	return Member{UserID: r.UserID, Role: r.Role, ReadSeq: r.LastReadSeq, JoinedAt: fromMS(r.JoinedAtMS)}
}

// worldMembers selects every user as a member of world, with the read pointer
// of their lazily created row when there is one, and joined at sign-up
// otherwise.
func worldMembers(db *gorm.DB) *gorm.DB {
	return db.Table("users AS u").
		Select("u.id AS user_id, ? AS role, COALESCE(m.last_read_seq, 0) AS last_read_seq, COALESCE(m.joined_at_ms, u.created_at_ms) AS joined_at_ms", RoleMember).
		Joins("LEFT JOIN conversation_members AS m ON m.conversation_id = ? AND m.user_id = u.id", WorldID)
}

// Member returns userID's membership of convID; found is false for a
// non-member or a missing conversation. Every existing user is a member of
// world (role member; the read pointer if they have one).
func (s *Store) Member(ctx context.Context, convID string, userID int64) (Member, bool, error) {
	done, err := s.enter()
	if err != nil {
		return Member{}, false, err
	}
	defer done()
	q := s.rdb.WithContext(ctx)
	if convID == WorldID {
		q = worldMembers(q).Where("u.id = ?", userID)
	} else {
		q = q.Model(&memberRow{}).Where("conversation_id = ? AND user_id = ?", convID, userID)
	}
	var rows []memberOut
	if err := q.Limit(1).Scan(&rows).Error; err != nil {
		return Member{}, false, fmt.Errorf("load member %d of %s: %w", userID, convID, err)
	}
	if len(rows) == 0 {
		return Member{}, false, nil
	}
	return rows[0].toMember(), true, nil
}

// Members returns up to limit members of convID with user id > afterUserID,
// ordered by user id (page on from the last id returned). limit must be
// positive and is capped at 1000. World lists every user; a missing
// conversation has no members.
func (s *Store) Members(ctx context.Context, convID string, afterUserID int64, limit int) ([]Member, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	if limit <= 0 {
		return nil, fmt.Errorf("members of %s: %w: limit %d", convID, ErrInvalid, limit)
	}
	limit = min(limit, maxMembersPage)
	q := s.rdb.WithContext(ctx)
	if convID == WorldID {
		q = worldMembers(q).Where("u.id > ?", afterUserID).Order("u.id")
	} else {
		q = q.Model(&memberRow{}).Where("conversation_id = ? AND user_id > ?", convID, afterUserID).Order("user_id")
	}
	var rows []memberOut
	if err := q.Limit(limit).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("load members of %s after %d: %w", convID, afterUserID, err)
	}
	out := make([]Member, len(rows))
	for i, r := range rows {
		out[i] = r.toMember()
	}
	return out, nil
}

// lockGroup loads and locks a group's row; other types are ErrInvalid.
func lockGroup(tx *gorm.DB, convID string) (conversationRow, error) {
	row, err := loadConversation(tx, convID, true)
	if err != nil {
		return row, err
	}
	if row.Type != TypeGroup {
		return row, fmt.Errorf("%w: %s is a %s conversation, not a group", ErrInvalid, convID, row.Type)
	}
	return row, nil
}

// AddMembers adds the existing users among userIDs to the group convID as
// members; unknown ids, current members and duplicates are skipped. It
// returns the ids added, in the order given, and the group after the change.
// Conversations that are not groups are ErrInvalid, a missing one ErrNotFound.
func (s *Store) AddMembers(ctx context.Context, convID string, userIDs []int64) (added []int64, conv Conversation, err error) {
	done, err := s.enter()
	if err != nil {
		return nil, Conversation{}, err
	}
	defer done()
	var row conversationRow
	err = s.writeTx(ctx, func(tx *gorm.DB) error {
		added = nil
		var err error
		if row, err = lockGroup(tx, convID); err != nil {
			return err
		}
		if added, err = newUsers(tx, convID, userIDs, 0); err != nil {
			return err
		}
		if len(added) == 0 {
			return nil
		}
		now := s.now().UnixMilli()
		rows := make([]memberRow, len(added))
		for i, uid := range added {
			rows[i] = memberRow{ConversationID: convID, UserID: uid, Role: RoleMember, JoinedAtMS: now}
		}
		if err := tx.CreateInBatches(&rows, usersChunk).Error; err != nil {
			return fmt.Errorf("insert %d members: %w", len(rows), err)
		}
		if err := tx.Exec("UPDATE conversations SET member_count = member_count + ? WHERE id = ?", len(added), convID).Error; err != nil {
			return fmt.Errorf("update member count: %w", err)
		}
		row, err = loadConversation(tx, convID, false)
		return err
	})
	if err != nil {
		return nil, Conversation{}, fmt.Errorf("add members to %s: %w", convID, err)
	}
	return added, row.toConversation(), nil
}

// RemoveMember removes userID from the group convID; removed is false when
// they were not a member. When the owner leaves, the remaining member who
// joined first (ties: lowest user id) becomes owner; a group left empty has
// owner 0. It returns the group after the change. Conversations that are not
// groups are ErrInvalid, a missing one ErrNotFound.
func (s *Store) RemoveMember(ctx context.Context, convID string, userID int64) (removed bool, conv Conversation, err error) {
	done, err := s.enter()
	if err != nil {
		return false, Conversation{}, err
	}
	defer done()
	var row conversationRow
	err = s.writeTx(ctx, func(tx *gorm.DB) error {
		removed = false
		var err error
		if row, err = lockGroup(tx, convID); err != nil {
			return err
		}
		var roles []string
		if err := tx.Model(&memberRow{}).Where("conversation_id = ? AND user_id = ?", convID, userID).Limit(1).Pluck("role", &roles).Error; err != nil {
			return fmt.Errorf("load member %d: %w", userID, err)
		}
		if len(roles) == 0 {
			return nil
		}
		if err := tx.Where("conversation_id = ? AND user_id = ?", convID, userID).Delete(&memberRow{}).Error; err != nil {
			return fmt.Errorf("delete member %d: %w", userID, err)
		}
		removed = true
		if err := tx.Exec("UPDATE conversations SET member_count = member_count - 1 WHERE id = ? AND member_count > 0", convID).Error; err != nil {
			return fmt.Errorf("update member count: %w", err)
		}
		if row.OwnerID == userID || roles[0] == RoleOwner {
			if err := passOwnership(tx, convID); err != nil {
				return err
			}
		}
		row, err = loadConversation(tx, convID, false)
		return err
	})
	if err != nil {
		return false, Conversation{}, fmt.Errorf("remove member %d from %s: %w", userID, convID, err)
	}
	return removed, row.toConversation(), nil
}

// passOwnership makes the longest-standing member of convID its owner, or
// sets owner 0 when nobody is left.
func passOwnership(tx *gorm.DB, convID string) error {
	var next []int64
	err := tx.Model(&memberRow{}).Where("conversation_id = ?", convID).
		Order("joined_at_ms, user_id").Limit(1).Pluck("user_id", &next).Error
	if err != nil {
		return fmt.Errorf("find next owner: %w", err)
	}
	var owner int64
	if len(next) == 1 {
		owner = next[0]
		if err := tx.Model(&memberRow{}).Where("conversation_id = ? AND user_id = ?", convID, owner).Update("role", RoleOwner).Error; err != nil {
			return fmt.Errorf("promote %d: %w", owner, err)
		}
	}
	if err := tx.Model(&conversationRow{}).Where("id = ?", convID).Update("owner_id", owner).Error; err != nil {
		return fmt.Errorf("set owner %d: %w", owner, err)
	}
	return nil
}

// PeersMany is Peers for many users in one query (a connect storm announces
// thousands of users a second): peers[u] lists u's peers, each once, ascending;
// users without peers have no entry.
func (s *Store) PeersMany(ctx context.Context, userIDs []int64) (map[int64][]int64, error) {
	if len(userIDs) == 0 {
		return map[int64][]int64{}, nil
	}
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	var rows []struct {
		Owner int64
		ID    int64
	}
	in, ids, err := s.inIDs(userIDs)
	if err != nil {
		return nil, err
	}
	err = s.rdb.WithContext(ctx).Raw(`
SELECT user_id AS owner, friend_id AS id FROM friendships WHERE user_id IN `+in+`
UNION
SELECT m.user_id AS owner, o.user_id AS id
FROM conversation_members AS m
JOIN conversations AS c ON c.id = m.conversation_id AND c.type = ?
JOIN conversation_members AS o ON o.conversation_id = m.conversation_id AND o.user_id <> m.user_id
WHERE m.user_id IN `+in+`
ORDER BY owner, id`, ids, TypeSingle, ids).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("load peers of %d users: %w", len(userIDs), err)
	}
	peers := make(map[int64][]int64)
	for _, r := range rows {
		peers[r.Owner] = append(peers[r.Owner], r.ID)
	}
	return peers, nil
}

// Peers returns who sees userID's presence: their friends and the other
// members of their single conversations, each once, ascending.
func (s *Store) Peers(ctx context.Context, userID int64) ([]int64, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	var ids []int64
	err = s.rdb.WithContext(ctx).Raw(`
SELECT friend_id AS id FROM friendships WHERE user_id = ?
UNION
SELECT o.user_id AS id
FROM conversation_members AS m
JOIN conversations AS c ON c.id = m.conversation_id AND c.type = ?
JOIN conversation_members AS o ON o.conversation_id = m.conversation_id AND o.user_id <> m.user_id
WHERE m.user_id = ?
ORDER BY id`, userID, TypeSingle, userID).Scan(&ids).Error
	if err != nil {
		return nil, fmt.Errorf("load peers of %d: %w", userID, err)
	}
	return ids, nil
}
