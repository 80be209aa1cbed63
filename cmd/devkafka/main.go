// Command devkafka is a DEVELOPMENT-ONLY Kafka-protocol broker: kfake
// (github.com/twmb/franz-go/pkg/kfake) in a process of its own, so scripts/cluster.sh can
// run the split GoChat topology on a machine without Java or Kafka.
//
// WARNING: everything it holds lives in memory. Nothing is durable, a restart loses
// every topic, record and committed offset, there is no replication, no auth and no TLS.
// Never point anything but a development cluster at it. docker-compose.yml (and
// production) use real Kafka.
//
//	devkafka -addr 127.0.0.1:9092 -brokers 1 -partitions 6
//
// It prints "devkafka ready <addr>" on stdout once it listens, and stops cleanly on
// SIGINT or SIGTERM. Topics are created on demand (CreateTopics, or metadata requests
// that ask for auto-creation) with -partitions partitions.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

const warning = "devkafka: DEVELOPMENT ONLY — in-memory Kafka-protocol broker (kfake): NOT durable, " +
	"everything is lost on exit; docker-compose.yml uses real Kafka"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "devkafka:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:9092", "host:port of the first broker; broker i listens on port+i (port 0: kernel-chosen)")
	brokers := flag.Int("brokers", 1, "number of brokers")
	partitions := flag.Int("partitions", 6, "partitions of auto-created topics and of CreateTopics with -1 partitions")
	logLevel := flag.String("log-level", "warn", "kfake log level: none, error, warn, info, debug")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", flag.Args())
	}

	host, portStr, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return fmt.Errorf("-addr %q: bad port", *addr)
	}
	if *brokers < 1 {
		return errors.New("-brokers must be at least 1")
	}
	if *partitions < 1 {
		return errors.New("-partitions must be at least 1")
	}
	lvl, err := parseLevel(*logLevel)
	if err != nil {
		return err
	}

	fmt.Fprintln(os.Stderr, warning)
	opts := []kfake.Opt{
		kfake.NumBrokers(*brokers),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(*partitions),
		kfake.WithLogger(kfake.BasicLogger(os.Stderr, lvl)),
		// kfake always listens on 127.0.0.1:<port>; honour the host of -addr.
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			_, p, err := net.SplitHostPort(address)
			if err != nil {
				return nil, err
			}
			return net.Listen(network, net.JoinHostPort(host, p))
		}),
	}
	if port != 0 {
		ports := make([]int, *brokers)
		for i := range ports {
			ports[i] = port + i
		}
		opts = append(opts, kfake.Ports(ports...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("start kfake: %w", err)
	}
	defer c.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("devkafka ready %s (DEVELOPMENT ONLY: in-memory, not durable)\n", strings.Join(c.ListenAddrs(), ","))
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "devkafka: signal received, stopping (all data is discarded)")
	return nil
}

func parseLevel(s string) (kfake.LogLevel, error) {
	switch strings.ToLower(s) {
	case "none":
		return kfake.LogLevelNone, nil
	case "error":
		return kfake.LogLevelError, nil
	case "warn":
		return kfake.LogLevelWarn, nil
	case "info":
		return kfake.LogLevelInfo, nil
	case "debug":
		return kfake.LogLevelDebug, nil
	}
	return 0, fmt.Errorf("-log-level %q: use none, error, warn, info or debug", s)
}
