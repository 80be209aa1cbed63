package kv_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gochat/gochat/repo/kv"
	"github.com/gochat/gochat/repo/repotest"
)

// store is what both implementations must do; the same test body runs against each.
type store interface {
	Revoke(ctx context.Context, tokenID string, until time.Time) error
	IsRevoked(ctx context.Context, tokenID string) (bool, error)
	IsRevokedMany(ctx context.Context, tokenIDs []string) ([]bool, error)
	Ping(ctx context.Context) error
}

func implementations(t *testing.T) map[string]store {
	t.Helper()
	addr, prefix := repotest.RedisAddr(t)
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return map[string]store{
		"memory": kv.NewMemory(),
		"redis":  kv.NewRedis(c, prefix),
	}
}

func TestRevocationContract(t *testing.T) {
	for name, s := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			if err := s.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			if got, err := s.IsRevoked(ctx, "a"); err != nil || got {
				t.Fatalf("IsRevoked(a) before revoke = %v, %v", got, err)
			}
			if err := s.Revoke(ctx, "a", time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if got, err := s.IsRevoked(ctx, "a"); err != nil || !got {
				t.Fatalf("IsRevoked(a) after revoke = %v, %v", got, err)
			}
			if got, _ := s.IsRevoked(ctx, "b"); got {
				t.Fatal("unrelated token reported revoked")
			}
			// A revocation for an already-expired token is not kept.
			if err := s.Revoke(ctx, "old", time.Now().Add(-time.Second)); err != nil {
				t.Fatal(err)
			}
			if got, _ := s.IsRevoked(ctx, "old"); got {
				t.Fatal("expired revocation reported")
			}
		})
	}
}

// TestRevocationMany: the batch answers what IsRevoked answers for each id, in
// order, repeats and an expired revocation included.
func TestRevocationMany(t *testing.T) {
	for name, s := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			got, err := s.IsRevokedMany(ctx, nil)
			if err != nil || len(got) != 0 {
				t.Fatalf("IsRevokedMany(nil) = %v, %v; want empty", got, err)
			}
			for _, id := range []string{"r1", "r2"} {
				if err := s.Revoke(ctx, id, time.Now().Add(time.Hour)); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Revoke(ctx, "gone", time.Now().Add(-time.Second)); err != nil {
				t.Fatal(err)
			}
			ids := []string{"ok1", "r1", "gone", "r2", "ok2", "r1"}
			got, err = s.IsRevokedMany(ctx, ids)
			if err != nil {
				t.Fatal(err)
			}
			want := []bool{false, true, false, true, false, true}
			if !slices.Equal(got, want) {
				t.Fatalf("IsRevokedMany(%v) = %v, want %v", ids, got, want)
			}
			for i, id := range ids {
				if one, err := s.IsRevoked(ctx, id); err != nil || one != got[i] {
					t.Fatalf("IsRevoked(%s) = %v, %v; the batch said %v", id, one, err, got[i])
				}
			}
		})
	}
}

func TestMemorySweepKeepsLiveEntries(t *testing.T) {
	ctx := context.Background()
	m := kv.NewMemory()
	for i := range 3000 {
		until := time.Now().Add(time.Hour)
		if i%2 == 0 {
			until = time.Now().Add(-time.Second)
		}
		if err := m.Revoke(ctx, fmt.Sprint(i), until); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i < 3000; i += 2 {
		if got, _ := m.IsRevoked(ctx, fmt.Sprint(i)); !got {
			t.Fatalf("live revocation %d lost by sweep", i)
		}
	}
}
