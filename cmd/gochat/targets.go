package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// allTargets in start order; "all" expands to every one of them.
var allTargets = []string{"repo", "logic", "task", "gateway"}

// expandTargets turns "all" or a comma list into a sorted, de-duplicated target list.
func expandTargets(s string) ([]string, error) {
	var out []string
	for t := range strings.SplitSeq(s, ",") {
		t = strings.TrimSpace(t)
		switch {
		case t == "all":
			out = append(out, allTargets...)
		case slices.Contains(allTargets, t):
			out = append(out, t)
		case t == "":
		default:
			return nil, fmt.Errorf("unknown target %q: use all or a comma list of %s", t, strings.Join(allTargets, ","))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no target given")
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// isAll reports whether every component runs in this process (the one-machine
// topology, where embedded defaults stand in for etcd, Kafka, Redis and MySQL).
func isAll(targets []string) bool { return len(targets) == len(allTargets) }

// component is one running part of the process.
type component interface {
	Run(ctx context.Context) error // blocks; returns after ctx is done and work has drained
}

type componentFunc func(ctx context.Context) error

func (f componentFunc) Run(ctx context.Context) error { return f(ctx) }

// runAll runs every component until ctx is done or one of them fails; one failure
// stops the others. It waits up to grace for all of them to return.
func runAll(ctx context.Context, log *slog.Logger, grace time.Duration, comps map[string]component) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	errs := make(chan error, len(comps))
	for name, c := range comps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.Run(ctx)
			if err == nil && ctx.Err() == nil {
				err = errors.New("exited before shutdown was requested")
			}
			if err != nil {
				err = fmt.Errorf("%s: %w", name, err)
				cancel(err)
				log.Error("component failed", "component", name, "err", err)
			} else {
				log.Info("component stopped", "component", name)
			}
			errs <- err
		}()
	}
	<-ctx.Done()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		return errors.New("shutdown grace period exceeded")
	}
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}
