// Command gochat-bench holds GoChat's load harnesses. Subcommands take flags, never
// positional arguments; every run prints a live progress line and writes
// bench/results/<timestamp>-<name>.json and .md with a PASS/FAIL line per target.
//
//	gochat-bench conns      -n 300000 -gateways ... -admins ... -secret ...
//	gochat-bench latency    -rate 10k -pairs 200 -idle 10000
//	gochat-bench throughput -pairs 200 -inflight 25,50,100,200,800
//	gochat-bench fanout     -receivers 10000 -rate 20
//
// scripts/bench.sh starts a topology, runs one of these and stops what it started.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "gochat-bench:", err)
		os.Exit(1)
	}
}

type subcommand struct {
	run  func(args []string, stdout, stderr io.Writer) error
	help string // empty: internal, not listed
}

var subcommands = map[string]subcommand{
	"conns":        {runConns, "connection storm and density: N idle authenticated sockets over several gateways; connects/s, handshake percentiles, gateway RSS and heap per socket"},
	"latency":      {runLatency, "paced open-loop sends in 1:1 and group conversations beside idle sockets; send→ack and send→recipient percentiles"},
	"throughput":   {runThroughput, "closed-loop 1:1 senders at rising sends in flight; the highest acked sends/s with ack p99 under 50 ms"},
	"fanout":       {runFanout, "world room with N receivers; deliveries/s and time for one message to reach all of them"},
	"conns-worker": {runConnsWorker, ""},
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "help" {
		fmt.Fprintln(stderr, "usage: gochat-bench <subcommand> [flags]   (gochat-bench <subcommand> -h for its flags)\n\nsubcommands:")
		names := make([]string, 0, len(subcommands))
		for name, sc := range subcommands {
			if sc.help != "" {
				names = append(names, name)
			}
		}
		sort.Strings(names)
		for _, name := range names {
			fmt.Fprintf(stderr, "  %-11s %s\n", name, subcommands[name].help)
		}
		return flag.ErrHelp
	}
	sc, ok := subcommands[args[0]]
	if !ok {
		return fmt.Errorf("unknown subcommand %q (try -h)", args[0])
	}
	return sc.run(args[1:], stdout, stderr)
}
