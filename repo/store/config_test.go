package store

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

func TestConfigValidate(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
	if err := (Config{Driver: DriverMySQL, DSN: "root:@tcp(127.0.0.1:3306)/gochat"}).Validate(); err != nil {
		t.Errorf("zero tuning values must mean defaults: %v", err)
	}

	bad := Config{Driver: "postgres", BatchWindow: -time.Second, MaxBatch: maxBatchLimit + 1, MaxOpenConns: -1}
	err := bad.Validate()
	if err == nil {
		t.Fatal("Validate() = nil for a config with four problems")
	}
	for _, want := range []string{`driver "postgres"`, "batch_window", "max_batch", "max_open_conns"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %q, missing %q: all problems must be reported at once", err, want)
		}
	}

	tests := []struct {
		name string
		cfg  Config
	}{
		{"sqlite without dsn", Config{Driver: DriverSQLite}},
		{"sqlite in memory", Config{Driver: DriverSQLite, DSN: ":memory:"}},
		{"mysql without dsn", Config{Driver: DriverMySQL}},
		{"mysql malformed dsn", Config{Driver: DriverMySQL, DSN: "root@127.0.0.1:3306/x"}},
	}
	for _, tt := range tests {
		if err := tt.cfg.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil, want an error", tt.name)
		}
	}
}

func TestMySQLDSNAddsMissingParams(t *testing.T) {
	got, err := mysqlDSN("u:p@tcp(db:3306)/gochat")
	if err != nil {
		t.Fatalf("mysqlDSN: %v", err)
	}
	cfg, err := mysql.ParseDSN(got)
	if err != nil {
		t.Fatalf("ParseDSN(%q): %v", got, err)
	}
	if !cfg.ParseTime || cfg.Loc.String() != "UTC" || cfg.Params["charset"] != "utf8mb4" || !cfg.InterpolateParams || cfg.DBName != "gochat" {
		t.Errorf("mysqlDSN = %q: want parseTime, loc=UTC, charset=utf8mb4, interpolateParams, db gochat", got)
	}

	// What the operator set is kept.
	got, err = mysqlDSN("u:p@tcp(db:3306)/gochat?parseTime=false&charset=utf8&interpolateParams=false")
	if err != nil {
		t.Fatalf("mysqlDSN: %v", err)
	}
	cfg, err = mysql.ParseDSN(got)
	if err != nil {
		t.Fatalf("ParseDSN(%q): %v", got, err)
	}
	if cfg.ParseTime || cfg.Params["charset"] != "utf8" || cfg.InterpolateParams {
		t.Errorf("mysqlDSN = %q overrode explicit parameters", got)
	}
}

func TestSQLiteDSNs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nested", "dir", "gochat.db")
	w, r, own, err := sqliteDSNs(path+"?_pragma=busy_timeout(100)", 1<<20)
	if err != nil {
		t.Fatalf("sqliteDSNs: %v", err)
	}
	if !own || !strings.Contains(w, "wal_autocheckpoint%280%29") || strings.Contains(r, "wal_autocheckpoint") {
		t.Errorf("writer %q, reader %q, own checkpoints %v: want the writer alone with wal_autocheckpoint(0), and own checkpoints", w, r, own)
	}
	if !strings.Contains(w, "journal_size_limit%281048576%29") || strings.Contains(r, "journal_size_limit") {
		t.Errorf("writer %q, reader %q: want the writer alone with journal_size_limit(1048576)", w, r)
	}
	// A DSN's own journal_size_limit stays, alone.
	w3, _, _, err := sqliteDSNs(path+"?_pragma=journal_size_limit(-1)", 1<<20)
	if err != nil {
		t.Fatalf("sqliteDSNs: %v", err)
	}
	if !strings.Contains(w3, "journal_size_limit%28-1%29") || strings.Contains(w3, "journal_size_limit%281048576%29") {
		t.Errorf("writer %q: want the DSN's journal_size_limit(-1) alone", w3)
	}
	// A DSN that sets wal_autocheckpoint keeps it, and the writer checkpoints.
	w2, _, own2, err := sqliteDSNs(path+"?_pragma=wal_autocheckpoint(500)", 1<<20)
	if err != nil {
		t.Fatalf("sqliteDSNs: %v", err)
	}
	if own2 || !strings.Contains(w2, "wal_autocheckpoint%28500%29") || strings.Contains(w2, "wal_autocheckpoint%280%29") || strings.Contains(w2, "journal_size_limit") {
		t.Errorf("writer %q, own checkpoints %v: want the DSN's wal_autocheckpoint(500) alone and no checkpointer", w2, own2)
	}
	if _, err := os.Stat(filepath.Dir(path)); err != nil {
		t.Errorf("directory not created: %v", err)
	}
	for name, dsn := range map[string]string{"writer": w, "reader": r} {
		file, rawQuery, _ := strings.Cut(dsn, "?")
		if file != path {
			t.Errorf("%s file = %q, want %q", name, file, path)
		}
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			t.Fatalf("%s query %q: %v", name, rawQuery, err)
		}
		pragmas := strings.Join(q["_pragma"], ",")
		for _, want := range []string{"busy_timeout(100)", "journal_mode(WAL)", "synchronous(NORMAL)"} {
			if !strings.Contains(pragmas, want) {
				t.Errorf("%s pragmas %q lack %q", name, pragmas, want)
			}
		}
		if strings.Contains(pragmas, "busy_timeout(5000)") {
			t.Errorf("%s pragmas %q override the configured busy_timeout", name, pragmas)
		}
	}
	if !strings.Contains(w, "_txlock=immediate") || strings.Contains(w, "query_only") {
		t.Errorf("writer dsn %q: want _txlock=immediate and writable", w)
	}
	if !strings.Contains(r, "query_only") {
		t.Errorf("reader dsn %q: want query_only", r)
	}
}

func TestTruncateRunes(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"hello", 10, "hello"},
		{"hello", 5, "hello"},
		{"hello", 2, "he"},
		{"你好世界", 2, "你好"},
		{"🐱🐶", 1, "🐱"},
		{"", 3, ""},
	}
	for _, tt := range tests {
		if got := truncateRunes(tt.in, tt.n); got != tt.want {
			t.Errorf("truncateRunes(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}
