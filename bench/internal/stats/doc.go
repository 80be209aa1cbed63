// Package stats holds the measurement primitives of the load harness: a
// bounded-memory latency histogram that many goroutines (and, through its JSON
// form, many worker processes) can feed, an open-loop pacer that keeps latency
// honest when the system under test falls behind, and a throughput meter for
// live progress lines.
//
// Everything here uses only the standard library so that the harness measures
// the server and not its own dependencies.
package stats
