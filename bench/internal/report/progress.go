package report

import (
	"io"
	"strings"
	"sync"
	"time"
)

// Progress prints a status line every interval while a run is in progress,
// so that someone watching a long run (or its log) can see it is alive and
// how fast it goes. Lines are newline-terminated rather than redrawn with
// "\r" because the output usually ends up in a log file.
type Progress struct {
	w        io.Writer
	interval time.Duration
	line     func() string

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// NewProgress starts printing line() to w every interval until Stop. An
// interval of zero or less prints nothing until Stop. line is only ever
// called from one goroutine at a time, so it need not be reentrant, but it
// runs concurrently with the caller and must read shared state safely
// (stats.Meter and stats.Histogram are safe).
func NewProgress(w io.Writer, interval time.Duration, line func() string) *Progress {
	p := &Progress{
		w:        w,
		interval: interval,
		line:     line,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go p.run()
	return p
}

func (p *Progress) run() {
	defer close(p.done)
	var tick <-chan time.Time
	if p.interval > 0 {
		t := time.NewTicker(p.interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-tick:
			p.print()
		case <-p.stop:
			p.print() // the final figures, printed exactly once
			return
		}
	}
}

func (p *Progress) print() {
	s := p.line()
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	// A failing writer (closed pipe) must not stop the run being measured.
	_, _ = io.WriteString(p.w, s)
}

// Stop prints the final line and returns once the printing goroutine has
// exited, so nothing is written to w after Stop returns. It is safe to call
// more than once and from several goroutines; later calls only wait.
func (p *Progress) Stop() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
}
