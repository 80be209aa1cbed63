// Command gochat-bench holds GoChat's load harnesses. Subcommands take flags, never
// positional arguments:
//
//	gochat-bench conns -url http://127.0.0.1:8080 -n 1000 -pid $(pgrep -n gochat)
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
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

var subcommands = map[string]func(args []string, stdout, stderr io.Writer) error{
	"conns": runConns,
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "help" {
		fmt.Fprintln(stderr, "usage: gochat-bench <subcommand> [flags]\n\nsubcommands:\n  conns   open N idle authenticated WebSockets; report connect rate, handshake latency and gateway memory per socket")
		return flag.ErrHelp
	}
	sc, ok := subcommands[args[0]]
	if !ok {
		return fmt.Errorf("unknown subcommand %q (try -h)", args[0])
	}
	return sc(args[1:], stdout, stderr)
}
