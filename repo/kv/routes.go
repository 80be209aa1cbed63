package kv

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Routes: which gateways hold a user's sockets, and from that, presence.
//
// A route is one (user, gateway) entry: the number of the user's sockets on
// that gateway and an expiry. Connect and Refresh set the expiry to now + the
// route TTL; an entry past its expiry is gone, whatever is still stored, so a
// crashed gateway's users go offline by themselves within one TTL, even where
// another gateway keeps the same user online. Disconnect does not extend it.
//
// first/last are computed atomically with the change, over live entries only:
// Connect reports first when the user had no live entry anywhere before it,
// Disconnect reports last when the user has none left after it. A Disconnect
// that finds nothing to decrement (its route already expired) still reports
// last when nothing is left, so an offline that expiry made silent is
// announced late rather than never.
//
// Refresh recreates a missing or expired entry with one socket: the gateway
// says the user has at least one socket there. That heals routes lost with a
// Redis restart, or expired while a gateway was slow, within one refresh
// interval. The price: a refresh that crosses the user's last Disconnect in
// flight recreates a route nobody will disconnect, which shows the user
// online until it expires one TTL later. The TTL bounds every such
// inconsistency.

// ErrInvalid is returned for a zero user id or an empty or oversized gateway id.
var ErrInvalid = errors.New("kv: invalid argument")

// maxGatewayID bounds a gateway id (bytes).
const maxGatewayID = 128

func checkRoute(userID int64, gatewayID string) error {
	if userID == 0 {
		return fmt.Errorf("%w: user id 0", ErrInvalid)
	}
	if gatewayID == "" || len(gatewayID) > maxGatewayID {
		return fmt.Errorf("%w: gateway id must be 1..%d bytes", ErrInvalid, maxGatewayID)
	}
	return nil
}

func checkRefresh(gatewayID string, userIDs []int64) error {
	if slices.Contains(userIDs, 0) {
		return fmt.Errorf("%w: user id 0", ErrInvalid)
	}
	return checkRoute(1, gatewayID) // the gateway id alone
}

// checkMany validates a batch of connects or disconnects: the gateway id, and no
// user id 0.
func checkMany(userIDs []int64, gatewayID string) error {
	return checkRefresh(gatewayID, userIDs) // the same rules as a refresh's
}

// route is one (user, gateway) entry of Memory.
type route struct {
	sockets int
	expires time.Time
}

// liveRoutes drops userID's expired routes and returns the rest, nil when
// none is left. m.mu must be held.
func (m *Memory) liveRoutes(userID int64, now time.Time) map[string]route {
	gws := m.routes[userID]
	for gw, r := range gws {
		if !r.expires.After(now) {
			delete(gws, gw)
		}
	}
	if len(gws) == 0 {
		delete(m.routes, userID)
		return nil
	}
	return gws
}

// routesFor is liveRoutes that creates the user's map when missing.
func (m *Memory) routesFor(userID int64, now time.Time) map[string]route {
	gws := m.liveRoutes(userID, now)
	if gws == nil {
		gws = make(map[string]route, 1)
		m.routes[userID] = gws
	}
	return gws
}

// sweepRoutes forgets the users whose routes all expired without anyone
// touching them again (a dead gateway's), once the map has doubled since the
// last sweep. m.mu must be held.
func (m *Memory) sweepRoutes(now time.Time) {
	if len(m.routes) < m.routeSweepAt {
		return
	}
	for uid := range m.routes {
		m.liveRoutes(uid, now)
	}
	m.routeSweepAt = max(1024, 2*len(m.routes))
}

// Connect counts one more socket of userID on gatewayID and renews that
// route. first reports that the user had no live route before.
func (m *Memory) Connect(_ context.Context, userID int64, gatewayID string) (first bool, err error) {
	if err := checkRoute(userID, gatewayID); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.sweepRoutes(now)
	return m.connect(userID, gatewayID, now), nil
}

// ConnectMany is Connect for each of userIDs in order (one entry per socket,
// so a user may repeat), under one lock acquisition: first[i] reports that
// userIDs[i]'s socket was the user's first, which a repeated user can only be
// at its first occurrence. An invalid entry fails the whole batch before
// anything changes.
func (m *Memory) ConnectMany(_ context.Context, userIDs []int64, gatewayID string) ([]bool, error) {
	if err := checkMany(userIDs, gatewayID); err != nil {
		return nil, err
	}
	out := make([]bool, len(userIDs))
	if len(userIDs) == 0 {
		return out, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.sweepRoutes(now)
	for i, uid := range userIDs {
		out[i] = m.connect(uid, gatewayID, now)
	}
	return out, nil
}

// connect counts one more socket and reports first. m.mu must be held.
func (m *Memory) connect(userID int64, gatewayID string, now time.Time) (first bool) {
	gws := m.routesFor(userID, now)
	first = len(gws) == 0
	r := gws[gatewayID]
	gws[gatewayID] = route{sockets: r.sockets + 1, expires: now.Add(m.routeTTL)}
	return first
}

// Disconnect counts one socket fewer of userID on gatewayID, never below
// zero; the route goes at zero. last reports that no live route is left.
func (m *Memory) Disconnect(_ context.Context, userID int64, gatewayID string) (last bool, err error) {
	if err := checkRoute(userID, gatewayID); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.disconnect(userID, gatewayID, m.now()), nil
}

// DisconnectMany is Disconnect for each of userIDs in order (one entry per
// closed socket, so a user may repeat), under one lock acquisition: last[i]
// reports that no live route of userIDs[i] is left after entries 0..i, which a
// repeated user is at the occurrence that removed its final socket, never
// before. An invalid entry fails the whole batch before anything changes.
func (m *Memory) DisconnectMany(_ context.Context, userIDs []int64, gatewayID string) ([]bool, error) {
	if err := checkMany(userIDs, gatewayID); err != nil {
		return nil, err
	}
	out := make([]bool, len(userIDs))
	if len(userIDs) == 0 {
		return out, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for i, uid := range userIDs {
		out[i] = m.disconnect(uid, gatewayID, now)
	}
	return out, nil
}

// disconnect counts one socket fewer and reports last. m.mu must be held.
func (m *Memory) disconnect(userID int64, gatewayID string, now time.Time) (last bool) {
	gws := m.liveRoutes(userID, now)
	if r, ok := gws[gatewayID]; ok {
		if r.sockets > 1 {
			r.sockets--
			gws[gatewayID] = r
		} else {
			delete(gws, gatewayID)
			if len(gws) == 0 {
				delete(m.routes, userID)
			}
		}
	}
	return len(gws) == 0
}

// Refresh renews the routes of userIDs on gatewayID, recreating missing or
// expired ones with one socket.
func (m *Memory) Refresh(_ context.Context, gatewayID string, userIDs []int64) error {
	return m.refresh(gatewayID, userIDs, nil)
}

// Sync is Refresh with the gateway's own socket count per user (counts[i] for
// userIDs[i]), which replaces the stored count.
func (m *Memory) Sync(_ context.Context, gatewayID string, userIDs []int64, counts []int32) error {
	if len(counts) != len(userIDs) {
		return fmt.Errorf("%w: %d counts for %d users", ErrInvalid, len(counts), len(userIDs))
	}
	return m.refresh(gatewayID, userIDs, counts)
}

func (m *Memory) refresh(gatewayID string, userIDs []int64, counts []int32) error {
	if err := checkRefresh(gatewayID, userIDs); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.sweepRoutes(now)
	for i, uid := range userIDs {
		gws := m.routesFor(uid, now)
		n := gws[gatewayID].sockets
		if counts != nil && counts[i] > 0 {
			n = int(counts[i])
		}
		gws[gatewayID] = route{sockets: max(n, 1), expires: now.Add(m.routeTTL)}
	}
	return nil
}

// Routes returns, for each of userIDs with a live route, its gateway ids in
// ascending order; users without one are absent.
func (m *Memory) Routes(_ context.Context, userIDs []int64) (map[int64][]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	out := make(map[int64][]string)
	for _, uid := range userIDs {
		var gws []string
		for gw, r := range m.routes[uid] {
			if r.expires.After(now) {
				gws = append(gws, gw)
			}
		}
		if len(gws) > 0 {
			slices.Sort(gws)
			out[uid] = gws
		}
	}
	return out, nil
}

// Redis keeps one hash per user, route:{uid}, with a field per gateway whose
// value is "sockets:expiryUnixMs". Redis 7.0 cannot expire hash fields
// (HEXPIRE is 7.4), so the scripts below treat a field past its expiry as
// absent and delete it whenever they pass by; the key itself expires when its
// newest field would, so a user nobody touches again leaves nothing behind.
// Times come from the Redis server (TIME), the one clock every repo process
// shares. Each script changes one key, so it works on Redis Cluster too.

// routeLib is the prelude of every route script.
//
//	now_ms()            server time in ms
//	parse(v)            sockets, expiry of a field value ("0, 0" if malformed)
//	sweep(key, gw, now) deletes expired fields; returns the live field count and
//	                    the sockets and expiry of field gw (0, 0 if not live)
//	extend(key, ttl)    makes key live at least ttl ms more
const routeLib = `
local function now_ms()
	local t = redis.call('TIME')
	return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function parse(v)
	local sep = string.find(v, ':', 1, true)
	if not sep then return 0, 0 end
	return tonumber(string.sub(v, 1, sep - 1)) or 0, tonumber(string.sub(v, sep + 1)) or 0
end
local function sweep(key, gw, now)
	local all = redis.call('HGETALL', key)
	local live, mine, mexp = 0, 0, 0
	for i = 1, #all, 2 do
		local n, exp = parse(all[i + 1])
		if n <= 0 or exp <= now then
			redis.call('HDEL', key, all[i])
		else
			live = live + 1
			if all[i] == gw then mine, mexp = n, exp end
		end
	end
	return live, mine, mexp
end
local function extend(key, ttl)
	if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
`

// KEYS[1] route key; ARGV[1] gateway id, ARGV[2] TTL in ms. Returns 1 when
// the user had no live route before.
var connectScript = redis.NewScript(routeLib + `
local now, ttl = now_ms(), tonumber(ARGV[2])
local live, mine = sweep(KEYS[1], ARGV[1], now)
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%d', mine + 1, now + ttl))
extend(KEYS[1], ttl)
if live == 0 then return 1 end
return 0
`)

// KEYS[1] route key; ARGV[1] gateway id. Returns 1 when no live route is left.
var disconnectScript = redis.NewScript(routeLib + `
local live, mine, mexp = sweep(KEYS[1], ARGV[1], now_ms())
if mine == 1 then
	redis.call('HDEL', KEYS[1], ARGV[1])
	live = live - 1
elseif mine > 1 then
	redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%d', mine - 1, mexp))
end
if live == 0 then return 1 end
return 0
`)

// KEYS[1] route key; ARGV[1] gateway id, ARGV[2] TTL in ms, ARGV[3] (optional) the
// gateway's own socket count, which replaces the stored one.
var refreshScript = redis.NewScript(routeLib + `
local now, ttl = now_ms(), tonumber(ARGV[2])
local n = 0
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
	local c, exp = parse(v)
	if exp > now then n = c end
end
if ARGV[3] and tonumber(ARGV[3]) and tonumber(ARGV[3]) > 0 then n = tonumber(ARGV[3]) end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%d', math.max(n, 1), now + ttl))
extend(KEYS[1], ttl)
return 1
`)

func (r *Redis) routeKey(userID int64) string {
	return r.prefix + "route:" + strconv.FormatInt(userID, 10)
}

func (r *Redis) ttlMS() int64 { return r.routeTTL.Milliseconds() }

// Connect counts one more socket of userID on gatewayID and renews that
// route. first reports that the user had no live route before.
func (r *Redis) Connect(ctx context.Context, userID int64, gatewayID string) (first bool, err error) {
	if err := checkRoute(userID, gatewayID); err != nil {
		return false, err
	}
	n, err := connectScript.Run(ctx, r.c, []string{r.routeKey(userID)}, gatewayID, r.ttlMS()).Int()
	if err != nil {
		return false, fmt.Errorf("kv: connect user %d on %s: %w", userID, gatewayID, err)
	}
	return n == 1, nil
}

// ConnectMany is Connect for each of userIDs in order (one entry per socket,
// so a user may repeat) in one round trip: the connect script once per entry
// in one pipeline. Redis runs a connection's commands in order, so first[i]
// means what a sequence of single Connects would have said. An invalid entry
// fails the whole batch before anything is sent.
func (r *Redis) ConnectMany(ctx context.Context, userIDs []int64, gatewayID string) ([]bool, error) {
	if err := checkMany(userIDs, gatewayID); err != nil {
		return nil, err
	}
	out, err := r.runMany(ctx, connectScript, userIDs, gatewayID, r.ttlMS())
	if err != nil {
		return nil, fmt.Errorf("kv: connect %d sockets on %s: %w", len(userIDs), gatewayID, err)
	}
	return out, nil
}

// runMany runs script once per entry of userIDs, in order, in one pipeline
// (KEYS[1] the entry's route key, ARGV gatewayID then args) and reports for
// each whether the script returned 1. The scripts it runs change counts, so
// none may run twice: when the script cache was empty (a restarted or new
// server), only the entries that found no script (and so changed nothing)
// are sent again.
func (r *Redis) runMany(ctx context.Context, script *redis.Script, userIDs []int64, gatewayID string, args ...any) ([]bool, error) {
	out := make([]bool, len(userIDs))
	if len(userIDs) == 0 {
		return out, nil
	}
	argv := append([]any{gatewayID}, args...)
	cmds := make([]*redis.Cmd, len(userIDs))
	send := func(idx []int) error {
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, i := range idx {
				cmds[i] = script.EvalSha(ctx, p, []string{r.routeKey(userIDs[i])}, argv...)
			}
			return nil
		})
		return err
	}
	all := make([]int, len(userIDs))
	for i := range all {
		all[i] = i
	}
	err := send(all)
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		var retry []int
		for i, c := range cmds {
			if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
				retry = append(retry, i)
			}
		}
		if err = script.Load(ctx, r.c).Err(); err == nil {
			err = send(retry)
		}
	}
	if err != nil {
		return nil, err
	}
	for i, c := range cmds {
		n, err := c.Int()
		if err != nil {
			return nil, fmt.Errorf("user %d: %w", userIDs[i], err)
		}
		out[i] = n == 1
	}
	return out, nil
}

// Disconnect counts one socket fewer of userID on gatewayID, never below
// zero; the route goes at zero. last reports that no live route is left.
func (r *Redis) Disconnect(ctx context.Context, userID int64, gatewayID string) (last bool, err error) {
	if err := checkRoute(userID, gatewayID); err != nil {
		return false, err
	}
	n, err := disconnectScript.Run(ctx, r.c, []string{r.routeKey(userID)}, gatewayID).Int()
	if err != nil {
		return false, fmt.Errorf("kv: disconnect user %d from %s: %w", userID, gatewayID, err)
	}
	return n == 1, nil
}

// DisconnectMany is Disconnect for each of userIDs in order (one entry per
// closed socket, so a user may repeat) in one round trip: the disconnect
// script once per entry in one pipeline. Redis runs a connection's commands in
// order, so last[i] means what a sequence of single Disconnects would have
// said. An invalid entry fails the whole batch before anything is sent.
func (r *Redis) DisconnectMany(ctx context.Context, userIDs []int64, gatewayID string) ([]bool, error) {
	if err := checkMany(userIDs, gatewayID); err != nil {
		return nil, err
	}
	out, err := r.runMany(ctx, disconnectScript, userIDs, gatewayID)
	if err != nil {
		return nil, fmt.Errorf("kv: disconnect %d sockets from %s: %w", len(userIDs), gatewayID, err)
	}
	return out, nil
}

// Refresh renews the routes of userIDs on gatewayID, recreating missing or
// expired ones with one socket, in one round trip.
func (r *Redis) Refresh(ctx context.Context, gatewayID string, userIDs []int64) error {
	return r.refresh(ctx, gatewayID, userIDs, nil)
}

// Sync is Refresh with the gateway's own socket count per user (counts[i] for
// userIDs[i]), which replaces the stored count: after Redis lost its routes, the
// gateways' heartbeats rebuild them exactly.
func (r *Redis) Sync(ctx context.Context, gatewayID string, userIDs []int64, counts []int32) error {
	if len(counts) != len(userIDs) {
		return fmt.Errorf("%w: %d counts for %d users", ErrInvalid, len(counts), len(userIDs))
	}
	return r.refresh(ctx, gatewayID, userIDs, counts)
}

func (r *Redis) refresh(ctx context.Context, gatewayID string, userIDs []int64, counts []int32) error {
	if err := checkRefresh(gatewayID, userIDs); err != nil {
		return err
	}
	if len(userIDs) == 0 {
		return nil
	}
	if counts != nil && !slices.ContainsFunc(counts, func(n int32) bool { return n <= 0 }) {
		return r.syncCounts(ctx, gatewayID, userIDs, counts)
	}
	ttl := r.ttlMS()
	pipe := func(p redis.Pipeliner) error {
		for i, uid := range userIDs {
			if counts != nil {
				refreshScript.EvalSha(ctx, p, []string{r.routeKey(uid)}, gatewayID, ttl, counts[i])
			} else {
				refreshScript.EvalSha(ctx, p, []string{r.routeKey(uid)}, gatewayID, ttl)
			}
		}
		return nil
	}
	_, err := r.c.Pipelined(ctx, pipe)
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		// The script cache is empty (a restarted or new server): load the
		// script and send the batch once more; refreshing twice is harmless.
		if err = refreshScript.Load(ctx, r.c).Err(); err == nil {
			_, err = r.c.Pipelined(ctx, pipe)
		}
	}
	if err != nil {
		return fmt.Errorf("kv: refresh %d routes on %s: %w", len(userIDs), gatewayID, err)
	}
	return nil
}

// syncCounts is a Sync whose counts are all known (> 0), which every gateway
// heartbeat is: the new value of each field depends on nothing stored, so no
// script has to read it first. Plain commands cost Redis a fraction of a script
// run, and heartbeats are most of the route traffic of idle sockets (a gateway
// renews every user it holds each period: 10,000 renewals/s at 300,000 sockets).
// Two round trips: the server's clock, then per user HSET of the field and the
// key's expiry, which may only grow (NX for a key HSET just created, GT for one
// that lives on), as extend does in the scripts. NX and GT need Redis 7.0 or
// later; an older server fails the heartbeat with a syntax error.
func (r *Redis) syncCounts(ctx context.Context, gatewayID string, userIDs []int64, counts []int32) error {
	now, err := r.c.Time(ctx).Result()
	if err != nil {
		return fmt.Errorf("kv: sync %d routes on %s: read server time: %w", len(userIDs), gatewayID, err)
	}
	expMS := now.UnixMilli() + r.ttlMS()
	suffix := ":" + strconv.FormatInt(expMS, 10)
	_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, uid := range userIDs {
			key := r.routeKey(uid)
			p.HSet(ctx, key, gatewayID, strconv.FormatInt(int64(counts[i]), 10)+suffix)
			p.Do(ctx, "PEXPIREAT", key, expMS, "NX")
			p.Do(ctx, "PEXPIREAT", key, expMS, "GT")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kv: sync %d routes on %s: %w", len(userIDs), gatewayID, err)
	}
	return nil
}

// Routes returns, for each of userIDs with a live route, its gateway ids in
// ascending order; users without one are absent. One round trip: the server
// time and every user's hash in one pipeline.
func (r *Redis) Routes(ctx context.Context, userIDs []int64) (map[int64][]string, error) {
	out := make(map[int64][]string)
	if len(userIDs) == 0 {
		return out, nil
	}
	var now *redis.TimeCmd
	hashes := make([]*redis.MapStringStringCmd, len(userIDs))
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		now = p.Time(ctx)
		for i, uid := range userIDs {
			hashes[i] = p.HGetAll(ctx, r.routeKey(uid))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kv: load routes of %d users: %w", len(userIDs), err)
	}
	nowMS := now.Val().UnixMilli()
	for i, uid := range userIDs {
		var gws []string
		for gw, v := range hashes[i].Val() {
			if n, exp, ok := parseRoute(v); ok && n > 0 && exp > nowMS {
				gws = append(gws, gw)
			}
		}
		if len(gws) > 0 {
			slices.Sort(gws)
			out[uid] = gws
		}
	}
	return out, nil
}

// parseRoute reads a "sockets:expiryUnixMs" field value.
func parseRoute(v string) (sockets, expiresMS int64, ok bool) {
	a, b, found := strings.Cut(v, ":")
	if !found {
		return 0, 0, false
	}
	n, err1 := strconv.ParseInt(a, 10, 64)
	exp, err2 := strconv.ParseInt(b, 10, 64)
	return n, exp, err1 == nil && err2 == nil
}
