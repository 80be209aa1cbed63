// Package kv holds repo's volatile state: token revocations, and routes (which
// gateways hold a user's sockets), from which presence follows. Two
// implementations: Redis (split topology) and Memory (one process). Nothing here is
// the only copy of anything that must survive a restart of Redis: a lost revocation
// list is the one exception, and it only lives as long as the token would. Lost
// routes come back with the gateways' next refresh (see routes.go).
package kv

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRouteTTL is how long a route lives after its last Connect or Refresh
// unless WithRouteTTL says otherwise. Gateways refresh well within it.
const DefaultRouteTTL = 90 * time.Second

// Option configures Memory or Redis.
type Option func(*options)

type options struct {
	routeTTL time.Duration
	now      func() time.Time
}

func newOptions(opts []Option) options {
	o := options{routeTTL: DefaultRouteTTL, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithRouteTTL sets how long a (user, gateway) route lives after its last
// Connect or Refresh; a gateway that stops refreshing loses its routes after
// this long. Values under a millisecond keep the default.
func WithRouteTTL(d time.Duration) Option {
	return func(o *options) {
		if d >= time.Millisecond {
			o.routeTTL = d
		}
	}
}

// WithClock replaces time.Now, for tests of expiry. Memory only: Redis
// expires routes by the Redis server's clock, which every repo process shares.
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.now = now
		}
	}
}

// Memory is the in-process implementation. Safe for concurrent use.
type Memory struct {
	now      func() time.Time
	routeTTL time.Duration

	mu      sync.Mutex           // guards every field below
	revoked map[string]time.Time // token id -> when the entry may be forgotten
	sweepAt int                  // sweep expired revocations when the map reaches this size

	routes       map[int64]map[string]route // user -> gateway -> sockets there; see routes.go
	routeSweepAt int                        // sweep expired routes when routes reaches this size

	jobs map[string]jobCursor // job id -> progress; see jobs.go
}

// NewMemory returns an empty in-process store.
func NewMemory(opts ...Option) *Memory {
	o := newOptions(opts)
	return &Memory{
		now:          o.now,
		routeTTL:     o.routeTTL,
		revoked:      make(map[string]time.Time),
		sweepAt:      1024,
		routes:       make(map[int64]map[string]route),
		routeSweepAt: 1024,
	}
}

// Revoke remembers tokenID as revoked until the given time (the token's own expiry).
func (m *Memory) Revoke(_ context.Context, tokenID string, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.revoked) >= m.sweepAt {
		now := m.now()
		for id, exp := range m.revoked {
			if !exp.After(now) {
				delete(m.revoked, id)
			}
		}
		// Amortise: the next sweep happens when the live set has doubled.
		m.sweepAt = max(1024, 2*len(m.revoked))
	}
	m.revoked[tokenID] = until
	return nil
}

// IsRevoked reports whether tokenID was revoked and has not yet expired.
func (m *Memory) IsRevoked(_ context.Context, tokenID string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	exp, ok := m.revoked[tokenID]
	return ok && exp.After(m.now()), nil
}

// IsRevokedMany is IsRevoked for each of tokenIDs (revoked[i] answers
// tokenIDs[i]), under one lock acquisition for the whole batch.
func (m *Memory) IsRevokedMany(_ context.Context, tokenIDs []string) ([]bool, error) {
	out := make([]bool, len(tokenIDs))
	if len(tokenIDs) == 0 {
		return out, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for i, id := range tokenIDs {
		exp, ok := m.revoked[id]
		out[i] = ok && exp.After(now)
	}
	return out, nil
}

// Ping always succeeds.
func (m *Memory) Ping(context.Context) error { return nil }

// Redis is the go-redis implementation; every key starts with prefix.
type Redis struct {
	c        redis.UniversalClient
	prefix   string
	routeTTL time.Duration
}

// NewRedis wraps an existing client. The caller owns (and closes) the client.
func NewRedis(c redis.UniversalClient, prefix string, opts ...Option) *Redis {
	o := newOptions(opts)
	return &Redis{c: c, prefix: prefix, routeTTL: o.routeTTL}
}

func (r *Redis) revokedKey(tokenID string) string { return r.prefix + "revoked:" + tokenID }

// Revoke stores the token id with a TTL that ends at until.
func (r *Redis) Revoke(ctx context.Context, tokenID string, until time.Time) error {
	ttl := time.Until(until)
	if ttl <= 0 {
		return nil // already expired: verification rejects it anyway
	}
	if err := r.c.Set(ctx, r.revokedKey(tokenID), 1, ttl).Err(); err != nil {
		return fmt.Errorf("kv: revoke token: %w", err)
	}
	return nil
}

// IsRevoked reports whether the token id is in the revocation set.
func (r *Redis) IsRevoked(ctx context.Context, tokenID string) (bool, error) {
	n, err := r.c.Exists(ctx, r.revokedKey(tokenID)).Result()
	if err != nil {
		return false, fmt.Errorf("kv: check revocation: %w", err)
	}
	return n == 1, nil
}

// IsRevokedMany is IsRevoked for each of tokenIDs (revoked[i] answers
// tokenIDs[i]) in one round trip: an EXISTS per id in one pipeline.
func (r *Redis) IsRevokedMany(ctx context.Context, tokenIDs []string) ([]bool, error) {
	out := make([]bool, len(tokenIDs))
	if len(tokenIDs) == 0 {
		return out, nil
	}
	cmds := make([]*redis.IntCmd, len(tokenIDs))
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range tokenIDs {
			cmds[i] = p.Exists(ctx, r.revokedKey(id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kv: check %d revocations: %w", len(tokenIDs), err)
	}
	for i, c := range cmds {
		out[i] = c.Val() == 1
	}
	return out, nil
}

// Ping checks that Redis answers.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("kv: ping redis: %w", err)
	}
	return nil
}
