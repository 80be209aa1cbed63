package store

import (
	"context"
	"fmt"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Rows mirror the tables one to one. They are unexported: callers see User,
// Message and Conversation, whose times are time.Time rather than *_ms columns.

type userRow struct {
	ID           int64  `gorm:"column:id;primaryKey;autoIncrement:false"`
	Username     string `gorm:"column:username"`
	PasswordHash string `gorm:"column:password_hash"`
	Avatar       string `gorm:"column:avatar"`
	IsGuest      bool   `gorm:"column:is_guest"`
	CreatedAtMS  int64  `gorm:"column:created_at_ms"`
}

func (userRow) TableName() string { return "users" }

type friendshipRow struct {
	UserID      int64 `gorm:"column:user_id;primaryKey;autoIncrement:false"`
	FriendID    int64 `gorm:"column:friend_id;primaryKey;autoIncrement:false"`
	CreatedAtMS int64 `gorm:"column:created_at_ms"`
}

func (friendshipRow) TableName() string { return "friendships" }

type conversationRow struct {
	ID                 string `gorm:"column:id;primaryKey"`
	Type               string `gorm:"column:type"`
	Name               string `gorm:"column:name"`
	Avatar             string `gorm:"column:avatar"`
	OwnerID            int64  `gorm:"column:owner_id"`
	MemberCount        int32  `gorm:"column:member_count"`
	LastSeq            int64  `gorm:"column:last_seq"`
	LastMessageID      int64  `gorm:"column:last_message_id"`
	LastMessagePreview string `gorm:"column:last_message_preview"`
	LastMessageAtMS    int64  `gorm:"column:last_message_at_ms"`
}

func (conversationRow) TableName() string { return "conversations" }

type memberRow struct {
	ConversationID string `gorm:"column:conversation_id;primaryKey"`
	UserID         int64  `gorm:"column:user_id;primaryKey;autoIncrement:false"`
	Role           string `gorm:"column:role"`
	LastReadSeq    int64  `gorm:"column:last_read_seq"`
	JoinedAtMS     int64  `gorm:"column:joined_at_ms"`
}

func (memberRow) TableName() string { return "conversation_members" }

type messageRow struct {
	ID             int64  `gorm:"column:id;primaryKey;autoIncrement:false"`
	ConversationID string `gorm:"column:conversation_id"`
	Seq            int64  `gorm:"column:seq"`
	SenderID       int64  `gorm:"column:sender_id"`
	SenderName     string `gorm:"column:sender_name"`
	Type           int8   `gorm:"column:type"`
	Content        string `gorm:"column:content"`
	// ClientMsgID is NULL when the client sent none: NULLs never collide in
	// UNIQUE(sender_id, client_msg_id), so id-less messages are not de-duplicated.
	ClientMsgID *string `gorm:"column:client_msg_id"`
	CreatedAtMS int64   `gorm:"column:created_at_ms"`
}

func (messageRow) TableName() string { return "messages" }

// Column sizes shared by the DDL and Append's validation.
const (
	maxIDLen       = 64    // conversation ids, client message ids (characters)
	maxNameLen     = 64    // usernames, sender names (characters)
	maxPreviewLen  = 255   // last_message_preview (characters)
	maxContentSize = 65535 // MySQL TEXT (bytes)
)

// The schema is plain DDL rather than gorm's AutoMigrate for two reasons:
// AutoMigrate checks for a table and then creates it, so two processes starting
// at once race and one fails with "table already exists", while CREATE TABLE IF
// NOT EXISTS is idempotent and atomic on both engines; and MySQL needs
// per-column collations that gorm tags cannot express per dialect. Indexes are
// declared inside CREATE TABLE because MySQL has no CREATE INDEX IF NOT EXISTS.
// A later schema change appends statements here and must stay idempotent.

// mysqlSchema is formatted with the binary collation chosen by binaryCollation
// for columns compared byte for byte: usernames, conversation and client ids.
const mysqlSchema = `
CREATE TABLE IF NOT EXISTS users (
	id            BIGINT       NOT NULL,
	username      VARCHAR(64)  CHARACTER SET utf8mb4 COLLATE %[1]s NOT NULL,
	password_hash VARCHAR(255) NOT NULL DEFAULT '',
	avatar        VARCHAR(512) NOT NULL DEFAULT '',
	is_guest      TINYINT(1)   NOT NULL DEFAULT 0,
	created_at_ms BIGINT       NOT NULL DEFAULT 0,
	PRIMARY KEY (id),
	UNIQUE KEY uk_users_username (username)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS friendships (
	user_id       BIGINT NOT NULL,
	friend_id     BIGINT NOT NULL,
	created_at_ms BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (user_id, friend_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS conversations (
	id                   VARCHAR(64)  CHARACTER SET utf8mb4 COLLATE %[1]s NOT NULL,
	type                 VARCHAR(16)  NOT NULL,
	name                 VARCHAR(128) NOT NULL DEFAULT '',
	avatar               VARCHAR(512) NOT NULL DEFAULT '',
	owner_id             BIGINT       NOT NULL DEFAULT 0,
	member_count         INT          NOT NULL DEFAULT 0,
	last_seq             BIGINT       NOT NULL DEFAULT 0,
	last_message_id      BIGINT       NOT NULL DEFAULT 0,
	last_message_preview VARCHAR(255) NOT NULL DEFAULT '',
	last_message_at_ms   BIGINT       NOT NULL DEFAULT 0,
	PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS conversation_members (
	conversation_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE %[1]s NOT NULL,
	user_id         BIGINT      NOT NULL,
	role            VARCHAR(16) NOT NULL DEFAULT 'member',
	last_read_seq   BIGINT      NOT NULL DEFAULT 0,
	joined_at_ms    BIGINT      NOT NULL DEFAULT 0,
	PRIMARY KEY (conversation_id, user_id),
	KEY idx_conversation_members_user_id (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS messages (
	id              BIGINT      NOT NULL,
	conversation_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE %[1]s NOT NULL,
	seq             BIGINT      NOT NULL,
	sender_id       BIGINT      NOT NULL,
	sender_name     VARCHAR(64) NOT NULL DEFAULT '',
	type            TINYINT     NOT NULL DEFAULT 0,
	content         TEXT        NOT NULL,
	client_msg_id   VARCHAR(64) CHARACTER SET utf8mb4 COLLATE %[1]s NULL,
	created_at_ms   BIGINT      NOT NULL,
	PRIMARY KEY (id),
	UNIQUE KEY uk_messages_conversation_seq (conversation_id, seq),
	UNIQUE KEY uk_messages_sender_client_msg (sender_id, client_msg_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
`

// sqliteSchema mirrors mysqlSchema. SQLite compares TEXT byte for byte by
// default, so no collation is needed for case-sensitive usernames.
const sqliteSchema = `
CREATE TABLE IF NOT EXISTS users (
	id            BIGINT       NOT NULL PRIMARY KEY,
	username      VARCHAR(64)  NOT NULL,
	password_hash VARCHAR(255) NOT NULL DEFAULT '',
	avatar        VARCHAR(512) NOT NULL DEFAULT '',
	is_guest      BOOLEAN      NOT NULL DEFAULT 0,
	created_at_ms BIGINT       NOT NULL DEFAULT 0,
	CONSTRAINT uk_users_username UNIQUE (username)
);

CREATE TABLE IF NOT EXISTS friendships (
	user_id       BIGINT NOT NULL,
	friend_id     BIGINT NOT NULL,
	created_at_ms BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (user_id, friend_id)
);

CREATE TABLE IF NOT EXISTS conversations (
	id                   VARCHAR(64)  NOT NULL PRIMARY KEY,
	type                 VARCHAR(16)  NOT NULL,
	name                 VARCHAR(128) NOT NULL DEFAULT '',
	avatar               VARCHAR(512) NOT NULL DEFAULT '',
	owner_id             BIGINT       NOT NULL DEFAULT 0,
	member_count         INT          NOT NULL DEFAULT 0,
	last_seq             BIGINT       NOT NULL DEFAULT 0,
	last_message_id      BIGINT       NOT NULL DEFAULT 0,
	last_message_preview VARCHAR(255) NOT NULL DEFAULT '',
	last_message_at_ms   BIGINT       NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS conversation_members (
	conversation_id VARCHAR(64) NOT NULL,
	user_id         BIGINT      NOT NULL,
	role            VARCHAR(16) NOT NULL DEFAULT 'member',
	last_read_seq   BIGINT      NOT NULL DEFAULT 0,
	joined_at_ms    BIGINT      NOT NULL DEFAULT 0,
	PRIMARY KEY (conversation_id, user_id)
);

CREATE INDEX IF NOT EXISTS idx_conversation_members_user_id ON conversation_members (user_id);

CREATE TABLE IF NOT EXISTS messages (
	id              BIGINT      NOT NULL PRIMARY KEY,
	conversation_id VARCHAR(64) NOT NULL,
	seq             BIGINT      NOT NULL,
	sender_id       BIGINT      NOT NULL,
	sender_name     VARCHAR(64) NOT NULL DEFAULT '',
	type            TINYINT     NOT NULL DEFAULT 0,
	content         TEXT        NOT NULL,
	client_msg_id   VARCHAR(64) NULL,
	created_at_ms   BIGINT      NOT NULL,
	CONSTRAINT uk_messages_conversation_seq UNIQUE (conversation_id, seq),
	CONSTRAINT uk_messages_sender_client_msg UNIQUE (sender_id, client_msg_id)
);
`

// migrate creates the schema and the world conversation. Every statement is
// idempotent, so concurrent starts of several processes are safe.
func migrate(ctx context.Context, db *gorm.DB, driver string) error {
	schema := sqliteSchema
	if driver == DriverMySQL {
		coll, err := binaryCollation(ctx, db)
		if err != nil {
			return err
		}
		schema = fmt.Sprintf(mysqlSchema, coll)
	}
	for stmt := range strings.SplitSeq(schema, ";") {
		stmt = strings.TrimSpace(stmt)
		if stmt == "" {
			continue
		}
		if err := db.WithContext(ctx).Exec(stmt).Error; err != nil {
			return fmt.Errorf("migrate: %s: %w", firstLine(stmt), err)
		}
	}
	world := conversationRow{ID: WorldID, Type: TypeWorld, Name: "World"}
	if err := db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&world).Error; err != nil {
		return fmt.Errorf("ensure world conversation: %w", err)
	}
	return nil
}

// binaryCollation picks a byte-wise utf8mb4 collation. The NO PAD variants are
// preferred because utf8mb4_bin is PAD SPACE: it treats "bob" and "bob " as
// equal, so the unique index would reject a username or client id that
// differs only by trailing spaces, and lookups would return the other row.
// MariaDB (10.2+) has utf8mb4_nopad_bin, MySQL 8 has utf8mb4_0900_bin.
func binaryCollation(ctx context.Context, db *gorm.DB) (string, error) {
	var names []string
	err := db.WithContext(ctx).Raw(
		"SELECT COLLATION_NAME FROM information_schema.COLLATIONS WHERE COLLATION_NAME IN ?",
		[]string{"utf8mb4_nopad_bin", "utf8mb4_0900_bin"},
	).Scan(&names).Error
	if err != nil {
		return "", fmt.Errorf("look up binary collations: %w", err)
	}
	if len(names) == 0 {
		return "utf8mb4_bin", nil
	}
	return names[0], nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}
