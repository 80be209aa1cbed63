package kv_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gochat/gochat/repo/kv"
	"github.com/gochat/gochat/repo/repotest"
)

// router is the routes contract; both implementations run the same tests.
type router interface {
	Connect(ctx context.Context, userID int64, gatewayID string) (first bool, err error)
	ConnectMany(ctx context.Context, userIDs []int64, gatewayID string) (first []bool, err error)
	Disconnect(ctx context.Context, userID int64, gatewayID string) (last bool, err error)
	DisconnectMany(ctx context.Context, userIDs []int64, gatewayID string) (last []bool, err error)
	Refresh(ctx context.Context, gatewayID string, userIDs []int64) error
	Sync(ctx context.Context, gatewayID string, userIDs []int64, counts []int32) error
	Routes(ctx context.Context, userIDs []int64) (map[int64][]string, error)
}

var (
	_ router = (*kv.Memory)(nil)
	_ router = (*kv.Redis)(nil)
)

// fakeClock is Memory's clock in tests; safe for concurrent use.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// routeImpl is one implementation with a given route TTL and a way to let a
// little time pass: Memory moves its fake clock by a tenth of the TTL, Redis
// (whose scripts read the server's clock) sleeps a moment.
type routeImpl struct {
	name string
	r    router
	tick func()
}

func routeImpls(t *testing.T, ttl time.Duration) []routeImpl {
	t.Helper()
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	addr, prefix := repotest.RedisAddr(t)
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return []routeImpl{
		{"memory", kv.NewMemory(kv.WithRouteTTL(ttl), kv.WithClock(clock.Now)), func() { clock.Advance(ttl / 10) }},
		{"redis", kv.NewRedis(c, prefix, kv.WithRouteTTL(ttl)), func() { time.Sleep(25 * time.Millisecond) }},
	}
}

// eventually ticks until cond holds, for at most 15 s of wall time.
func (impl routeImpl) eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not the case after 15s", what)
		}
		impl.tick()
	}
}

func mustConnect(t *testing.T, r router, uid int64, gw string, wantFirst bool) {
	t.Helper()
	first, err := r.Connect(t.Context(), uid, gw)
	if err != nil || first != wantFirst {
		t.Fatalf("Connect(%d, %s) = %v, %v; want first = %v", uid, gw, first, err, wantFirst)
	}
}

func mustDisconnect(t *testing.T, r router, uid int64, gw string, wantLast bool) {
	t.Helper()
	last, err := r.Disconnect(t.Context(), uid, gw)
	if err != nil || last != wantLast {
		t.Fatalf("Disconnect(%d, %s) = %v, %v; want last = %v", uid, gw, last, err, wantLast)
	}
}

func mustRoutes(t *testing.T, r router, uids ...int64) map[int64][]string {
	t.Helper()
	got, err := r.Routes(t.Context(), uids)
	if err != nil {
		t.Fatalf("Routes(%v): %v", uids, err)
	}
	return got
}

func wantRoutes(t *testing.T, r router, uid int64, want ...string) {
	t.Helper()
	got := mustRoutes(t, r, uid)
	gws, online := got[uid]
	if len(want) == 0 {
		if online || len(got) != 0 {
			t.Fatalf("Routes(%d) = %v, want offline (absent)", uid, got)
		}
		return
	}
	if !slices.Equal(gws, want) {
		t.Fatalf("Routes(%d) = %v, want %v", uid, gws, want)
	}
}

func TestRoutesFirstLast(t *testing.T) {
	for _, impl := range routeImpls(t, time.Hour) {
		t.Run(impl.name, func(t *testing.T) {
			r := impl.r
			const u, other = 1, 2
			wantRoutes(t, r, u)
			mustConnect(t, r, u, "gw-a", true)
			mustConnect(t, r, u, "gw-a", false) // second tab
			mustConnect(t, r, u, "gw-b", false) // another device elsewhere
			mustConnect(t, r, other, "gw-a", true)
			wantRoutes(t, r, u, "gw-a", "gw-b")

			mustDisconnect(t, r, u, "gw-a", false)
			wantRoutes(t, r, u, "gw-a", "gw-b")
			mustDisconnect(t, r, u, "gw-a", false) // gw-a's count reached 0: its route goes
			wantRoutes(t, r, u, "gw-b")
			mustDisconnect(t, r, u, "gw-b", true)
			wantRoutes(t, r, u)
			wantRoutes(t, r, other, "gw-a")

			// More disconnects than connects never drive a count below
			// zero: the next connect is first again and one disconnect
			// is last again.
			mustDisconnect(t, r, u, "gw-b", true)
			mustDisconnect(t, r, u, "gw-c", true)
			mustConnect(t, r, u, "gw-b", true)
			mustDisconnect(t, r, u, "gw-b", true)
			wantRoutes(t, r, u)
		})
	}
}

// TestRoutesConnectMany: a batch is a sequence of single Connects — a user
// repeated in it is first only at its first occurrence, a user already online
// is never first — and it leaves the same socket counts behind.
func TestRoutesConnectMany(t *testing.T) {
	for _, impl := range routeImpls(t, time.Hour) {
		t.Run(impl.name, func(t *testing.T) {
			r := impl.r
			ctx := t.Context()
			if got, err := r.ConnectMany(ctx, nil, "gw-a"); err != nil || len(got) != 0 {
				t.Fatalf("ConnectMany(empty) = %v, %v; want empty", got, err)
			}
			mustConnect(t, r, 3, "gw-b", true) // online elsewhere before the batch
			uids := []int64{1, 2, 1, 3, 2, 1, 4}
			got, err := r.ConnectMany(ctx, uids, "gw-a")
			if err != nil {
				t.Fatal(err)
			}
			want := []bool{true, true, false, false, false, false, true}
			if !slices.Equal(got, want) {
				t.Fatalf("ConnectMany(%v) = %v, want %v", uids, got, want)
			}
			wantRoutes(t, r, 1, "gw-a")
			wantRoutes(t, r, 3, "gw-a", "gw-b")
			// User 1 has three sockets on gw-a: the third disconnect is the last.
			mustDisconnect(t, r, 1, "gw-a", false)
			mustDisconnect(t, r, 1, "gw-a", false)
			mustDisconnect(t, r, 1, "gw-a", true)
			mustDisconnect(t, r, 2, "gw-a", false)
			mustDisconnect(t, r, 2, "gw-a", true)
			// A second batch after the first: nobody new except the one who left.
			got, err = r.ConnectMany(ctx, []int64{4, 2}, "gw-a")
			if err != nil || !slices.Equal(got, []bool{false, true}) {
				t.Fatalf("second ConnectMany = %v, %v; want [false true]", got, err)
			}
		})
	}
}

// TestRoutesDisconnectMany: a batch is a sequence of single Disconnects — a
// user repeated in it is last only once its final socket goes, a user with a
// route on another gateway is never last — and it leaves the same routes
// behind.
func TestRoutesDisconnectMany(t *testing.T) {
	for _, impl := range routeImpls(t, time.Hour) {
		t.Run(impl.name, func(t *testing.T) {
			r := impl.r
			ctx := t.Context()
			if got, err := r.DisconnectMany(ctx, nil, "gw-a"); err != nil || len(got) != 0 {
				t.Fatalf("DisconnectMany(empty) = %v, %v; want empty", got, err)
			}
			// User 1 has two sockets on gw-a, 2 one, 3 one on gw-a and one on gw-b.
			if _, err := r.ConnectMany(ctx, []int64{1, 2, 1, 3}, "gw-a"); err != nil {
				t.Fatal(err)
			}
			mustConnect(t, r, 3, "gw-b", false)
			uids := []int64{1, 3, 2, 1}
			got, err := r.DisconnectMany(ctx, uids, "gw-a")
			if err != nil {
				t.Fatal(err)
			}
			want := []bool{false, false, true, true}
			if !slices.Equal(got, want) {
				t.Fatalf("DisconnectMany(%v) = %v, want %v", uids, got, want)
			}
			wantRoutes(t, r, 1)
			wantRoutes(t, r, 2)
			wantRoutes(t, r, 3, "gw-b")
			// A user whose sockets on gw-a are all gone but who is still on gw-b
			// stays online, however often gw-a reports it.
			got, err = r.DisconnectMany(ctx, []int64{3, 3}, "gw-a")
			if err != nil || !slices.Equal(got, []bool{false, false}) {
				t.Fatalf("DisconnectMany([3 3]) on gw-a = %v, %v; want [false false]", got, err)
			}
			wantRoutes(t, r, 3, "gw-b")
			// An invalid batch changes nothing.
			mustConnect(t, r, 5, "gw-a", true)
			if _, err := r.DisconnectMany(ctx, []int64{5, 0}, "gw-a"); !errors.Is(err, kv.ErrInvalid) {
				t.Fatalf("DisconnectMany([5 0]) err = %v, want ErrInvalid", err)
			}
			wantRoutes(t, r, 5, "gw-a")
		})
	}
}

// TestRoutesDisconnectManyAgrees: a batch answers, flag for flag, what single
// Disconnects in the same order answer on the same routes (over-disconnects and
// users online elsewhere included), and leaves the same routes behind.
func TestRoutesDisconnectManyAgrees(t *testing.T) {
	for _, impl := range routeImpls(t, time.Hour) {
		t.Run(impl.name, func(t *testing.T) {
			r := impl.r
			ctx := t.Context()
			// Two copies of the same routes: users 100+k for the batch, 200+k
			// for the single calls. User k has k%3 sockets on gw-a, and k%2
			// on gw-b.
			const users = 8
			for _, base := range []int64{100, 200} {
				for k := range int64(users) {
					for range k % 3 {
						if _, err := r.Connect(ctx, base+k, "gw-a"); err != nil {
							t.Fatal(err)
						}
					}
					if k%2 == 1 {
						if _, err := r.Connect(ctx, base+k, "gw-b"); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			var seq []int64 // offsets 0..users-1, each several times
			x := uint32(7)
			for range 40 {
				x = x*1103515245 + 12345
				seq = append(seq, int64(x>>16)%users)
			}
			batch := make([]int64, len(seq))
			for i, k := range seq {
				batch[i] = 100 + k
			}
			got, err := r.DisconnectMany(ctx, batch, "gw-a")
			if err != nil {
				t.Fatal(err)
			}
			want := make([]bool, len(seq))
			for i, k := range seq {
				if want[i], err = r.Disconnect(ctx, 200+k, "gw-a"); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("DisconnectMany(%v) = %v; single Disconnects said %v", batch, got, want)
			}
			for k := range int64(users) {
				a, b := mustRoutes(t, r, 100+k)[100+k], mustRoutes(t, r, 200+k)[200+k]
				if !slices.Equal(a, b) {
					t.Errorf("user offset %d: routes after the batch %v, after single calls %v", k, a, b)
				}
			}
		})
	}
}

func TestRoutesRefreshRecreates(t *testing.T) {
	for _, impl := range routeImpls(t, time.Hour) {
		t.Run(impl.name, func(t *testing.T) {
			r := impl.r
			ctx := t.Context()
			// A gateway reports users whose routes were lost (a Redis
			// restart): they come back with one socket each.
			if err := r.Refresh(ctx, "gw-a", []int64{1, 2}); err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			wantRoutes(t, r, 1, "gw-a")
			mustDisconnect(t, r, 1, "gw-a", true)
			// An existing route keeps its count.
			mustConnect(t, r, 2, "gw-a", false)
			if err := r.Refresh(ctx, "gw-a", []int64{2}); err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			mustDisconnect(t, r, 2, "gw-a", false)
			mustDisconnect(t, r, 2, "gw-a", true)
			if err := r.Refresh(ctx, "gw-a", nil); err != nil {
				t.Errorf("Refresh(no users): %v", err)
			}
		})
	}
}

// Sync rebuilds exact counts from a gateway's own table: after the routes were
// lost, a user with two sockets there needs two disconnects to go offline.
func TestRoutesSyncSetsCounts(t *testing.T) {
	for _, impl := range routeImpls(t, time.Hour) {
		t.Run(impl.name, func(t *testing.T) {
			r := impl.r
			ctx := t.Context()
			if err := r.Sync(ctx, "gw-a", []int64{1, 2}, []int32{2, 1}); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			wantRoutes(t, r, 1, "gw-a")
			mustDisconnect(t, r, 1, "gw-a", false)
			mustDisconnect(t, r, 1, "gw-a", true)
			// A stored count is replaced, not added to.
			mustConnect(t, r, 2, "gw-a", false)
			mustConnect(t, r, 2, "gw-a", false)
			if err := r.Sync(ctx, "gw-a", []int64{2}, []int32{1}); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			mustDisconnect(t, r, 2, "gw-a", true)
			// A count the gateway does not know (0) keeps the stored one, or
			// makes one socket of a missing route, beside counts that replace.
			mustConnect(t, r, 4, "gw-a", true)
			mustConnect(t, r, 4, "gw-a", false)
			if err := r.Sync(ctx, "gw-a", []int64{4, 5, 6}, []int32{0, 0, 3}); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			mustDisconnect(t, r, 4, "gw-a", false)
			mustDisconnect(t, r, 4, "gw-a", true)
			mustDisconnect(t, r, 5, "gw-a", true)
			mustDisconnect(t, r, 6, "gw-a", false)
			mustDisconnect(t, r, 6, "gw-a", false)
			mustDisconnect(t, r, 6, "gw-a", true)
			if err := r.Sync(ctx, "gw-a", []int64{3}, nil); !errors.Is(err, kv.ErrInvalid) {
				t.Fatalf("Sync with mismatched counts: %v, want ErrInvalid", err)
			}
		})
	}
}

func TestRoutesBulk(t *testing.T) {
	for _, impl := range routeImpls(t, time.Hour) {
		t.Run(impl.name, func(t *testing.T) {
			r := impl.r
			const n = 300
			all := make([]int64, 0, n+1)
			want := map[int64][]string{}
			var evens []int64
			for uid := int64(1); uid <= n; uid++ {
				all = append(all, uid)
				switch {
				case uid%3 == 0:
					mustConnect(t, r, uid, "gw-b", true)
					mustConnect(t, r, uid, "gw-a", false)
					want[uid] = []string{"gw-a", "gw-b"}
				case uid%3 == 1:
					evens = append(evens, uid)
					want[uid] = []string{"gw-c"}
				}
			}
			if err := r.Refresh(t.Context(), "gw-c", evens); err != nil {
				t.Fatalf("Refresh(%d users): %v", len(evens), err)
			}
			all = append(all, 999_999) // never seen
			if got := mustRoutes(t, r, all...); !maps.EqualFunc(got, want, slices.Equal) {
				t.Errorf("Routes(%d users) = %d online, want %d: %v", len(all), len(got), len(want), got)
			}
			if got := mustRoutes(t, r); len(got) != 0 {
				t.Errorf("Routes(none) = %v, want empty", got)
			}
		})
	}
}

// TestRoutesExpiry: a gateway that stops refreshing loses its routes after
// the TTL even while another gateway keeps the same user online, and expired
// routes count for nothing, even while still stored.
func TestRoutesExpiry(t *testing.T) {
	t.Parallel() // mostly waiting for Redis's clock
	for _, impl := range routeImpls(t, time.Second) {
		t.Run(impl.name, func(t *testing.T) {
			r := impl.r
			// u, w and x are online on both gateways, x with two sockets on
			// the one that dies; v only there.
			const u, v, w, x = 7, 8, 9, 10
			mustConnect(t, r, x, "gw-dead", true)
			mustConnect(t, r, x, "gw-dead", false)
			mustConnect(t, r, x, "gw-live", false)
			mustConnect(t, r, u, "gw-dead", true)
			mustConnect(t, r, u, "gw-live", false)
			mustConnect(t, r, v, "gw-dead", true)
			mustConnect(t, r, w, "gw-dead", true)
			mustConnect(t, r, w, "gw-live", false)
			wantRoutes(t, r, u, "gw-dead", "gw-live")

			impl.eventually(t, "gw-dead's routes expire", func() bool {
				if err := r.Refresh(t.Context(), "gw-live", []int64{u, w, x}); err != nil {
					t.Fatalf("Refresh: %v", err)
				}
				got := mustRoutes(t, r, u, v, w)
				if !slices.Contains(got[u], "gw-live") || !slices.Contains(got[w], "gw-live") {
					t.Fatalf("refreshed route gone: Routes = %v", got)
				}
				_, vOnline := got[v]
				return slices.Equal(got[u], []string{"gw-live"}) && !vOnline
			})
			wantRoutes(t, r, x, "gw-live")
			// The expired routes are still stored in places; they must not
			// count. v's next socket is their first, w's live socket closing
			// is their last.
			mustConnect(t, r, v, "gw-live", true)
			mustDisconnect(t, r, w, "gw-live", true)
			// The gateway was only slow and refreshes x again: the route
			// comes back with one socket, not the two it expired with.
			if err := r.Refresh(t.Context(), "gw-dead", []int64{x}); err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			wantRoutes(t, r, x, "gw-dead", "gw-live")
			mustDisconnect(t, r, x, "gw-dead", false)
			wantRoutes(t, r, x, "gw-live")
			// A connect on the dead gateway's id starts from zero, not from
			// its expired count.
			mustConnect(t, r, u, "gw-dead", false)
			mustDisconnect(t, r, u, "gw-dead", false)
			wantRoutes(t, r, u, "gw-live")
			// A late disconnect from the dead gateway finds nothing to count
			// down, and u is still online elsewhere.
			mustDisconnect(t, r, u, "gw-dead", false)
			wantRoutes(t, r, u, "gw-live")

			impl.eventually(t, "the unrefreshed routes expire", func() bool {
				return len(mustRoutes(t, r, u, v, w, x)) == 0
			})
			mustConnect(t, r, u, "gw-live", true) // online again: first
			mustDisconnect(t, r, u, "gw-live", true)
		})
	}
}

// TestRoutesConcurrent: many sockets of one user opening and closing at once
// on two gateways keep exact counts, one first and one last.
func TestRoutesConcurrent(t *testing.T) {
	for _, impl := range routeImpls(t, time.Hour) {
		t.Run(impl.name, func(t *testing.T) {
			r := impl.r
			ctx := t.Context()
			const u, workers, each = 42, 20, 10
			gw := func(w int) string { return []string{"gw-a", "gw-b"}[w%2] }
			var firsts, lasts atomic.Int64
			errs := make(chan error, 2*workers*each)
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for range each {
						first, err := r.Connect(ctx, u, gw(w))
						if err != nil {
							errs <- err
							return
						}
						if first {
							firsts.Add(1)
						}
					}
				})
			}
			wg.Wait()
			// 100 sockets on each gateway; close all of gw-a's and all but
			// one of gw-b's.
			for w := range workers {
				n := each
				if w == 1 {
					n--
				}
				wg.Go(func() {
					for range n {
						last, err := r.Disconnect(ctx, u, gw(w))
						if err != nil {
							errs <- err
							return
						}
						if last {
							lasts.Add(1)
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if firsts.Load() != 1 || lasts.Load() != 0 {
				t.Fatalf("%d firsts and %d lasts, want 1 and 0", firsts.Load(), lasts.Load())
			}
			wantRoutes(t, r, u, "gw-b")
			mustDisconnect(t, r, u, "gw-b", true)
			wantRoutes(t, r, u)
		})
	}
}

func TestRoutesInvalid(t *testing.T) {
	for _, impl := range routeImpls(t, time.Hour) {
		t.Run(impl.name, func(t *testing.T) {
			r := impl.r
			ctx := t.Context()
			long := string(make([]byte, 129))
			checks := []struct {
				name string
				err  error
			}{
				{"connect user 0", second(r.Connect(ctx, 0, "gw"))},
				{"connect empty gateway", second(r.Connect(ctx, 1, ""))},
				{"connect long gateway", second(r.Connect(ctx, 1, long))},
				{"disconnect empty gateway", second(r.Disconnect(ctx, 1, ""))},
				{"refresh empty gateway", r.Refresh(ctx, "", []int64{1})},
				{"refresh user 0", r.Refresh(ctx, "gw", []int64{1, 0})},
				{"connect many user 0", second(r.ConnectMany(ctx, []int64{1, 0}, "gw"))}, // nothing applied: 1 stays offline
				{"connect many empty gateway", second(r.ConnectMany(ctx, []int64{1}, ""))},
				{"disconnect many user 0", second(r.DisconnectMany(ctx, []int64{1, 0}, "gw"))},
				{"disconnect many empty gateway", second(r.DisconnectMany(ctx, []int64{1}, ""))},
				{"disconnect many long gateway", second(r.DisconnectMany(ctx, []int64{1}, long))},
			}
			for _, c := range checks {
				if !errors.Is(c.err, kv.ErrInvalid) {
					t.Errorf("%s: err = %v, want ErrInvalid", c.name, c.err)
				}
			}
			wantRoutes(t, r, 1)
		})
	}
}

func second[T any](_ T, err error) error { return err }

// TestMemoryRouteTTLBoundaries pins the expiry arithmetic with the fake clock:
// a route lives exactly TTL after its last Connect or Refresh; Disconnect
// does not extend it.
func TestMemoryRouteTTLBoundaries(t *testing.T) {
	const ttl = 90 * time.Second
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	m := kv.NewMemory(kv.WithClock(clock.Now)) // default TTL
	mustConnect(t, m, 1, "gw", true)
	mustConnect(t, m, 1, "gw", false)
	clock.Advance(ttl - time.Millisecond)
	wantRoutes(t, m, 1, "gw")
	mustDisconnect(t, m, 1, "gw", false) // one socket left; expiry unchanged
	clock.Advance(time.Millisecond)
	wantRoutes(t, m, 1)

	mustConnect(t, m, 1, "gw", true)
	clock.Advance(ttl - time.Millisecond)
	if err := m.Refresh(t.Context(), "gw", []int64{1}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(ttl - time.Millisecond)
	wantRoutes(t, m, 1, "gw")
	clock.Advance(time.Millisecond)
	wantRoutes(t, m, 1)
}

// TestMemoryForgetsExpiredUsers: users whose gateway died and who never come
// back do not accumulate.
func TestMemoryForgetsExpiredUsers(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	m := kv.NewMemory(kv.WithRouteTTL(time.Minute), kv.WithClock(clock.Now))
	for uid := int64(1); uid <= 5000; uid++ {
		mustConnect(t, m, uid, "gw-dead", true)
	}
	clock.Advance(time.Hour)
	for uid := int64(10_001); uid <= 15_000; uid++ {
		mustConnect(t, m, uid, "gw-live", true)
	}
	if n := kv.MemoryRouteUsers(m); n > 5000 {
		t.Errorf("%d users held, want at most the 5000 live ones", n)
	}
	wantRoutes(t, m, 15_000, "gw-live")
}

// redisRoutes is a Redis router with route TTL ttl under a prefix of its own, and
// a client to look at its keys.
func redisRoutes(t *testing.T, ttl time.Duration) (*redis.Client, *kv.Redis, string) {
	t.Helper()
	addr, prefix := repotest.RedisAddr(t)
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c, kv.NewRedis(c, prefix, kv.WithRouteTTL(ttl)), prefix
}

// TestRedisRouteKeys: routes live under the prefix, the key carries a TTL,
// and a user nobody touches again leaves no key behind.
func TestRedisRouteKeys(t *testing.T) {
	t.Parallel() // mostly waiting for Redis's clock
	const ttl = time.Second
	c, r, prefix := redisRoutes(t, ttl)
	ctx := t.Context()
	const u = 31337
	mustConnect(t, r, u, "gw", true)

	keys, err := c.Keys(ctx, fmt.Sprintf("*route:%d", u)).Result()
	if err != nil || !slices.Equal(keys, []string{fmt.Sprintf("%sroute:%d", prefix, u)}) {
		t.Fatalf("route keys = %v, %v; want exactly one under %q", keys, err, prefix)
	}
	if pttl, err := c.PTTL(ctx, keys[0]).Result(); err != nil || pttl <= 0 || pttl > ttl {
		t.Errorf("PTTL = %v, %v; want in (0, %v]", pttl, err, ttl)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, err := c.Exists(ctx, keys[0]).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("route key still exists 15s after its TTL")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRedisSyncKeyExpiry: a heartbeat (Sync with every count known, which
// runs no script) gives a key it creates the route TTL, lengthens a shorter
// one, never shortens a longer one, and stores what the scripts read.
func TestRedisSyncKeyExpiry(t *testing.T) {
	const ttl = time.Minute
	c, r, prefix := redisRoutes(t, ttl)
	ctx := t.Context()
	key := func(uid int64) string { return fmt.Sprintf("%sroute:%d", prefix, uid) }
	pttl := func(uid int64) time.Duration {
		t.Helper()
		d, err := c.PTTL(ctx, key(uid)).Result()
		if err != nil {
			t.Fatalf("PTTL: %v", err)
		}
		return d
	}

	// 1: no key yet; 2: a key about to expire; 3: a key that outlives the TTL.
	mustConnect(t, r, 2, "gw-b", true)
	mustConnect(t, r, 3, "gw-b", true)
	if err := c.PExpire(ctx, key(2), 500*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.PExpire(ctx, key(3), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(ctx, "gw-a", []int64{1, 2, 3}, []int32{2, 1, 1}); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	for _, uid := range []int64{1, 2} {
		if d := pttl(uid); d <= ttl-10*time.Second || d > ttl {
			t.Errorf("user %d: PTTL after Sync = %v, want about %v", uid, d, ttl)
		}
	}
	if d := pttl(3); d <= ttl {
		t.Errorf("user 3: PTTL after Sync = %v, want the longer hour kept", d)
	}
	v, err := c.HGet(ctx, key(1), "gw-a").Result()
	if err != nil {
		t.Fatalf("HGET: %v", err)
	}
	n, exp, ok := strings.Cut(v, ":")
	expMS, perr := strconv.ParseInt(exp, 10, 64)
	if !ok || n != "2" || perr != nil || time.Until(time.UnixMilli(expMS)) <= ttl-10*time.Second {
		t.Errorf("field = %q, want \"2:<now + %v in ms>\"", v, ttl)
	}
	wantRoutes(t, r, 2, "gw-a", "gw-b")
	mustDisconnect(t, r, 1, "gw-a", false)
	mustDisconnect(t, r, 1, "gw-a", true)
}

// TestRedisRoutesSurviveScriptFlush: a Redis that lost its script cache (a
// restart, a failover) still serves every call, the pipelined Refresh
// included.
func TestRedisRoutesSurviveScriptFlush(t *testing.T) {
	addr, prefix := repotest.RedisAddr(t)
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	r := kv.NewRedis(c, prefix)
	ctx := t.Context()
	for _, step := range []func(){
		func() { mustConnect(t, r, 1, "gw", true) },
		func() {
			if err := r.Refresh(ctx, "gw", []int64{1, 2}); err != nil {
				t.Fatalf("Refresh after SCRIPT FLUSH: %v", err)
			}
		},
		func() { mustDisconnect(t, r, 2, "gw", true) },
		func() {
			// Connects must not run twice: only the entries that found no
			// script are sent again, so the counts stay exact.
			got, err := r.ConnectMany(ctx, []int64{3, 3, 1}, "gw")
			if err != nil || !slices.Equal(got, []bool{true, false, false}) {
				t.Fatalf("ConnectMany after SCRIPT FLUSH = %v, %v; want [true false false]", got, err)
			}
		},
		func() {
			// Nor may disconnects: user 1 has two sockets, user 3 two.
			got, err := r.DisconnectMany(ctx, []int64{3, 1, 3}, "gw")
			if err != nil || !slices.Equal(got, []bool{false, false, true}) {
				t.Fatalf("DisconnectMany after SCRIPT FLUSH = %v, %v; want [false false true]", got, err)
			}
		},
	} {
		if err := c.ScriptFlush(ctx).Err(); err != nil {
			t.Fatalf("SCRIPT FLUSH: %v", err)
		}
		step()
	}
	wantRoutes(t, r, 1, "gw")
	wantRoutes(t, r, 3)
	mustDisconnect(t, r, 1, "gw", true)
}
