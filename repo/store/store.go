// Package store is repo's durable store: users, conversations, members and
// messages in MySQL or SQLite through gorm. It owns the schema, allocates the
// gap-free per-conversation message sequence and de-duplicates retried sends
// (design.md §2 step 3, §4). Concurrent appends are group-committed: one
// transaction and one multi-row INSERT per batch.
package store

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/bwmarrin/snowflake"
	"github.com/go-sql-driver/mysql"
	gormmysql "gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"
	msqlite "modernc.org/sqlite"
)

var (
	// ErrNotFound means the user, conversation or message does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrUsernameTaken is returned by CreateUser for a username already in use.
	ErrUsernameTaken = errors.New("store: username taken")
	// ErrClosed is returned by every method once Close has been called.
	ErrClosed = errors.New("store: closed")
	// ErrInvalid marks input the schema cannot hold (too long, not UTF-8, missing
	// ids). It is rejected before it reaches a batch, so it cannot fail others.
	// It also marks requests that make no sense for the target: befriending
	// oneself, adding members to a conversation that is not a group.
	ErrInvalid = errors.New("store: invalid argument")
	// ErrAlreadyFriends is returned by AddFriend when the two users are friends.
	ErrAlreadyFriends = errors.New("store: already friends")
)

// The world conversation exists in every store (Open creates it); membership
// in it is implicit.
const (
	WorldID   = "world"
	TypeWorld = "world"
)

// Conversation types besides world. Membership of these is explicit: a member
// row exists exactly for each member.
const (
	TypeSingle = "single"
	TypeGroup  = "group"
)

// Member roles. World rows, created lazily to hold a read pointer, are
// RoleMember too.
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// slowQuery is the threshold above which a statement is logged.
const slowQuery = 200 * time.Millisecond

// User is a registered or guest account.
type User struct {
	ID           int64
	Username     string
	PasswordHash string
	Avatar       string
	IsGuest      bool
	CreatedAt    time.Time
}

// Message is one stored chat message. ID, Seq and CreatedAt are assigned by
// Append; whatever the caller puts there is ignored.
type Message struct {
	ID             int64
	ConversationID string
	Seq            int64
	SenderID       int64
	SenderName     string
	Type           int8
	Content        string
	ClientMsgID    string
	CreatedAt      time.Time
}

// Conversation is a conversation row. LastSeq is the seq of its newest message;
// unread = LastSeq − the member's read seq.
type Conversation struct {
	ID, Type, Name, Avatar string
	OwnerID                int64
	MemberCount            int32
	LastSeq                int64
	LastMessageID          int64
	LastMessagePreview     string
	LastMessageAt          time.Time
}

// UserConversation is a conversation as one member sees it.
type UserConversation struct {
	Conversation Conversation
	ReadSeq      int64
	// PeerID is the other member of a single conversation, 0 for the rest.
	PeerID int64
}

// Member is one user's membership of a conversation.
type Member struct {
	UserID   int64
	Role     string
	ReadSeq  int64
	JoinedAt time.Time
}

// Commit describes one attempt at writing a batch of appends in a transaction, for
// metrics (design.md §7, "DB batch sizes"): the caller exports them through
// WithCommitObserver, so the store needs no registry.
type Commit struct {
	Appends  int           // appends in the batch (duplicates and missing conversations included)
	Inserted int           // messages inserted; 0 when Err is set
	Duration time.Duration // BEGIN to COMMIT (or the failure)
	Err      error         // nil when the transaction committed
	Alone    bool          // a message retried on its own after its batch failed
	// Checked says the batch looked its client message ids up before the INSERT.
	// A batch written unchecked that meets a stored id fails with Recheck set and
	// is written again, checked: a resend, not a failure.
	Checked bool
	Recheck bool
}

// Option configures Open.
type Option func(*Store)

// WithCommitObserver has fn called after every transaction of the append path,
// on the committing goroutine; fn must be quick and must not call the Store. A nil
// fn observes nothing.
func WithCommitObserver(fn func(Commit)) Option {
	return func(s *Store) {
		if fn != nil {
			s.observe = fn
		}
	}
}

// Stats are cumulative counters of the append path.
type Stats struct {
	Batches      uint64 // transactions that inserted at least one message
	Messages     uint64 // messages inserted
	LargestBatch uint64 // most messages inserted by one transaction
	Fallbacks    uint64 // batches that failed and were retried item by item
}

// Store is safe for concurrent use.
type Store struct {
	cfg    Config
	driver string
	log    *slog.Logger
	ids    *snowflake.Node
	now    func() time.Time

	// wdb runs every write. On SQLite it is a single connection (SQLite has
	// one writer anyway, and it keeps our own writers from contending for the
	// file lock); rdb is a separate query_only pool so reads never queue
	// behind a commit. On MySQL both are the same pool.
	wdb *gorm.DB
	rdb *gorm.DB
	// sqlite holds the group commit's statements prepared on the SQLite writer
	// (append_sqlite.go); nil on MySQL.
	sqlite *sqliteStmts

	// life guards closed; ops counts calls in flight so Close can wait for
	// them. closing is closed by Close to cut batch windows short.
	life    sync.RWMutex
	closed  bool
	ops     sync.WaitGroup
	closing chan struct{}

	// bmu guards open and the state of every queued item (see append.go).
	bmu  sync.Mutex
	open *batch
	// wmu lets one batch write at a time per Store. Its holder is the only
	// writer of messages from this process, so batches never deadlock each
	// other here and the next batch keeps filling while one commits.
	wmu sync.Mutex
	// Until checkKeysUntil (guarded by wmu) batches look their client message ids
	// up before the INSERT (append.go, writeRetrying); a lookup that finds a stored
	// id moves it to recheckHold from then.
	checkKeysUntil time.Time

	batches, messages, largest, fallbacks atomic.Uint64
	observe                               func(Commit) // never nil after Open

	// The SQLite WAL checkpointer (checkpoint.go): checkpointerDone is closed when
	// it has stopped; nil when it never ran (MySQL, or a DSN that sets
	// wal_autocheckpoint). Tests set the period, the restart size and what counts
	// as a short copy (0: a quarter of the restart size, at least 1,024 pages;
	// negative: none).
	checkpointerDone  chan struct{}
	observeCheckpoint func(Checkpoint) // never nil after Open
	checkpointEvery   time.Duration
	walRestartPages   int
	walShortCopy      int

	// alarm ends an idle process's wait for a sub-millisecond batch window on time
	// (window.go); nil where it could not be made, or when every window is longer.
	alarm *alarm

	// hooks lets in-package tests observe and break the append path.
	hooks hooks
}

type hooks struct {
	enqueued     func()                   // after an Append joined a batch
	beforeCommit func(ms []Message) error // inside the tx, after the INSERT
}

// Open connects, migrates the schema (idempotent; safe when several processes
// start at once) and ensures the world conversation exists. On SQLite it starts
// the WAL checkpointer (checkpoint.go), which stops at Close; database/sql runs
// a connection opener per pool until Close.
func Open(ctx context.Context, cfg Config, ids *snowflake.Node, log *slog.Logger, opts ...Option) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if ids == nil {
		return nil, fmt.Errorf("%w: nil snowflake node", ErrInvalid)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	s := &Store{
		cfg:     cfg,
		driver:  cfg.Driver,
		log:     log.With("component", "store"),
		ids:     ids,
		now:     time.Now,
		closing: make(chan struct{}),
		observe: func(Commit) {},

		observeCheckpoint: func(Checkpoint) {},
		checkpointEvery:   checkpointEvery,
		walRestartPages:   walRestartPages,
	}
	for _, o := range opts {
		o(s)
	}
	gcfg := func() *gorm.Config {
		return &gorm.Config{
			Logger:                 slowLogger{log: s.log},
			SkipDefaultTransaction: true, // we open transactions where they are needed
			// Reuse prepared statements: re-parsing the same few statements was 11%
			// of all CPU under send load with SQLite. Bounded (LRU), because IN lists
			// of different lengths are different statements.
			PrepareStmt:        true,
			PrepareStmtMaxSize: 256,
			PrepareStmtTTL:     10 * time.Minute,
			NowFunc:            func() time.Time { return s.now().UTC() },
		}
	}

	var err error
	switch cfg.Driver {
	case DriverSQLite:
		keepSQLiteAllocatorPages()
		wdsn, rdsn, ownCheckpoints, derr := sqliteDSNs(cfg.DSN, walLimitBytes(s.walRestartPages))
		if derr != nil {
			return nil, derr
		}
		if s.wdb, err = gorm.Open(sqliteDialector{dsn: wdsn}, gcfg()); err != nil {
			return nil, fmt.Errorf("open sqlite %s: %w", cfg.DSN, err)
		}
		if err := setPool(s.wdb, 1, 0); err != nil {
			return nil, errors.Join(err, closeDB(s.wdb))
		}
		// Migrate before opening the query_only readers: switching a file
		// to WAL needs a writer.
		if err := migrate(ctx, s.wdb, cfg.Driver); err != nil {
			return nil, errors.Join(err, closeDB(s.wdb))
		}
		wsql, werr := s.wdb.DB()
		if werr != nil {
			return nil, errors.Join(fmt.Errorf("sqlite writer: %w", werr), closeDB(s.wdb))
		}
		if s.sqlite, err = prepareSQLiteStmts(ctx, wsql); err != nil {
			return nil, errors.Join(err, closeDB(s.wdb))
		}
		if s.rdb, err = gorm.Open(sqliteDialector{dsn: rdsn}, gcfg()); err != nil {
			return nil, errors.Join(fmt.Errorf("open sqlite readers %s: %w", cfg.DSN, err), closeDB(s.wdb))
		}
		if err := setPool(s.rdb, cfg.MaxOpenConns, 0); err != nil {
			return nil, errors.Join(err, closeDB(s.wdb), closeDB(s.rdb))
		}
		if ownCheckpoints {
			// The writer's DSN: it may checkpoint (it is not query_only).
			ckdb, err := sql.Open("sqlite", wdsn)
			if err != nil {
				return nil, errors.Join(fmt.Errorf("open sqlite checkpointer %s: %w", cfg.DSN, err), closeDB(s.wdb), closeDB(s.rdb))
			}
			ckdb.SetMaxOpenConns(1)
			c := &checkpointer{s: s, db: ckdb, every: s.checkpointEvery, restartPages: s.walRestartPages, shortCopy: s.walShortCopy}
			if c.shortCopy == 0 {
				c.shortCopy = max(s.walRestartPages/4, 1024)
			}
			s.checkpointerDone = make(chan struct{})
			go c.run(s.checkpointerDone)
		}
	case DriverMySQL:
		dsn, derr := mysqlDSN(cfg.DSN)
		if derr != nil {
			return nil, derr
		}
		if s.wdb, err = gorm.Open(gormmysql.Open(dsn), gcfg()); err != nil {
			return nil, fmt.Errorf("open mysql: %w", err)
		}
		// Idle connections are recycled before a typical wait_timeout kills them.
		if err := setPool(s.wdb, cfg.MaxOpenConns, 5*time.Minute); err != nil {
			return nil, errors.Join(err, closeDB(s.wdb))
		}
		if err := migrate(ctx, s.wdb, cfg.Driver); err != nil {
			return nil, errors.Join(err, closeDB(s.wdb))
		}
		s.rdb = s.wdb
	}
	if cfg.BatchWindow < time.Millisecond {
		// Without it a window only loses precision when the process is idle.
		if s.alarm, err = newAlarm(); err != nil {
			s.log.Warn("batch window alarm unavailable; idle windows end on the runtime's millisecond", "err", err)
		}
	}
	s.log.Info("store opened", "driver", cfg.Driver, "batch_window", cfg.BatchWindow, "max_batch", cfg.MaxBatch)
	return s, nil
}

func setPool(db *gorm.DB, maxOpen int, maxIdleTime time.Duration) error {
	sqlDB, err := db.DB()
	if err != nil {
		return fmt.Errorf("get sql.DB: %w", err)
	}
	sqlDB.SetMaxOpenConns(maxOpen)
	sqlDB.SetMaxIdleConns(maxOpen)
	sqlDB.SetConnMaxIdleTime(maxIdleTime)
	return nil
}

func closeDB(db *gorm.DB) error {
	sqlDB, err := db.DB()
	if err != nil {
		return fmt.Errorf("get sql.DB: %w", err)
	}
	return sqlDB.Close()
}

// Close stops accepting calls, lets open batches commit at once instead of
// waiting out their window, waits for every call in flight, then closes the
// database. Later calls, including Close, return ErrClosed.
func (s *Store) Close() error {
	s.life.Lock()
	if s.closed {
		s.life.Unlock()
		return ErrClosed
	}
	s.closed = true
	close(s.closing)
	s.life.Unlock()

	s.ops.Wait()
	if s.checkpointerDone != nil {
		<-s.checkpointerDone
	}
	err := errors.Join(s.sqlite.close(), closeDB(s.wdb), s.alarm.close())
	if s.rdb != s.wdb {
		err = errors.Join(err, closeDB(s.rdb))
	}
	if err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// enter registers a call in flight; the caller must call the returned func.
func (s *Store) enter() (func(), error) {
	s.life.RLock()
	defer s.life.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	s.ops.Add(1)
	return s.ops.Done, nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	done, err := s.enter()
	if err != nil {
		return err
	}
	defer done()
	for _, db := range []*gorm.DB{s.wdb, s.rdb} {
		sqlDB, err := db.DB()
		if err != nil {
			return fmt.Errorf("ping: %w", err)
		}
		if err := sqlDB.PingContext(ctx); err != nil {
			return fmt.Errorf("ping: %w", err)
		}
	}
	return nil
}

// Stats returns the append counters so far.
func (s *Store) Stats() Stats {
	return Stats{
		Batches:      s.batches.Load(),
		Messages:     s.messages.Load(),
		LargestBatch: s.largest.Load(),
		Fallbacks:    s.fallbacks.Load(),
	}
}

// CreateUser stores a new user with a fresh snowflake id.
func (s *Store) CreateUser(ctx context.Context, username, passwordHash string, isGuest bool) (User, error) {
	done, err := s.enter()
	if err != nil {
		return User{}, err
	}
	defer done()
	if err := checkText("username", username, maxNameLen); err != nil {
		return User{}, err
	}
	if username == "" {
		return User{}, fmt.Errorf("%w: empty username", ErrInvalid)
	}
	row := userRow{
		ID:           s.ids.Generate().Int64(),
		Username:     username,
		PasswordHash: passwordHash,
		IsGuest:      isGuest,
		CreatedAtMS:  s.now().UnixMilli(),
	}
	err = s.wdb.WithContext(ctx).Create(&row).Error
	if isUniqueViolation(err) {
		// The only other unique key is the snowflake id; tell the two apart
		// rather than report a misconfigured node as a taken name.
		if _, lerr := s.userByName(ctx, username); lerr == nil {
			return User{}, fmt.Errorf("create user %q: %w", username, ErrUsernameTaken)
		}
	}
	if err != nil {
		return User{}, fmt.Errorf("create user %q: %w", username, err)
	}
	return row.toUser(), nil
}

// UserByName looks a user up by exact, case-sensitive username.
func (s *Store) UserByName(ctx context.Context, username string) (User, error) {
	done, err := s.enter()
	if err != nil {
		return User{}, err
	}
	defer done()
	return s.userByName(ctx, username)
}

func (s *Store) userByName(ctx context.Context, username string) (User, error) {
	var row userRow
	err := s.rdb.WithContext(ctx).Where("username = ?", username).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return User{}, fmt.Errorf("user %q: %w", username, ErrNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("load user %q: %w", username, err)
	}
	return row.toUser(), nil
}

// usersChunk bounds the IN list of one query.
const usersChunk = 500

// UsersByID returns the users that exist among ids, in the order of ids
// (duplicates collapsed); missing ids are simply absent.
func (s *Store) UsersByID(ctx context.Context, ids []int64) ([]User, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	byID := make(map[int64]userRow, len(ids))
	for chunk := range slices.Chunk(ids, usersChunk) {
		in, arg, err := s.inIDs(chunk)
		if err != nil {
			return nil, err
		}
		var rows []userRow
		if err := s.rdb.WithContext(ctx).Where("id IN "+in, arg).Find(&rows).Error; err != nil {
			return nil, fmt.Errorf("load %d users: %w", len(ids), err)
		}
		for _, r := range rows {
			byID[r.ID] = r
		}
	}
	users := make([]User, 0, len(byID))
	for _, id := range ids {
		if r, ok := byID[id]; ok {
			users = append(users, r.toUser())
			delete(byID, id)
		}
	}
	return users, nil
}

// maxMessages caps one Messages page.
const maxMessages = 500

// Messages returns the messages of convID with fromSeq <= seq <= toSeq in
// ascending seq order, at most 500 (the lowest seqs first; page on from the
// last seq returned). A missing conversation has no messages.
func (s *Store) Messages(ctx context.Context, convID string, fromSeq, toSeq int64) ([]Message, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	if toSeq < fromSeq {
		return nil, nil
	}
	var rows []messageRow
	err = s.rdb.WithContext(ctx).
		Where("conversation_id = ? AND seq >= ? AND seq <= ?", convID, fromSeq, toSeq).
		Order("seq").Limit(maxMessages).Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("load messages of %s [%d, %d]: %w", convID, fromSeq, toSeq, err)
	}
	msgs := make([]Message, len(rows))
	for i, r := range rows {
		msgs[i] = r.toMessage()
	}
	return msgs, nil
}

// Conversation loads one conversation.
func (s *Store) Conversation(ctx context.Context, id string) (Conversation, error) {
	done, err := s.enter()
	if err != nil {
		return Conversation{}, err
	}
	defer done()
	return s.conversation(ctx, id)
}

func (s *Store) conversation(ctx context.Context, id string) (Conversation, error) {
	var row conversationRow
	err := s.rdb.WithContext(ctx).Where("id = ?", id).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Conversation{}, fmt.Errorf("conversation %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Conversation{}, fmt.Errorf("load conversation %s: %w", id, err)
	}
	return row.toConversation(), nil
}

// ReadSeq returns the user's read pointer in convID, 0 when there is no member
// row (never read, or not a member).
func (s *Store) ReadSeq(ctx context.Context, convID string, userID int64) (int64, error) {
	done, err := s.enter()
	if err != nil {
		return 0, err
	}
	defer done()
	var seqs []int64
	err = s.rdb.WithContext(ctx).Model(&memberRow{}).
		Where("conversation_id = ? AND user_id = ?", convID, userID).
		Limit(1).Pluck("last_read_seq", &seqs).Error
	if err != nil {
		return 0, fmt.Errorf("load read seq of user %d in %s: %w", userID, convID, err)
	}
	if len(seqs) == 0 {
		return 0, nil
	}
	return seqs[0], nil
}

// userConvRow is one row of the member ⋈ conversation join.
type userConvRow struct {
	Conv        conversationRow `gorm:"embedded"`
	LastReadSeq int64           `gorm:"column:last_read_seq"`
	PeerID      int64           `gorm:"column:peer_id"`
}

// UserConversations returns every conversation userID is a member of, plus
// world (always present: membership in it is implicit), most recently active
// first. Single conversations carry the other member's id in PeerID, found by
// the same query.
func (s *Store) UserConversations(ctx context.Context, userID int64) ([]UserConversation, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	var rows []userConvRow
	err = s.rdb.WithContext(ctx).
		Table("conversation_members AS m").
		Select("c.*, m.last_read_seq, COALESCE(p.user_id, 0) AS peer_id").
		Joins("JOIN conversations AS c ON c.id = m.conversation_id").
		Joins("LEFT JOIN conversation_members AS p ON p.conversation_id = c.id AND c.type = ? AND p.user_id <> m.user_id", TypeSingle).
		Where("m.user_id = ?", userID).
		Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("load conversations of user %d: %w", userID, err)
	}
	out := make([]UserConversation, 0, len(rows)+1)
	seen := make(map[string]bool, len(rows))
	for _, r := range rows {
		// A single conversation has exactly one other member by construction;
		// should a second ever appear, the conversation is still listed once.
		if seen[r.Conv.ID] {
			continue
		}
		seen[r.Conv.ID] = true
		out = append(out, UserConversation{Conversation: r.Conv.toConversation(), ReadSeq: r.LastReadSeq, PeerID: r.PeerID})
	}
	if !seen[WorldID] {
		world, err := s.conversation(ctx, WorldID)
		if err != nil {
			return nil, fmt.Errorf("load conversations of user %d: %w", userID, err)
		}
		out = append(out, UserConversation{Conversation: world})
	}
	slices.SortFunc(out, func(a, b UserConversation) int {
		if c := b.Conversation.LastMessageAt.Compare(a.Conversation.LastMessageAt); c != 0 {
			return c
		}
		return cmp.Compare(a.Conversation.ID, b.Conversation.ID)
	})
	return out, nil
}

// SetReadSeq moves userID's read pointer in convID forward to
// min(seq, last_seq), or to last_seq when seq <= 0, and never backwards. In
// world it creates the member row when missing (membership there is implicit);
// in other conversations the row is the membership, so a user without one
// gets ErrNotFound instead of becoming a member. Membership checks are still
// the caller's job: this only keeps a request that raced with a removal from
// undoing it. It returns the pointer after the update.
func (s *Store) SetReadSeq(ctx context.Context, convID string, userID, seq int64) (int64, error) {
	done, err := s.enter()
	if err != nil {
		return 0, err
	}
	defer done()
	var readSeq int64
	err = s.wdb.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var last []int64
		if err := tx.Model(&conversationRow{}).Where("id = ?", convID).Limit(1).Pluck("last_seq", &last).Error; err != nil {
			return err
		}
		if len(last) == 0 {
			return ErrNotFound
		}
		target := last[0]
		if seq > 0 {
			target = min(seq, target)
		}
		if convID == WorldID {
			row := memberRow{ConversationID: convID, UserID: userID, Role: RoleMember, LastReadSeq: target, JoinedAtMS: s.now().UnixMilli()}
			if err := tx.Clauses(s.readSeqUpsert()).Create(&row).Error; err != nil {
				return err
			}
		} else {
			err := tx.Exec("UPDATE conversation_members SET last_read_seq = "+s.greatest()+"(last_read_seq, ?) WHERE conversation_id = ? AND user_id = ?",
				target, convID, userID).Error
			if err != nil {
				return err
			}
		}
		var cur []int64
		if err := tx.Model(&memberRow{}).Where("conversation_id = ? AND user_id = ?", convID, userID).Limit(1).Pluck("last_read_seq", &cur).Error; err != nil {
			return err
		}
		if len(cur) == 0 {
			return fmt.Errorf("user %d is not a member: %w", userID, ErrNotFound)
		}
		readSeq = cur[0]
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("set read seq of user %d in %s: %w", userID, convID, err)
	}
	return readSeq, nil
}

// greatest is the two-argument maximum function of the driver's SQL.
func (s *Store) greatest() string {
	if s.driver == DriverMySQL {
		return "GREATEST"
	}
	return "MAX"
}

// readSeqUpsert inserts a member row or moves an existing read pointer
// forward only.
func (s *Store) readSeqUpsert() clause.OnConflict {
	expr := "MAX(last_read_seq, excluded.last_read_seq)"
	if s.driver == DriverMySQL {
		expr = "GREATEST(last_read_seq, VALUES(last_read_seq))"
	}
	return clause.OnConflict{
		Columns:   []clause.Column{{Name: "conversation_id"}, {Name: "user_id"}},
		DoUpdates: clause.Assignments(map[string]any{"last_read_seq": gorm.Expr(expr)}),
	}
}

// inIDs returns what follows IN in a read of the rows of ids, and its argument: "?"
// bound to the list on MySQL; on SQLite a subquery over one JSON array, whose text
// is the same for every list. On SQLite the readers keep every statement prepared
// (gorm's cache, up to 256 texts, on each of up to max_open_conns connections), and a
// text per list length would be a prepared statement per length per connection; the
// old driver parsed a list of hundreds of placeholders at every call (PeersMany
// during a connect storm: 7% of the process).
func (s *Store) inIDs(ids []int64) (string, any, error) {
	if s.driver != DriverSQLite {
		return "?", ids, nil
	}
	arg, err := json.Marshal(ids)
	if err != nil {
		return "", nil, fmt.Errorf("encode %d ids: %w", len(ids), err)
	}
	return "(SELECT value FROM json_each(?))", string(arg), nil
}

func (r userRow) toUser() User {
	return User{
		ID:           r.ID,
		Username:     r.Username,
		PasswordHash: r.PasswordHash,
		Avatar:       r.Avatar,
		IsGuest:      r.IsGuest,
		CreatedAt:    fromMS(r.CreatedAtMS),
	}
}

func (r conversationRow) toConversation() Conversation {
	return Conversation{
		ID:                 r.ID,
		Type:               r.Type,
		Name:               r.Name,
		Avatar:             r.Avatar,
		OwnerID:            r.OwnerID,
		MemberCount:        r.MemberCount,
		LastSeq:            r.LastSeq,
		LastMessageID:      r.LastMessageID,
		LastMessagePreview: r.LastMessagePreview,
		LastMessageAt:      fromMS(r.LastMessageAtMS),
	}
}

func (r messageRow) toMessage() Message {
	m := Message{
		ID:             r.ID,
		ConversationID: r.ConversationID,
		Seq:            r.Seq,
		SenderID:       r.SenderID,
		SenderName:     r.SenderName,
		Type:           r.Type,
		Content:        r.Content,
		CreatedAt:      fromMS(r.CreatedAtMS),
	}
	if r.ClientMsgID != nil {
		m.ClientMsgID = *r.ClientMsgID
	}
	return m
}

// fromMS keeps 0 as the zero time so IsZero means "never".
func fromMS(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// checkText rejects what the column cannot hold: invalid UTF-8 (MySQL's strict
// utf8mb4 would refuse it, SQLite would not, and both drivers must agree) and
// more than maxRunes characters.
func checkText(field, v string, maxRunes int) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, field)
	}
	if n := utf8.RuneCountInString(v); n > maxRunes {
		return fmt.Errorf("%w: %s has %d characters, max %d", ErrInvalid, field, n, maxRunes)
	}
	return nil
}

// SQLite result codes (sqlite3.h); Code() carries extended codes, whose low
// byte is the primary code.
const (
	sqliteBusy             = 5
	sqliteLocked           = 6
	sqliteConstraintPK     = 1555 // SQLITE_CONSTRAINT_PRIMARYKEY
	sqliteConstraintUnique = 2067 // SQLITE_CONSTRAINT_UNIQUE
)

// MySQL server error numbers.
const (
	mysqlDupEntry        = 1062 // ER_DUP_ENTRY
	mysqlLockWaitTimeout = 1205 // ER_LOCK_WAIT_TIMEOUT
	mysqlDeadlock        = 1213 // ER_LOCK_DEADLOCK
)

// isUniqueViolation reports a duplicate key on a PRIMARY or UNIQUE key, for
// both drivers.
func isUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return true
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == mysqlDupEntry
	}
	var se *msqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqliteConstraintUnique || se.Code() == sqliteConstraintPK
	}
	return false
}

// isRetryable reports errors after which the same transaction may succeed:
// lock conflicts with another writer.
func isRetryable(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == mysqlDeadlock || me.Number == mysqlLockWaitTimeout
	}
	var se *msqlite.Error
	if errors.As(err, &se) {
		code := se.Code() & 0xff
		return code == sqliteBusy || code == sqliteLocked
	}
	return errors.Is(err, sql.ErrConnDone) // a pooled connection died; another will do
}

// slowLogger sends gorm's statement trace to slog, but only slow statements:
// failed statements come back as errors and are handled (returned or logged)
// exactly once by the caller. Statements are logged without their arguments,
// which hold message contents and password hashes.
type slowLogger struct{ log *slog.Logger }

func (slowLogger) ParamsFilter(_ context.Context, stmt string, _ ...any) (string, []any) {
	return stmt, nil
}

func (l slowLogger) LogMode(logger.LogLevel) logger.Interface { return l }
func (l slowLogger) Info(context.Context, string, ...any)     {}
func (l slowLogger) Warn(context.Context, string, ...any)     {}
func (l slowLogger) Error(context.Context, string, ...any)    {}

func (l slowLogger) Trace(ctx context.Context, begin time.Time, fc func() (string, int64), _ error) {
	if elapsed := time.Since(begin); elapsed >= slowQuery {
		stmt, rows := fc()
		l.log.WarnContext(ctx, "slow query", "elapsed", elapsed, "rows", rows, "sql", truncateRunes(stmt, 512))
	}
}
