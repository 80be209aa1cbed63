package stats

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Bucket layout. Values are kept in whole microseconds, rounded up, because
// the harness cares about network latencies and a 1 µs floor keeps the
// bucket count small. Below 2*subBuckets µs every microsecond has its own
// bucket; above that each power of two is split into subBuckets equal slices,
// so a bucket is never wider than 1/subBuckets (0.78%) of its lower bound.
const (
	subBucketBits = 7
	subBuckets    = 1 << subBucketBits // 128 slices per power of two
	linearBuckets = 2 * subBuckets     // exact 1 µs buckets below 256 µs
	maxBits       = 36                 // values below 2^36 µs (~19 h) are tracked
	numBuckets    = linearBuckets + (maxBits-subBucketBits-1)*subBuckets
	unit          = time.Microsecond
)

// HighestTrackable is the largest latency a Histogram can tell apart (about
// 19 hours). Longer durations are recorded as HighestTrackable rather than
// dropped, so that Count stays exact and a pathological stall still shows up
// at the top of the distribution.
const HighestTrackable = time.Duration(1<<maxBits-1) * unit

// encodingVersion guards against merging JSON written by a harness with a
// different bucket layout, which would silently mis-place every sample.
const encodingVersion = 1

// Histogram records latencies into log-linear buckets (HDR-style): memory is
// fixed (about 30 KiB) no matter how many samples arrive, and every quantile
// is reported with at most 1% relative error (plus the 1 µs resolution floor).
//
// All methods are safe for concurrent use. Record touches only atomics, so
// thousands of client goroutines can share one Histogram without a lock.
// Readers (Quantile, Snapshot, MarshalJSON) do not stop writers: a read that
// races with Record sees some but maybe not all of the in-flight samples,
// which is fine for progress output and exact once the writers have stopped.
//
// The zero value is an empty histogram ready to use. A Histogram must not be
// copied after first use (it contains atomics; go vet reports copies).
type Histogram struct {
	count atomic.Int64
	sum   atomic.Int64 // nanoseconds; overflows only after ~292 years of summed latency
	max   atomic.Int64 // nanoseconds
	// minInv holds math.MaxInt64-min so that the zero value means "no sample
	// yet" and the zero Histogram is usable without a constructor.
	minInv  atomic.Int64
	buckets [numBuckets]atomic.Int64
}

// NewHistogram returns an empty Histogram. It exists for symmetry with the
// other constructors; new(Histogram) is equivalent.
func NewHistogram() *Histogram { return new(Histogram) }

// bucketIndex maps a value in microseconds (< 2^maxBits) to its bucket.
func bucketIndex(us uint64) int {
	if us < linearBuckets {
		return int(us)
	}
	e := bits.Len64(us) - (subBucketBits + 1) // us>>e lands in [subBuckets, 2*subBuckets)
	m := us >> uint(e)
	return linearBuckets + (e-1)*subBuckets + int(m-subBuckets)
}

// bucketUpper is the largest microsecond value that maps to bucket i. Reporting
// the upper bound means quantiles never understate latency.
func bucketUpper(i int) uint64 {
	if i < linearBuckets {
		return uint64(i)
	}
	j := i - linearBuckets
	e := uint(j/subBuckets + 1)
	m := uint64(j%subBuckets + subBuckets)
	return (m+1)<<e - 1
}

// bucketLower is the smallest microsecond value that maps to bucket i.
func bucketLower(i int) uint64 {
	if i < linearBuckets {
		return uint64(i)
	}
	j := i - linearBuckets
	e := uint(j/subBuckets + 1)
	m := uint64(j%subBuckets + subBuckets)
	return m << e
}

// clamp folds out-of-range durations into the trackable range: negative
// values (a clock step between two time.Now calls) count as zero.
func clamp(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	if d > HighestTrackable {
		return HighestTrackable
	}
	return d
}

// Record adds one latency sample. It never allocates and never blocks.
// Durations below zero are recorded as zero and durations above
// HighestTrackable as HighestTrackable.
func (h *Histogram) Record(d time.Duration) {
	d = clamp(d)
	ns := int64(d)
	us := (uint64(ns) + uint64(unit) - 1) / uint64(unit)
	h.buckets[bucketIndex(us)].Add(1)
	h.count.Add(1)
	h.sum.Add(ns)
	h.observe(ns, ns)
}

// observe widens the min/max range; the loads first keep the common case (no
// new extreme) free of compare-and-swap traffic.
func (h *Histogram) observe(minNs, maxNs int64) {
	for {
		cur := h.max.Load()
		if maxNs <= cur || h.max.CompareAndSwap(cur, maxNs) {
			break
		}
	}
	inv := math.MaxInt64 - minNs
	for {
		cur := h.minInv.Load()
		if inv <= cur || h.minInv.CompareAndSwap(cur, inv) {
			break
		}
	}
}

// Count is the number of samples recorded.
func (h *Histogram) Count() int64 { return h.count.Load() }

// Max is the largest sample recorded (exact, not bucketed); 0 when empty.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) }

// Min is the smallest sample recorded (exact, not bucketed); 0 when empty.
func (h *Histogram) Min() time.Duration {
	inv := h.minInv.Load()
	if inv == 0 {
		return 0
	}
	return time.Duration(math.MaxInt64 - inv)
}

// Mean is the exact arithmetic mean of the samples (it is computed from a
// running sum, not from the buckets); 0 when empty.
func (h *Histogram) Mean() time.Duration {
	n := h.count.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / n)
}

// Quantile returns the latency below or at which a fraction q of the samples
// lie, as the upper bound of the bucket holding that rank, capped at the exact
// maximum so that Quantile(1) == Max(). q is clamped to [0, 1] (NaN counts as
// 0). An empty histogram reports 0.
func (h *Histogram) Quantile(q float64) time.Duration {
	var counts [numBuckets]int64
	total := h.load(&counts)
	return quantile(&counts, total, q, h.Max())
}

// load copies the buckets once so that several quantiles come from one
// consistent view; the total is summed from the copy rather than read from
// count so that rank and buckets agree even while writers are active.
func (h *Histogram) load(dst *[numBuckets]int64) int64 {
	var total int64
	for i := range h.buckets {
		c := h.buckets[i].Load()
		dst[i] = c
		total += c
	}
	return total
}

func quantile(counts *[numBuckets]int64, total int64, q float64, maxD time.Duration) time.Duration {
	if total == 0 {
		return 0
	}
	if !(q > 0) { // also catches NaN
		q = 0
	} else if q > 1 {
		q = 1
	}
	rank := int64(math.Ceil(q * float64(total)))
	if rank < 1 {
		rank = 1
	}
	var seen int64
	for i, c := range counts {
		seen += c
		if seen >= rank {
			d := time.Duration(bucketUpper(i)) * unit
			if maxD > 0 && d > maxD {
				d = maxD
			}
			return d
		}
	}
	return maxD // unreachable while total matches the buckets
}

// Merge adds every sample of other into h, as if they had been recorded into h
// directly; other is not modified. Merging a histogram into itself doubles it.
func (h *Histogram) Merge(other *Histogram) {
	if other == nil {
		return
	}
	var n int64
	for i := range other.buckets {
		if c := other.buckets[i].Load(); c != 0 {
			h.buckets[i].Add(c)
			n += c
		}
	}
	if n == 0 {
		return
	}
	h.count.Add(n)
	h.sum.Add(other.sum.Load())
	h.observe(int64(other.Min()), int64(other.Max()))
}

// Reset empties the histogram so one instance can be reused per reporting
// interval. Samples recorded concurrently with Reset may be partly kept.
func (h *Histogram) Reset() {
	for i := range h.buckets {
		h.buckets[i].Store(0)
	}
	h.count.Store(0)
	h.sum.Store(0)
	h.max.Store(0)
	h.minInv.Store(0)
}

// Summary is the JSON-friendly digest of a Histogram that goes into result
// files. Durations are float milliseconds because that is what humans and
// plotting tools read; the exact distribution travels as a Histogram.
type Summary struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

// String renders the summary for one-line progress output.
func (s Summary) String() string {
	return fmt.Sprintf("n=%d p50=%.2fms p90=%.2fms p99=%.2fms p99.9=%.2fms max=%.2fms mean=%.2fms",
		s.Count, s.P50, s.P90, s.P99, s.P999, s.Max, s.Mean)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Snapshot computes the usual percentiles from a single pass over the buckets.
func (h *Histogram) Snapshot() Summary {
	var counts [numBuckets]int64
	total := h.load(&counts)
	maxD := h.Max()
	return Summary{
		Count: total,
		P50:   ms(quantile(&counts, total, 0.50, maxD)),
		P90:   ms(quantile(&counts, total, 0.90, maxD)),
		P99:   ms(quantile(&counts, total, 0.99, maxD)),
		P999:  ms(quantile(&counts, total, 0.999, maxD)),
		Max:   ms(maxD),
		Mean:  ms(h.Mean()),
	}
}

// histogramJSON is the wire form used to ship a worker's histogram to the
// parent process. Buckets are sparse [index, count] pairs because a latency
// distribution typically occupies a few hundred of the ~3800 buckets.
type histogramJSON struct {
	Version    int        `json:"version"`
	UnitNs     int64      `json:"unit_ns"`
	SubBuckets int        `json:"sub_buckets"`
	NumBuckets int        `json:"num_buckets"`
	Count      int64      `json:"count"`
	SumNs      int64      `json:"sum_ns"`
	MinNs      int64      `json:"min_ns"`
	MaxNs      int64      `json:"max_ns"`
	Buckets    [][2]int64 `json:"buckets"`
	// Summary is informational for people reading the file; decoding ignores it.
	Summary *Summary `json:"summary,omitempty"`
}

// MarshalJSON encodes the full bucket contents, so that a parent process can
// rebuild the histogram and merge it with others; merging summaries instead
// would give wrong percentiles.
func (h *Histogram) MarshalJSON() ([]byte, error) {
	var counts [numBuckets]int64
	total := h.load(&counts)
	out := histogramJSON{
		Version:    encodingVersion,
		UnitNs:     int64(unit),
		SubBuckets: subBuckets,
		NumBuckets: numBuckets,
		Count:      total,
		SumNs:      h.sum.Load(),
		MinNs:      int64(h.Min()),
		MaxNs:      int64(h.Max()),
		Buckets:    [][2]int64{},
	}
	for i, c := range counts {
		if c != 0 {
			out.Buckets = append(out.Buckets, [2]int64{int64(i), c})
		}
	}
	s := h.Snapshot()
	out.Summary = &s
	return json.Marshal(out)
}

// UnmarshalJSON replaces h's contents with a histogram encoded by MarshalJSON.
// It rejects data from a different bucket layout or with inconsistent counts
// rather than producing silently wrong percentiles. It must not run
// concurrently with other methods on h.
func (h *Histogram) UnmarshalJSON(data []byte) error {
	var in histogramJSON
	if err := json.Unmarshal(data, &in); err != nil {
		return err
	}
	if in.Version != encodingVersion || in.UnitNs != int64(unit) ||
		in.SubBuckets != subBuckets || in.NumBuckets != numBuckets {
		return fmt.Errorf("stats: histogram layout mismatch (version %d, unit %dns, %d sub-buckets, %d buckets; want %d, %d, %d, %d)",
			in.Version, in.UnitNs, in.SubBuckets, in.NumBuckets,
			encodingVersion, int64(unit), subBuckets, numBuckets)
	}
	var counts [numBuckets]int64
	var total int64
	for _, b := range in.Buckets {
		i, c := b[0], b[1]
		if i < 0 || i >= numBuckets {
			return fmt.Errorf("stats: histogram bucket index %d out of range", i)
		}
		if c < 0 {
			return fmt.Errorf("stats: histogram bucket %d has negative count %d", i, c)
		}
		counts[i] += c
		total += c
	}
	if total != in.Count {
		return fmt.Errorf("stats: histogram count %d does not match bucket total %d", in.Count, total)
	}
	if total > 0 && (in.MinNs < 0 || in.MaxNs < in.MinNs || in.MaxNs > int64(HighestTrackable)) {
		return errors.New("stats: histogram min/max out of range")
	}
	h.Reset()
	for i, c := range counts {
		h.buckets[i].Store(c)
	}
	if total > 0 {
		h.count.Store(total)
		h.sum.Store(in.SumNs)
		h.observe(in.MinNs, in.MaxNs)
	}
	return nil
}
