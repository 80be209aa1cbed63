package stats

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// within reports whether got is within rel (relative) of want.
func within(got, want time.Duration, rel float64) bool {
	return math.Abs(float64(got-want)) <= rel*float64(want)
}

func TestBucketLayout(t *testing.T) {
	// Every bucket must be contiguous with the next and no wider than 1% of
	// its lower bound above the linear range; otherwise the error bound lies.
	for i := 0; i < numBuckets; i++ {
		lo, hi := bucketLower(i), bucketUpper(i)
		if bucketIndex(lo) != i || bucketIndex(hi) != i {
			t.Fatalf("bucket %d [%d,%d] does not map back to itself (%d, %d)", i, lo, hi, bucketIndex(lo), bucketIndex(hi))
		}
		if i+1 < numBuckets && bucketLower(i+1) != hi+1 {
			t.Fatalf("gap after bucket %d: upper %d, next lower %d", i, hi, bucketLower(i+1))
		}
		if lo >= linearBuckets && float64(hi-lo) > 0.01*float64(lo) {
			t.Fatalf("bucket %d [%d,%d] wider than 1%%", i, lo, hi)
		}
	}
	if got := time.Duration(bucketUpper(numBuckets-1)) * unit; got != HighestTrackable {
		t.Fatalf("top bucket upper %v, want HighestTrackable %v", got, HighestTrackable)
	}
	if HighestTrackable < time.Hour {
		t.Fatalf("HighestTrackable %v below one hour", HighestTrackable)
	}
}

func TestHistogramUniform(t *testing.T) {
	h := NewHistogram()
	// Shuffled so that recording order cannot matter.
	vals := rand.New(rand.NewPCG(1, 2)).Perm(10000)
	for _, v := range vals {
		h.Record(time.Duration(v+1) * time.Microsecond)
	}
	if h.Count() != 10000 {
		t.Fatalf("Count = %d", h.Count())
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 5 * time.Millisecond},
		{0.9, 9 * time.Millisecond},
		{0.99, 9900 * time.Microsecond},
		{0.999, 9990 * time.Microsecond},
		{0.01, 100 * time.Microsecond},
	} {
		got := h.Quantile(c.q)
		if !within(got, c.want, 0.01) {
			t.Errorf("Quantile(%v) = %v, want %v ±1%%", c.q, got, c.want)
		}
		if got < c.want {
			t.Errorf("Quantile(%v) = %v understates %v; upper bounds should never", c.q, got, c.want)
		}
	}
	if h.Max() != 10*time.Millisecond || h.Quantile(1) != 10*time.Millisecond {
		t.Errorf("Max = %v, Quantile(1) = %v, want exactly 10ms", h.Max(), h.Quantile(1))
	}
	if h.Min() != time.Microsecond || h.Quantile(0) != time.Microsecond {
		t.Errorf("Min = %v, Quantile(0) = %v, want 1µs", h.Min(), h.Quantile(0))
	}
	// Mean comes from the running sum: (1+10000)/2 µs exactly.
	if want := 5000500 * time.Nanosecond; h.Mean() != want {
		t.Errorf("Mean = %v, want %v", h.Mean(), want)
	}
	s := h.Snapshot()
	if s.Count != 10000 || s.Max != 10 || math.Abs(s.P50-5) > 0.05 || math.Abs(s.P99-9.9) > 0.099 ||
		math.Abs(s.P999-9.99) > 0.0999 || math.Abs(s.P90-9) > 0.09 || math.Abs(s.Mean-5.0005) > 1e-9 {
		t.Errorf("Snapshot = %+v", s)
	}
}

func TestHistogramRelativeErrorWideRange(t *testing.T) {
	// Single values across the whole range: the reported quantile must be
	// within 1% above the true value (or 1 µs in the linear range).
	for _, d := range []time.Duration{
		300 * time.Microsecond, 1234567 * time.Nanosecond, 77 * time.Millisecond,
		3 * time.Second, 59 * time.Minute, time.Hour + 1,
	} {
		h := NewHistogram()
		h.Record(d)
		h.Record(2 * d) // so the cap at Max does not hide the bucket bound
		got := h.Quantile(0.5)
		if got < d || !within(got, d, 0.01) {
			t.Errorf("Quantile(0.5) of {%v, %v} = %v, want within +1%% of %v", d, 2*d, got, d)
		}
	}
}

func TestHistogramEmpty(t *testing.T) {
	var h Histogram // the zero value must be usable
	if h.Count() != 0 || h.Quantile(0.5) != 0 || h.Quantile(1) != 0 || h.Max() != 0 || h.Min() != 0 || h.Mean() != 0 {
		t.Fatalf("empty histogram: count %d q50 %v max %v min %v mean %v", h.Count(), h.Quantile(.5), h.Max(), h.Min(), h.Mean())
	}
	if s := h.Snapshot(); s != (Summary{}) {
		t.Fatalf("empty Snapshot = %+v", s)
	}
}

func TestHistogramSingleValue(t *testing.T) {
	h := NewHistogram()
	d := 1234567 * time.Nanosecond
	h.Record(d)
	for _, q := range []float64{0, 0.5, 0.99, 1, -1, 2, math.NaN()} {
		if got := h.Quantile(q); got != d {
			t.Errorf("Quantile(%v) = %v, want %v (capped at max)", q, got, d)
		}
	}
	if h.Min() != d || h.Max() != d || h.Mean() != d || h.Count() != 1 {
		t.Errorf("min %v max %v mean %v count %d", h.Min(), h.Max(), h.Mean(), h.Count())
	}
}

func TestHistogramClamp(t *testing.T) {
	h := NewHistogram()
	h.Record(1000 * time.Hour)
	h.Record(time.Duration(math.MaxInt64))
	h.Record(-time.Second)
	if h.Count() != 3 {
		t.Fatalf("Count = %d, want 3", h.Count())
	}
	if h.Max() != HighestTrackable || h.Quantile(1) != HighestTrackable {
		t.Errorf("Max = %v, Quantile(1) = %v, want HighestTrackable %v", h.Max(), h.Quantile(1), HighestTrackable)
	}
	if h.Min() != 0 || h.Quantile(0) != 0 {
		t.Errorf("negative sample: Min = %v, Quantile(0) = %v, want 0", h.Min(), h.Quantile(0))
	}
}

func TestHistogramConcurrentRecord(t *testing.T) {
	const workers, per = 8, 20000
	h := NewHistogram()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				h.Record(time.Duration(w*per+i+1) * time.Microsecond)
				if i%1000 == 0 {
					_ = h.Quantile(0.99) // readers racing with writers must be race-free
				}
			}
		})
	}
	wg.Wait()
	if h.Count() != workers*per {
		t.Fatalf("Count = %d, want %d", h.Count(), workers*per)
	}
	if want := time.Duration(workers*per) * time.Microsecond; h.Max() != want {
		t.Fatalf("Max = %v, want %v", h.Max(), want)
	}
	if h.Min() != time.Microsecond {
		t.Fatalf("Min = %v", h.Min())
	}
}

func TestHistogramMerge(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	all, a, b := NewHistogram(), NewHistogram(), NewHistogram()
	for i := range 50000 {
		d := time.Duration(r.ExpFloat64() * float64(20*time.Millisecond))
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	merged := NewHistogram()
	merged.Merge(a)
	merged.Merge(b)
	merged.Merge(NewHistogram()) // empty merge must not disturb min
	merged.Merge(nil)
	assertSameHistogram(t, merged, all)
}

func assertSameHistogram(t *testing.T, got, want *Histogram) {
	t.Helper()
	if got.Count() != want.Count() || got.Min() != want.Min() || got.Max() != want.Max() || got.Mean() != want.Mean() {
		t.Fatalf("count/min/max/mean %d/%v/%v/%v, want %d/%v/%v/%v",
			got.Count(), got.Min(), got.Max(), got.Mean(), want.Count(), want.Min(), want.Max(), want.Mean())
	}
	for i := range want.buckets {
		if g, w := got.buckets[i].Load(), want.buckets[i].Load(); g != w {
			t.Fatalf("bucket %d = %d, want %d", i, g, w)
		}
	}
	for _, q := range []float64{0, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1} {
		if g, w := got.Quantile(q), want.Quantile(q); g != w {
			t.Fatalf("Quantile(%v) = %v, want %v", q, g, w)
		}
	}
	if got.Snapshot() != want.Snapshot() {
		t.Fatalf("Snapshot %+v, want %+v", got.Snapshot(), want.Snapshot())
	}
}

func TestHistogramReset(t *testing.T) {
	h := NewHistogram()
	h.Record(time.Second)
	h.Reset()
	if h.Count() != 0 || h.Max() != 0 || h.Min() != 0 || h.Quantile(0.5) != 0 {
		t.Fatalf("after Reset: count %d max %v min %v", h.Count(), h.Max(), h.Min())
	}
	h.Record(time.Millisecond)
	if h.Min() != time.Millisecond || h.Max() != time.Millisecond {
		t.Fatalf("after Reset+Record: min %v max %v", h.Min(), h.Max())
	}
}

func TestHistogramJSONRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	h := NewHistogram()
	for range 20000 {
		h.Record(time.Duration(r.NormFloat64()*float64(2*time.Millisecond)) + 10*time.Millisecond)
	}
	h.Record(3 * time.Hour)
	data, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	// Decode through a struct field the way a parent reading a worker's
	// report would: into a freshly allocated zero Histogram.
	var msg struct{ Latency *Histogram }
	if err := json.Unmarshal([]byte(`{"Latency":`+string(data)+`}`), &msg); err != nil {
		t.Fatal(err)
	}
	assertSameHistogram(t, msg.Latency, h)

	// Merging two decoded copies doubles the counts and keeps the quantiles.
	twice := NewHistogram()
	twice.Merge(msg.Latency)
	twice.Merge(msg.Latency)
	if twice.Count() != 2*h.Count() || twice.Quantile(0.99) != h.Quantile(0.99) {
		t.Fatalf("merged decoded: count %d p99 %v, want %d %v", twice.Count(), twice.Quantile(0.99), 2*h.Count(), h.Quantile(0.99))
	}

	// Empty histograms round-trip too.
	data, err = json.Marshal(NewHistogram())
	if err != nil {
		t.Fatal(err)
	}
	var empty Histogram
	if err := json.Unmarshal(data, &empty); err != nil || empty.Count() != 0 || empty.Min() != 0 {
		t.Fatalf("empty round trip: err %v count %d min %v", err, empty.Count(), empty.Min())
	}
}

func TestHistogramUnmarshalRejects(t *testing.T) {
	for name, in := range map[string]string{
		"layout":   `{"version":1,"unit_ns":1000,"sub_buckets":64,"num_buckets":3840,"count":0,"buckets":[]}`,
		"version":  `{"version":2,"unit_ns":1000,"sub_buckets":128,"num_buckets":3840,"count":0,"buckets":[]}`,
		"index":    `{"version":1,"unit_ns":1000,"sub_buckets":128,"num_buckets":3840,"count":1,"min_ns":1,"max_ns":1,"buckets":[[3840,1]]}`,
		"negative": `{"version":1,"unit_ns":1000,"sub_buckets":128,"num_buckets":3840,"count":-1,"buckets":[[1,-1]]}`,
		"count":    `{"version":1,"unit_ns":1000,"sub_buckets":128,"num_buckets":3840,"count":2,"min_ns":1,"max_ns":1,"buckets":[[1,1]]}`,
		"minmax":   `{"version":1,"unit_ns":1000,"sub_buckets":128,"num_buckets":3840,"count":1,"min_ns":5,"max_ns":1,"buckets":[[1,1]]}`,
		"syntax":   `{"version":`,
	} {
		var h Histogram
		if err := json.Unmarshal([]byte(in), &h); err == nil {
			t.Errorf("%s: Unmarshal accepted %s", name, in)
		}
	}
}

func TestRecordDoesNotAllocate(t *testing.T) {
	h := NewHistogram()
	if n := testing.AllocsPerRun(1000, func() { h.Record(1500 * time.Microsecond) }); n != 0 {
		t.Fatalf("Record allocates %v times per call", n)
	}
}

func BenchmarkRecordParallel(b *testing.B) {
	h := NewHistogram()
	b.RunParallel(func(pb *testing.PB) {
		d := time.Duration(0)
		for pb.Next() {
			d += 997 * time.Nanosecond
			h.Record(d % (50 * time.Millisecond))
		}
	})
}
