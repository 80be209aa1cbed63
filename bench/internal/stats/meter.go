package stats

import (
	"sync"
	"sync/atomic"
	"time"
)

// epoch anchors Meter timestamps: storing nanoseconds since a monotonic
// reading lets a Meter keep its start in an atomic without losing the
// monotonic clock.
var epoch = time.Now()

// offset converts t to nanoseconds since epoch, never 0 so that 0 can mean
// "not started".
func offset(t time.Time) int64 { return max(int64(t.Sub(epoch)), 1) }

// Meter counts events (connects, messages, errors) from many goroutines and
// turns the count into a rate for progress lines. Add is an atomic add (plus
// one atomic load) so it can sit on hot paths; the rate bookkeeping is behind
// a mutex because only the progress printer calls it.
//
// The zero value is ready to use and starts its clock at the first Add or
// rate call, so a Meter can be a plain struct field; NewMeter starts the
// clock at construction instead. A Meter must not be copied after first use.
type Meter struct {
	total atomic.Int64
	start atomic.Int64 // offset of the first event or rate call; 0 = not started

	mu        sync.Mutex
	lastAt    int64 // offset where the current Rate window began; 0 = at start
	lastTotal int64
}

// NewMeter returns a Meter whose clock starts now.
func NewMeter() *Meter {
	m := new(Meter)
	m.start.Store(offset(time.Now()))
	return m
}

// startAt starts the clock at at unless it already runs, and returns the start.
func (m *Meter) startAt(at int64) int64 {
	if s := m.start.Load(); s != 0 {
		return s
	}
	if m.start.CompareAndSwap(0, at) {
		return at
	}
	return m.start.Load()
}

// Add counts n events.
func (m *Meter) Add(n int64) {
	m.total.Add(n)
	if m.start.Load() == 0 {
		m.startAt(offset(time.Now()))
	}
}

// Inc counts one event.
func (m *Meter) Inc() { m.Add(1) }

// Total is the number of events counted so far.
func (m *Meter) Total() int64 { return m.total.Load() }

// Rate returns events per second since the previous Rate call (or since the
// Meter started, for the first call) and starts a new window, so a progress
// line printed every interval shows the current throughput rather than a
// lifetime average that hides stalls.
func (m *Meter) Rate() float64 { return m.RateAt(time.Now()) }

// RateAt is Rate with an explicit clock reading, for callers that already
// hold one and for deterministic tests. A now that is not after the current
// window's beginning yields 0 and leaves the window open.
func (m *Meter) RateAt(now time.Time) float64 {
	at := offset(now)
	start := m.startAt(at)
	total := m.total.Load()
	m.mu.Lock()
	defer m.mu.Unlock()
	from := m.lastAt
	if from == 0 {
		from = start
	}
	if at <= from {
		return 0
	}
	n := total - m.lastTotal
	m.lastAt, m.lastTotal = at, total
	return float64(n) / time.Duration(at-from).Seconds()
}

// AverageRate returns events per second over the Meter's whole life, for the
// final result where a per-window rate would be meaningless.
func (m *Meter) AverageRate() float64 { return m.AverageRateAt(time.Now()) }

// AverageRateAt is AverageRate with an explicit clock reading; 0 if now is
// not after the Meter's start.
func (m *Meter) AverageRateAt(now time.Time) float64 {
	at := offset(now)
	start := m.startAt(at)
	if at <= start {
		return 0
	}
	return float64(m.total.Load()) / time.Duration(at-start).Seconds()
}
