// Package repotest gives each test its own MySQL database, SQLite file or Redis
// key prefix on the services running on this machine, and removes them when
// the test ends.
//
// When a service is unreachable the test is skipped with a loud message, or
// fails when the environment variable CI is "true": CI must never go green by
// skipping.
package repotest

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
)

// Environment variables that point the helpers at other servers.
const (
	EnvMySQLDSN  = "GOCHAT_TEST_MYSQL_DSN"  // default root:@tcp(127.0.0.1:3306)/
	EnvRedisAddr = "GOCHAT_TEST_REDIS_ADDR" // default 127.0.0.1:6379
)

const (
	defaultMySQLDSN  = "root:@tcp(127.0.0.1:3306)/"
	defaultRedisAddr = "127.0.0.1:6379"
	dialTimeout      = 3 * time.Second
	maxDBName        = 64 // MySQL identifier limit
)

// MySQLDSN creates a fresh, empty database named after the test, returns a
// DSN that selects it, and drops it when the test ends.
func MySQLDSN(t testing.TB) string {
	t.Helper()
	base := envOr(EnvMySQLDSN, defaultMySQLDSN)
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatalf("repotest: parse %s=%q: %v", EnvMySQLDSN, base, err)
	}
	timeout := cfg.Timeout
	cfg.DBName = "" // connect to the server, not to a database that may not exist
	cfg.Timeout = dialTimeout
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatalf("repotest: open mysql: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		_ = admin.Close()
		unavailable(t, "MySQL", cfg.Addr, EnvMySQLDSN, err)
	}

	name := uniqueName(t.Name(), "_", maxDBName)
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"); err != nil {
		_ = admin.Close()
		t.Fatalf("repotest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
			t.Errorf("repotest: drop database %s: %v", name, err)
		}
		if err := admin.Close(); err != nil {
			t.Errorf("repotest: close mysql: %v", err)
		}
	})

	cfg.DBName = name
	cfg.Timeout = timeout // what the caller configured, not our dial probe
	return cfg.FormatDSN()
}

// SQLiteDSN returns the path of a database file in the test's temporary
// directory; the file itself is created by whoever opens it.
func SQLiteDSN(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "gochat.db")
}

// RedisAddr returns the test Redis address and a key prefix unique to this
// test. Keys under the prefix are deleted when the test ends.
func RedisAddr(t testing.TB) (addr, prefix string) {
	t.Helper()
	addr = envOr(EnvRedisAddr, defaultRedisAddr)
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: dialTimeout})
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		unavailable(t, "Redis", addr, EnvRedisAddr, err)
	}
	// Sanitized names hold only [a-z0-9_], so the prefix has no glob
	// metacharacters to escape in SCAN MATCH.
	prefix = uniqueName(t.Name(), ":", 100) + ":"
	t.Cleanup(func() {
		defer func() {
			if err := rdb.Close(); err != nil {
				t.Errorf("repotest: close redis: %v", err)
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := DeleteKeys(ctx, rdb, prefix); err != nil {
			t.Errorf("repotest: delete redis keys %s*: %v", prefix, err)
		}
	})
	return addr, prefix
}

// DeleteKeys removes every key starting with prefix, using SCAN so that a
// large keyspace is never blocked by KEYS.
func DeleteKeys(ctx context.Context, rdb *redis.Client, prefix string) error {
	iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := rdb.Del(ctx, batch...).Err()
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			if err := flush(); err != nil {
				return fmt.Errorf("delete keys: %w", err)
			}
		}
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("scan %s*: %w", prefix, err)
	}
	if err := flush(); err != nil {
		return fmt.Errorf("delete keys: %w", err)
	}
	return nil
}

func unavailable(t testing.TB, service, addr, env string, err error) {
	t.Helper()
	msg := fmt.Sprintf("repotest: %s NOT REACHABLE at %s (%v); start it or set %s", service, addr, err, env)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " — CI=true, so this is a failure, not a skip")
	}
	t.Skip("SKIPPING: " + msg)
}

// uniqueName turns a test name into a lower-case [a-z0-9_] identifier with a
// random suffix, at most maxLen bytes long. sep joins the two parts.
func uniqueName(testName, sep string, maxLen int) string {
	var b strings.Builder
	b.WriteString("t_")
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	suffix := fmt.Sprintf("%s%08x", sep, rand.Uint32())
	name := b.String()
	if len(name) > maxLen-len(suffix) {
		name = name[:maxLen-len(suffix)]
	}
	return name + suffix
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
