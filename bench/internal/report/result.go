// Package report turns a benchmark run into a durable record: a JSON file for
// tooling and comparisons across commits, and a Markdown summary for humans,
// each stamped with enough about the code and the machine to tell later
// whether two runs are comparable.
package report

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Target is one pass/fail criterion of a run, e.g. "connects/s >= 10000".
// Op is ">=" or "<=" (or the strict ">" / "<").
// Value is what the run measured; Pass is derived by AddTarget so that the
// JSON record carries the verdict and not just the inputs to it.
type Target struct {
	Name      string  `json:"name"`
	Op        string  `json:"op"`
	Threshold float64 `json:"threshold"`
	Value     float64 `json:"value"`
	Unit      string  `json:"unit"`
	Pass      bool    `json:"pass"`
	Note      string  `json:"note,omitempty"`
}

// Line renders the target in the fixed "PASS name op threshold: value unit"
// form that the Markdown summary uses, so that logs and CI can grep for it.
func (t Target) Line() string {
	verdict := "FAIL"
	if t.Pass {
		verdict = "PASS"
	}
	s := fmt.Sprintf("%s %s %s %s: %s", verdict, t.Name, t.Op, formatFloat(t.Threshold), formatFloat(t.Value))
	if t.Unit != "" {
		s += " " + t.Unit
	}
	if t.Note != "" {
		s += " (" + t.Note + ")"
	}
	return s
}

// Machine identifies the host a run executed on; numbers from different
// hardware are not comparable and this is how a reader finds out.
// Fields that cannot be read (non-Linux hosts, restricted /proc) are left
// empty rather than failing the run.
type Machine struct {
	Hostname      string `json:"hostname"`
	OS            string `json:"os"`
	Arch          string `json:"arch"`
	Kernel        string `json:"kernel"`
	CPUModel      string `json:"cpu_model"`
	Cores         int    `json:"cores"`
	MemTotalBytes uint64 `json:"mem_total_bytes"`
	GoVersion     string `json:"go_version"`
}

// Result is the record of one benchmark run.
//
// Config and Metrics are free-form so each subcommand can report what matters
// to it; values should be JSON-encodable. Markdown renders stats.Summary
// values (and *stats.Histogram, through its Snapshot) as latency rows and
// flattens nested maps into dotted keys.
type Result struct {
	Name       string         `json:"name"`
	Started    time.Time      `json:"started"`
	Duration   float64        `json:"duration_s"`
	Commit     string         `json:"commit"`
	Topology   string         `json:"topology"`
	GOMAXPROCS int            `json:"gomaxprocs"`
	Machine    Machine        `json:"machine"`
	Config     map[string]any `json:"config"`
	Metrics    map[string]any `json:"metrics"`
	Targets    []Target       `json:"targets"`
	Notes      []string       `json:"notes,omitempty"`

	// mono keeps the monotonic clock reading of the start: Started itself is
	// stored in UTC, which strips it, and Finish must not be fooled by a
	// wall-clock step during a long run.
	mono time.Time
}

// New starts a Result for the subcommand name, stamped with the current time,
// the git commit, GOMAXPROCS and the machine description. Config and Metrics
// are initialised so callers can assign to them directly.
func New(name string) *Result {
	now := time.Now()
	return &Result{
		Name:       name,
		Started:    now.UTC(),
		Commit:     gitCommit(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		Machine:    machineInfo(),
		Config:     map[string]any{},
		Metrics:    map[string]any{},
		Targets:    []Target{},
		mono:       now,
	}
}

// Finish sets Duration to the time elapsed since New. Call it when the
// measured phase ends, before evaluating rate targets that depend on it.
func (r *Result) Finish() {
	start := r.mono
	if start.IsZero() {
		start = r.Started // decoded or hand-built Result: wall clock is all we have
	}
	r.Duration = time.Since(start).Seconds()
}

// AddTarget records a criterion and evaluates it. ">=" and "<=" (equality
// passes) are the normal operators; the strict ">" and "<" are accepted too
// because targets are often written as "p99 < 50 ms". Anything else fails with
// a Note, because a typo in a target must not turn into a silent pass. A NaN
// value fails (it usually means nothing was measured).
func (r *Result) AddTarget(name, op string, threshold, value float64, unit string) {
	t := Target{Name: name, Op: op, Threshold: threshold, Value: value, Unit: unit}
	switch op {
	case ">=":
		t.Pass = value >= threshold
	case "<=":
		t.Pass = value <= threshold
	case ">":
		t.Pass = value > threshold
	case "<":
		t.Pass = value < threshold
	default:
		t.Note = fmt.Sprintf("unknown operator %q (want >=, <=, > or <)", op)
	}
	if t.Note == "" && (math.IsNaN(value) || math.IsNaN(threshold)) {
		t.Note = "not a number"
	}
	r.Targets = append(r.Targets, t)
}

// AddUnmeasured records a target the run could not measure, as failed, with the
// reason: an unmeasured target must never read as met.
func (r *Result) AddUnmeasured(name, op string, threshold float64, unit, reason string) {
	r.Targets = append(r.Targets, Target{Name: name, Op: op, Threshold: threshold, Unit: unit, Note: "not measured: " + reason})
}

// AddNote appends a free-text remark (warnings, anomalies) to the record.
func (r *Result) AddNote(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// Passed reports whether every target passed. A run without targets passes:
// it was exploratory and has nothing to fail.
func (r *Result) Passed() bool {
	for _, t := range r.Targets {
		if !t.Pass {
			return false
		}
	}
	return true
}

// timestampLayout names result files so that a directory listing sorts runs
// chronologically.
const timestampLayout = "20060102T150405Z"

// Write stores the result as <UTC start timestamp>-<name>.json and .md in dir,
// creating dir if needed. An existing pair is never overwritten: a -2, -3, …
// suffix is added instead, because results are evidence and two runs started
// in the same second must both survive. Both files always share the suffix.
func (r *Result) Write(dir string) (jsonPath, mdPath string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", "", fmt.Errorf("report: encode %s: %w", r.Name, err)
	}
	js = append(js, '\n')
	md := []byte(r.Markdown())

	started := r.Started
	if started.IsZero() {
		started = time.Now()
	}
	base := started.UTC().Format(timestampLayout) + "-" + fileSafe(r.Name)
	for n := 1; ; n++ {
		stem := base
		if n > 1 {
			stem = fmt.Sprintf("%s-%d", base, n)
		}
		jsonPath = filepath.Join(dir, stem+".json")
		mdPath = filepath.Join(dir, stem+".md")
		jf, err := createNew(jsonPath)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", "", err
		}
		mf, err := createNew(mdPath)
		if errors.Is(err, fs.ErrExist) {
			// A stray .md with this stem: give the stem up entirely so the
			// pair stays together.
			jf.Close()
			os.Remove(jsonPath)
			continue
		}
		if err != nil {
			jf.Close()
			os.Remove(jsonPath)
			return "", "", err
		}
		if err := writeClose(jf, js); err != nil {
			mf.Close()
			return "", "", err
		}
		if err := writeClose(mf, md); err != nil {
			return "", "", err
		}
		return jsonPath, mdPath, nil
	}
}

// createNew uses O_EXCL so that two processes writing into the same directory
// cannot both claim a name.
func createNew(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
}

func writeClose(f *os.File, data []byte) error {
	_, err := f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// fileSafe keeps file names portable when a caller passes free text as name.
func fileSafe(name string) string {
	if name == "" {
		return "run"
	}
	return strings.Map(func(c rune) rune {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
			return c
		}
		return '_'
	}, name)
}

// gitCommit identifies the code under test; "-dirty" matters because numbers
// from uncommitted changes cannot be reproduced from the hash alone. Untracked
// files (earlier result files among them) change no code and do not count.
func gitCommit() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	commit := strings.TrimSpace(string(out))
	if commit == "" {
		return "unknown"
	}
	status, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output()
	if err == nil && len(bytes.TrimSpace(status)) > 0 {
		commit += "-dirty"
	}
	return commit
}

func machineInfo() Machine {
	m := Machine{
		OS:        runtime.GOOS,
		Arch:      runtime.GOARCH,
		Cores:     runtime.NumCPU(),
		GoVersion: runtime.Version(),
	}
	m.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.CPUModel = procField("/proc/cpuinfo", "model name")
	if mem := procField("/proc/meminfo", "MemTotal"); mem != "" {
		// "16318136 kB"
		if f := strings.Fields(mem); len(f) >= 1 {
			if kb, err := strconv.ParseUint(f[0], 10, 64); err == nil {
				m.MemTotalBytes = kb * 1024
			}
		}
	}
	return m
}

// procField returns the value of the first "key : value" line in a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
