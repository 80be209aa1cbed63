package repotest

import (
	"database/sql"
	"regexp"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
)

func TestUniqueName(t *testing.T) {
	long := "TestStore/mysql/" + strings.Repeat("VeryLongSubtestName", 10)
	valid := regexp.MustCompile(`^t_[a-z0-9_]+$`)
	a, b := uniqueName(long, "_", maxDBName), uniqueName(long, "_", maxDBName)
	if len(a) > maxDBName || !valid.MatchString(a) {
		t.Errorf("uniqueName = %q (%d bytes), want [a-z0-9_] within %d", a, len(a), maxDBName)
	}
	if a == b {
		t.Errorf("two calls gave the same name %q", a)
	}
	if got := uniqueName("Test/Ünïcode name", ":", 100); !strings.HasPrefix(got, "t_test__n_code_name:") {
		t.Errorf("uniqueName = %q", got)
	}
}

func TestMySQLDSNCreatesAndDropsDatabase(t *testing.T) {
	var dsn string
	t.Run("inner", func(t *testing.T) {
		dsn = MySQLDSN(t)
		db := openMySQL(t, dsn)
		if _, err := db.Exec("CREATE TABLE t (id INT PRIMARY KEY)"); err != nil {
			t.Fatalf("create table in the test database: %v", err)
		}
	})
	if dsn == "" {
		t.Skip("MySQL unavailable")
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("ParseDSN(%q): %v", dsn, err)
	}
	name := cfg.DBName
	cfg.DBName = ""
	db := openMySQL(t, cfg.FormatDSN())
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", name).Scan(&n); err != nil {
		t.Fatalf("look up schema: %v", err)
	}
	if n != 0 {
		t.Errorf("database %s still exists after the test ended", name)
	}
}

func openMySQL(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatalf("open %q: %v", dsn, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestRedisAddrDeletesPrefixedKeys(t *testing.T) {
	var addr, prefix string
	t.Run("inner", func(t *testing.T) {
		addr, prefix = RedisAddr(t)
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		defer rdb.Close()
		for _, k := range []string{"a", "b", "c"} {
			if err := rdb.Set(t.Context(), prefix+k, 1, 0).Err(); err != nil {
				t.Fatalf("SET: %v", err)
			}
		}
	})
	if addr == "" {
		t.Skip("Redis unavailable")
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	keys, err := rdb.Keys(t.Context(), prefix+"*").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	if len(keys) != 0 {
		t.Errorf("keys left after cleanup: %v", keys)
	}
}
