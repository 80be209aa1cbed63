package kv

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Job cursors record how far a resumable job (task's large-group fan-out) got, so a
// job redelivered after a crash or a rebalance continues where it stopped instead of
// pushing to everyone again. They expire after JobTTL: a job older than that is long
// finished or abandoned.

// JobTTL is how long a job cursor is kept.
const JobTTL = 10 * time.Minute

func checkJob(id string) error {
	if id == "" || len(id) > 200 {
		return fmt.Errorf("%w: job id must be 1..200 bytes", ErrInvalid)
	}
	return nil
}

type jobCursor struct {
	cursor  int64
	done    bool
	expires time.Time
}

// JobCursor returns a job's saved progress (zero values for an unknown job).
func (m *Memory) JobCursor(_ context.Context, id string) (int64, bool, error) {
	if err := checkJob(id); err != nil {
		return 0, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.jobs[id]
	if !ok || !c.expires.After(m.now()) {
		return 0, false, nil
	}
	return c.cursor, c.done, nil
}

// SaveJobCursor records a job's progress; it never moves a cursor backwards.
func (m *Memory) SaveJobCursor(_ context.Context, id string, cursor int64, done bool) error {
	if err := checkJob(id); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if m.jobs == nil {
		m.jobs = make(map[string]jobCursor)
	}
	if len(m.jobs) >= 4096 {
		for k, c := range m.jobs {
			if !c.expires.After(now) {
				delete(m.jobs, k)
			}
		}
	}
	prev := m.jobs[id]
	if prev.expires.After(now) {
		cursor, done = max(cursor, prev.cursor), done || prev.done
	}
	m.jobs[id] = jobCursor{cursor: cursor, done: done, expires: now.Add(JobTTL)}
	return nil
}

func (r *Redis) jobKey(id string) string { return r.prefix + "job:" + id }

// JobCursor returns a job's saved progress (zero values for an unknown job).
func (r *Redis) JobCursor(ctx context.Context, id string) (int64, bool, error) {
	if err := checkJob(id); err != nil {
		return 0, false, err
	}
	v, err := r.c.Get(ctx, r.jobKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("kv: load job cursor: %w", err)
	}
	cur, done, _ := strings.Cut(v, ":")
	n, err := strconv.ParseInt(cur, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("kv: job cursor %q: %w", v, err)
	}
	return n, done == "done", nil
}

// KEYS[1] job key; ARGV[1] cursor, ARGV[2] "done" or "", ARGV[3] TTL ms. Keeps the
// larger cursor and a done flag once set.
var saveJobScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
local cur, done = tonumber(ARGV[1]), ARGV[2]
if v then
	local sep = string.find(v, ':', 1, true)
	local old = tonumber(string.sub(v, 1, sep - 1)) or 0
	if old > cur then cur = old end
	if string.sub(v, sep + 1) == 'done' then done = 'done' end
end
redis.call('SET', KEYS[1], string.format('%d:%s', cur, done), 'PX', tonumber(ARGV[3]))
return 1
`)

// SaveJobCursor records a job's progress; it never moves a cursor backwards.
func (r *Redis) SaveJobCursor(ctx context.Context, id string, cursor int64, done bool) error {
	if err := checkJob(id); err != nil {
		return err
	}
	flag := ""
	if done {
		flag = "done"
	}
	if err := saveJobScript.Run(ctx, r.c, []string{r.jobKey(id)}, cursor, flag, JobTTL.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("kv: save job cursor: %w", err)
	}
	return nil
}
