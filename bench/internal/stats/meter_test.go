package stats

import (
	"sync"
	"testing"
	"time"
)

func TestMeterConcurrentTotal(t *testing.T) {
	m := NewMeter()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for range 10000 {
				if w%2 == 0 {
					m.Inc()
				} else {
					m.Add(3)
				}
			}
		})
	}
	// Rate readers race with writers; -race checks the locking.
	wg.Go(func() {
		for range 100 {
			_ = m.Rate()
		}
	})
	wg.Wait()
	if want := int64(4*10000 + 4*30000); m.Total() != want {
		t.Fatalf("Total = %d, want %d", m.Total(), want)
	}
}

func TestMeterRateWindows(t *testing.T) {
	m := NewMeter()
	t0 := epoch.Add(time.Duration(m.start.Load()))
	m.Add(500)
	if got := m.RateAt(t0.Add(500 * time.Millisecond)); got != 1000 {
		t.Fatalf("first window rate = %v, want 1000", got)
	}
	m.Add(20)
	if got := m.RateAt(t0.Add(2500 * time.Millisecond)); got != 10 {
		t.Fatalf("second window rate = %v, want 10 (only events since the last call)", got)
	}
	if got := m.RateAt(t0.Add(2500 * time.Millisecond)); got != 0 {
		t.Fatalf("zero-length window rate = %v, want 0", got)
	}
	m.Add(5)
	if got := m.RateAt(t0.Add(3500 * time.Millisecond)); got != 5 {
		t.Fatalf("third window rate = %v, want 5", got)
	}
	if got := m.AverageRateAt(t0.Add(5 * time.Second)); got != 105 {
		t.Fatalf("average = %v, want 105", got)
	}
	if got := m.AverageRateAt(t0); got != 0 {
		t.Fatalf("average at start = %v, want 0", got)
	}
}

func TestMeterZeroValue(t *testing.T) {
	// A zero Meter (e.g. a struct field) starts its clock at the first event.
	var m Meter
	if got := m.Total(); got != 0 {
		t.Fatalf("Total = %d", got)
	}
	m.Add(10)
	t0 := epoch.Add(time.Duration(m.start.Load()))
	if m.start.Load() == 0 {
		t.Fatal("first Add did not start the clock")
	}
	m.Add(10)
	if got := m.RateAt(t0.Add(2 * time.Second)); got != 10 {
		t.Fatalf("rate = %v, want 10 (20 events over 2s from the first Add)", got)
	}
	if got := m.AverageRateAt(t0.Add(4 * time.Second)); got != 5 {
		t.Fatalf("average = %v, want 5", got)
	}

	// Without events, the first rate call starts the clock and reports 0.
	var idle Meter
	now := time.Now()
	if got := idle.RateAt(now); got != 0 {
		t.Fatalf("first rate of an idle meter = %v", got)
	}
	idle.Add(3)
	if got := idle.RateAt(now.Add(time.Second)); got != 3 {
		t.Fatalf("rate = %v, want 3", got)
	}
}
