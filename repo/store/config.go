package store

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Drivers understood by Config.Driver.
const (
	DriverSQLite = "sqlite"
	DriverMySQL  = "mysql"
)

// maxBatchLimit keeps one multi-row INSERT (9 placeholders per row) and the
// de-duplication lookup (2 per row) far below SQLite's 32766 and MySQL's 65535
// placeholder limits.
const maxBatchLimit = 1000

// Config selects and tunes the durable store.
type Config struct {
	// Driver is "sqlite" or "mysql".
	Driver string `yaml:"driver"`
	// DSN is a file path for sqlite (its directory is created if missing) or a
	// go-sql-driver DSN for mysql (parseTime, charset=utf8mb4, loc=UTC and
	// interpolateParams are added when absent).
	DSN string `yaml:"dsn"`
	// BatchWindow is how long the first Append of a batch waits for company
	// before committing. Zero means the default.
	BatchWindow time.Duration `yaml:"batch_window"`
	// MaxBatch caps the appends committed in one transaction; a full batch
	// commits without waiting for the window. Zero means the default.
	MaxBatch int `yaml:"max_batch"`
	// MaxOpenConns sizes the MySQL pool, and the SQLite reader pool (SQLite
	// writes always go through a single connection). Zero means the default.
	MaxOpenConns int `yaml:"max_open_conns"`
}

// Default is the single-machine setup: a SQLite file under ./data.
func Default() Config {
	return Config{
		Driver:       DriverSQLite,
		DSN:          "data/gochat.db",
		BatchWindow:  200 * time.Microsecond,
		MaxBatch:     256,
		MaxOpenConns: 32,
	}
}

// withDefaults fills zero values so that a hand-built Config{Driver, DSN} works.
func (c Config) withDefaults() Config {
	d := Default()
	if c.BatchWindow == 0 {
		c.BatchWindow = d.BatchWindow
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = d.MaxBatch
	}
	if c.MaxOpenConns == 0 {
		c.MaxOpenConns = d.MaxOpenConns
	}
	return c
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	switch c.Driver {
	case DriverSQLite:
		if c.DSN == "" {
			errs = append(errs, errors.New("store: dsn: empty (want a file path)"))
		} else if isSQLiteMemory(c.DSN) {
			// The writer and the reader pool are separate connections; each
			// would get its own private in-memory database.
			errs = append(errs, fmt.Errorf("store: dsn %q: in-memory SQLite is not supported, use a file", c.DSN))
		}
	case DriverMySQL:
		if c.DSN == "" {
			errs = append(errs, errors.New("store: dsn: empty (want a MySQL DSN)"))
		} else if _, err := mysql.ParseDSN(c.DSN); err != nil {
			errs = append(errs, fmt.Errorf("store: dsn: %w", err))
		}
	default:
		errs = append(errs, fmt.Errorf("store: driver %q: want %q or %q", c.Driver, DriverSQLite, DriverMySQL))
	}
	if c.BatchWindow < 0 {
		errs = append(errs, fmt.Errorf("store: batch_window %s: must not be negative", c.BatchWindow))
	}
	if c.MaxBatch < 0 || c.MaxBatch > maxBatchLimit {
		errs = append(errs, fmt.Errorf("store: max_batch %d: want 1..%d (0 for the default)", c.MaxBatch, maxBatchLimit))
	}
	if c.MaxOpenConns < 0 {
		errs = append(errs, fmt.Errorf("store: max_open_conns %d: must not be negative", c.MaxOpenConns))
	}
	return errors.Join(errs...)
}

func isSQLiteMemory(dsn string) bool {
	return strings.Contains(dsn, ":memory:") || strings.Contains(dsn, "mode=memory")
}

// sqliteDSNs turns the configured file path into the writer and reader DSNs of
// modernc.org/sqlite, creating the file's directory.
//
// Both get WAL (readers never block the writer and vice versa), synchronous=NORMAL
// (in WAL mode a commit survives a process crash; only an OS crash or power
// loss can drop the last commits) and a busy timeout, so that a second process
// or Store on the same file waits instead of failing with SQLITE_BUSY.
// The writer begins every transaction IMMEDIATE: it takes the write lock at
// BEGIN, where the busy timeout applies, instead of upgrading a read lock
// mid-transaction, which fails at once when another connection wrote first.
// Readers are query_only so a read path can never write by accident. The writer
// does not checkpoint the WAL (wal_autocheckpoint(0)): the checkpointer does, on a
// connection of its own (checkpoint.go), unless the DSN sets wal_autocheckpoint
// itself; ownCheckpoints tells which. With its own checkpoints the writer also gets
// journal_size_limit(walLimit) unless the DSN sets one: a WAL that grew while a
// reader held its pages (a restart only rewinds it) is cut back to walLimit bytes
// by the first commit after it starts over, instead of keeping its largest size
// on disk. The writer opens the database through
// walVFS (walvfs.go), which writes a commit's WAL frames with one pwrite instead of
// two per frame, unless the DSN names a VFS.
func sqliteDSNs(dsn string, walLimit int64) (writer, reader string, ownCheckpoints bool, err error) {
	path, rawQuery, _ := strings.Cut(dsn, "?")
	file := strings.TrimPrefix(path, "file:")
	if dir := filepath.Dir(file); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", "", false, fmt.Errorf("create sqlite directory %s: %w", dir, err)
		}
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", "", false, fmt.Errorf("parse sqlite dsn query: %w", err)
	}
	for _, p := range []string{"busy_timeout(5000)", "journal_mode(WAL)", "synchronous(NORMAL)"} {
		name, _, _ := strings.Cut(p, "(")
		if !hasPragma(q, name) {
			q.Add("_pragma", p)
		}
	}
	w := cloneValues(q)
	if w.Get("_txlock") == "" {
		w.Set("_txlock", "immediate")
	}
	if w.Get("vfs") == "" {
		name, err := registerWALVFS()
		if err != nil {
			return "", "", false, fmt.Errorf("sqlite WAL writes: %w", err)
		}
		w.Set("vfs", name)
	}
	ownCheckpoints = !hasPragma(q, "wal_autocheckpoint")
	if ownCheckpoints {
		w.Add("_pragma", "wal_autocheckpoint(0)")
		if !hasPragma(q, "journal_size_limit") {
			w.Add("_pragma", fmt.Sprintf("journal_size_limit(%d)", walLimit))
		}
	}
	r := cloneValues(q)
	r.Add("_pragma", "query_only(1)")
	return path + "?" + w.Encode(), path + "?" + r.Encode(), ownCheckpoints, nil
}

func hasPragma(q url.Values, name string) bool {
	for _, p := range q["_pragma"] {
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(p)), name) {
			return true
		}
	}
	return false
}

func cloneValues(q url.Values) url.Values {
	c := make(url.Values, len(q))
	for k, v := range q {
		c[k] = append([]string(nil), v...)
	}
	return c
}

// mysqlDSN adds the parameters the store relies on when the operator left them
// out: utf8mb4 everywhere, UTC, and client-side interpolation, which saves the
// prepare/close round trips go-sql-driver otherwise makes for every query with
// arguments (safe with utf8mb4; the driver refuses it for unsafe charsets).
func mysqlDSN(dsn string) (string, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", fmt.Errorf("parse mysql dsn: %w", err)
	}
	_, rawQuery, _ := strings.Cut(dsn, "?")
	given, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", fmt.Errorf("parse mysql dsn query: %w", err)
	}
	if !given.Has("parseTime") {
		cfg.ParseTime = true
	}
	if !given.Has("loc") {
		cfg.Loc = time.UTC
	}
	if !given.Has("charset") && !given.Has("collation") {
		if cfg.Params == nil {
			cfg.Params = map[string]string{}
		}
		cfg.Params["charset"] = "utf8mb4"
	}
	if !given.Has("interpolateParams") {
		cfg.InterpolateParams = true
	}
	return cfg.FormatDSN(), nil
}
