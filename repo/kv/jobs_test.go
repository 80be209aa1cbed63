package kv_test

import (
	"context"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/gochat/gochat/repo/kv"
	"github.com/gochat/gochat/repo/repotest"
)

type jobStore interface {
	JobCursor(ctx context.Context, id string) (int64, bool, error)
	SaveJobCursor(ctx context.Context, id string, cursor int64, done bool) error
}

func TestJobCursorContract(t *testing.T) {
	addr, prefix := repotest.RedisAddr(t)
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	for name, s := range map[string]jobStore{"memory": kv.NewMemory(), "redis": kv.NewRedis(c, prefix)} {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			if cur, done, err := s.JobCursor(ctx, "m1"); err != nil || cur != 0 || done {
				t.Fatalf("unknown job = %d %v %v", cur, done, err)
			}
			must := func(cur int64, done bool) {
				t.Helper()
				if err := s.SaveJobCursor(ctx, "m1", cur, done); err != nil {
					t.Fatal(err)
				}
			}
			must(200, false)
			must(100, false) // a late, smaller save never moves it back
			if cur, done, _ := s.JobCursor(ctx, "m1"); cur != 200 || done {
				t.Fatalf("cursor = %d done %v, want 200 false", cur, done)
			}
			must(400, true)
			must(450, false) // done sticks
			if cur, done, _ := s.JobCursor(ctx, "m1"); cur != 450 || !done {
				t.Fatalf("cursor = %d done %v, want 450 true", cur, done)
			}
			if _, _, err := s.JobCursor(ctx, ""); !errors.Is(err, kv.ErrInvalid) {
				t.Fatalf("empty id err = %v", err)
			}
		})
	}
}
