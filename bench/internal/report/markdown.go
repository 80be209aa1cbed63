package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gochat/gochat/bench/internal/stats"
)

// Markdown renders the human summary: run facts, config, metrics, the target
// verdict lines and notes. Metrics are rendered the same whether they hold
// live values (stats.Summary, *stats.Histogram, structs) or the generic maps
// a decoded JSON file yields, so a result can be re-rendered from disk.
func (r *Result) Markdown() string {
	var b strings.Builder

	title := "# Benchmark " + r.Name
	if len(r.Targets) > 0 {
		passed := 0
		for _, t := range r.Targets {
			if t.Pass {
				passed++
			}
		}
		verdict := "FAIL"
		if r.Passed() {
			verdict = "PASS"
		}
		title += fmt.Sprintf(": %s (%d/%d targets)", verdict, passed, len(r.Targets))
	}
	b.WriteString(title + "\n\n")

	b.WriteString("| Run | |\n|---|---|\n")
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", cell(k), cell(v)) }
	row("Started", r.Started.UTC().Format(time.RFC3339))
	row("Duration", formatFloat(r.Duration)+" s")
	row("Commit", r.Commit)
	row("Topology", r.Topology)
	row("GOMAXPROCS", strconv.Itoa(r.GOMAXPROCS))
	row("Host", r.Machine.Hostname)
	row("Machine", r.Machine.describe())
	row("Go", r.Machine.GoVersion)

	b.WriteString("\n## Config\n\n")
	if len(r.Config) == 0 {
		b.WriteString("_none_\n")
	} else {
		b.WriteString("| Flag | Value |\n|---|---|\n")
		for _, k := range sortedKeys(r.Config) {
			row(k, scalarString(r.Config[k]))
		}
	}

	b.WriteString("\n## Metrics\n\n")
	renderMetrics(&b, r.Metrics)

	b.WriteString("\n## Targets\n\n")
	if len(r.Targets) == 0 {
		b.WriteString("_none_\n")
	} else {
		// A fenced block keeps one verdict per line when rendered and leaves
		// the lines intact for grep.
		b.WriteString("```\n")
		for _, t := range r.Targets {
			b.WriteString(t.Line() + "\n")
		}
		b.WriteString("```\n")
	}

	if len(r.Notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range r.Notes {
			b.WriteString("- " + strings.ReplaceAll(n, "\n", " ") + "\n")
		}
	}
	return b.String()
}

func (m Machine) describe() string {
	var parts []string
	if m.OS != "" || m.Arch != "" {
		parts = append(parts, m.OS+"/"+m.Arch)
	}
	if m.Kernel != "" {
		parts = append(parts, "kernel "+m.Kernel)
	}
	if m.CPUModel != "" {
		parts = append(parts, m.CPUModel)
	}
	if m.Cores > 0 {
		parts = append(parts, fmt.Sprintf("%d cores", m.Cores))
	}
	if m.MemTotalBytes > 0 {
		parts = append(parts, fmt.Sprintf("%.1f GiB RAM", float64(m.MemTotalBytes)/(1<<30)))
	}
	return strings.Join(parts, ", ")
}

// metricSink collects the three shapes a metric can take in the summary.
type metricSink struct {
	scalars   [][2]string
	latencies []latencyRow
	tables    []table
}

type latencyRow struct {
	name string
	s    stats.Summary
}

type table struct {
	name   string
	header []string
	rows   [][]string
}

func renderMetrics(b *strings.Builder, metrics map[string]any) {
	if len(metrics) == 0 {
		b.WriteString("_none_\n")
		return
	}
	var sink metricSink
	for _, k := range sortedKeys(metrics) {
		sink.add(k, metrics[k])
	}
	wrote := false
	if len(sink.scalars) > 0 {
		b.WriteString("| Metric | Value |\n|---|---|\n")
		for _, kv := range sink.scalars {
			fmt.Fprintf(b, "| %s | %s |\n", cell(kv[0]), cell(kv[1]))
		}
		wrote = true
	}
	if len(sink.latencies) > 0 {
		if wrote {
			b.WriteString("\n")
		}
		b.WriteString("Latency (ms):\n\n| Metric | count | p50 | p90 | p99 | p99.9 | max | mean |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, l := range sink.latencies {
			fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s | %s | %s |\n", cell(l.name), l.s.Count,
				formatMs(l.s.P50), formatMs(l.s.P90), formatMs(l.s.P99), formatMs(l.s.P999), formatMs(l.s.Max), formatMs(l.s.Mean))
		}
		wrote = true
	}
	for _, t := range sink.tables {
		if wrote {
			b.WriteString("\n")
		}
		fmt.Fprintf(b, "%s:\n\n| %s |\n|%s\n", cell(t.name), strings.Join(mapCells(t.header), " | "), strings.Repeat("---|", len(t.header)))
		for _, r := range t.rows {
			fmt.Fprintf(b, "| %s |\n", strings.Join(mapCells(r), " | "))
		}
		wrote = true
	}
}

// add walks one metric. Known stats types are handled first; other structs,
// typed maps and slices are normalised through JSON so that their json tags
// name the columns and decoded results render identically.
func (s *metricSink) add(key string, v any) {
	switch x := v.(type) {
	case stats.Summary:
		s.latencies = append(s.latencies, latencyRow{key, x})
		return
	case *stats.Summary:
		if x != nil {
			s.latencies = append(s.latencies, latencyRow{key, *x})
			return
		}
	case *stats.Histogram:
		if x != nil {
			s.latencies = append(s.latencies, latencyRow{key, x.Snapshot()})
			return
		}
	case map[string]any:
		if sum, ok := summaryShape(x); ok {
			s.latencies = append(s.latencies, latencyRow{key, sum})
			return
		}
		if t, ok := mapTable(key, x); ok {
			s.tables = append(s.tables, t)
			return
		}
		for _, k := range sortedKeys(x) {
			s.add(key+"."+k, x[k])
		}
		return
	case []any:
		if t, ok := sliceTable(key, x); ok {
			s.tables = append(s.tables, t)
			return
		}
		s.scalars = append(s.scalars, [2]string{key, scalarString(x)})
		return
	}
	if isScalar(v) {
		s.scalars = append(s.scalars, [2]string{key, scalarString(v)})
		return
	}
	n, ok := normalise(v)
	if !ok {
		s.scalars = append(s.scalars, [2]string{key, fmt.Sprint(v)})
		return
	}
	switch n.(type) {
	case map[string]any, []any:
		s.add(key, n)
	default:
		s.scalars = append(s.scalars, [2]string{key, scalarString(n)})
	}
}

// normalise converts an arbitrary value to the generic JSON form.
func normalise(v any) (any, bool) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep integers exact for display
	var out any
	if err := dec.Decode(&out); err != nil {
		return nil, false
	}
	return out, true
}

// summaryShape recognises a stats.Summary (or a histogram's embedded summary)
// after a JSON round trip.
func summaryShape(m map[string]any) (stats.Summary, bool) {
	if inner, ok := m["summary"].(map[string]any); ok {
		if _, hasBuckets := m["buckets"]; hasBuckets {
			return summaryShape(inner)
		}
	}
	if _, ok := m["p50_ms"]; !ok {
		return stats.Summary{}, false
	}
	if _, ok := m["p99_ms"]; !ok {
		return stats.Summary{}, false
	}
	data, err := json.Marshal(m)
	if err != nil {
		return stats.Summary{}, false
	}
	var s stats.Summary
	if json.Unmarshal(data, &s) != nil {
		return stats.Summary{}, false
	}
	return s, true
}

// mapTable renders {"gw-1": {"conns": 10, ...}, "gw-2": {...}} — the shape of
// per-gateway figures — as one row per key instead of dotted scalars.
func mapTable(name string, m map[string]any) (table, bool) {
	if len(m) == 0 {
		return table{}, false
	}
	keys := sortedKeys(m)
	rows := make([]map[string]any, 0, len(m))
	for _, k := range keys {
		inner, ok := asMap(m[k])
		if !ok || !flatRow(inner) {
			return table{}, false
		}
		rows = append(rows, inner)
	}
	t := buildTable(name, rows)
	t.header = append([]string{name}, t.header...)
	for i := range t.rows {
		t.rows[i] = append([]string{keys[i]}, t.rows[i]...)
	}
	return t, true
}

// sliceTable renders a list of records as a table with the union of their
// fields as columns.
func sliceTable(name string, xs []any) (table, bool) {
	if len(xs) == 0 {
		return table{}, false
	}
	rows := make([]map[string]any, 0, len(xs))
	for _, x := range xs {
		m, ok := asMap(x)
		if !ok || !flatRow(m) {
			return table{}, false
		}
		rows = append(rows, m)
	}
	return buildTable(name, rows), true
}

func asMap(v any) (map[string]any, bool) {
	if m, ok := v.(map[string]any); ok {
		return m, true
	}
	if isScalar(v) {
		return nil, false
	}
	n, ok := normalise(v)
	if !ok {
		return nil, false
	}
	m, ok := n.(map[string]any)
	return m, ok
}

// flatRow is true for a record whose fields are all scalars and that is not a
// latency summary (those belong in the latency table).
func flatRow(m map[string]any) bool {
	if _, ok := summaryShape(m); ok {
		return false
	}
	for _, v := range m {
		if !isScalar(v) {
			return false
		}
	}
	return true
}

func buildTable(name string, rows []map[string]any) table {
	cols := map[string]bool{}
	for _, r := range rows {
		for k := range r {
			cols[k] = true
		}
	}
	t := table{name: name, header: sortedKeys(cols)}
	for _, r := range rows {
		line := make([]string, len(t.header))
		for i, c := range t.header {
			if v, ok := r[c]; ok {
				line[i] = scalarString(v)
			}
		}
		t.rows = append(t.rows, line)
	}
	return t
}

func isScalar(v any) bool {
	switch v.(type) {
	case stats.Summary, *stats.Summary, *stats.Histogram:
		return false // latency rows, even though Summary is a Stringer
	case nil, string, bool, json.Number, time.Duration, time.Time, fmt.Stringer, error:
		return true
	}
	switch reflect.ValueOf(v).Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.String:
		return true
	}
	return false
}

// scalarString formats one value for a table cell; durations use their Go
// spelling because that is how they were typed on the command line.
func scalarString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case json.Number:
		if _, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return string(x)
		}
		if f, err := x.Float64(); err == nil {
			return formatFloat(f)
		}
		return string(x)
	case time.Duration:
		return x.String()
	case time.Time:
		return x.Format(time.RFC3339Nano)
	case float64:
		return formatFloat(x)
	case float32:
		return formatFloat(float64(x))
	case error:
		return x.Error()
	case fmt.Stringer:
		return x.String()
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(rv.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return strconv.FormatUint(rv.Uint(), 10)
	case reflect.Float32, reflect.Float64:
		return formatFloat(rv.Float())
	case reflect.Bool:
		return strconv.FormatBool(rv.Bool())
	case reflect.String:
		return rv.String()
	}
	if data, err := json.Marshal(v); err == nil {
		return string(data)
	}
	return fmt.Sprint(v)
}

// formatFloat prints whole numbers without a fraction and others with about
// six significant digits (at least one decimal), which is as much precision
// as a benchmark number deserves: 10000, 12345.6, 0.00123457.
func formatFloat(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.FormatFloat(f, 'f', 0, 64)
	}
	intDigits := int(math.Floor(math.Log10(math.Abs(f)))) + 1
	decimals := min(max(6-intDigits, 1), 12)
	s := strconv.FormatFloat(f, 'f', decimals, 64)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// formatMs keeps latency columns aligned at three decimals (microseconds).
func formatMs(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }

// cell keeps a value from breaking the Markdown table it sits in.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	s = strings.ReplaceAll(s, "\r", " ")
	return strings.ReplaceAll(s, "\n", " ")
}

func mapCells(xs []string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = cell(x)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
