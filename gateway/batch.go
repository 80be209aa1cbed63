package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// A connect storm costs two logic calls per socket (auth before the upgrade, route
// registration after it); one call each carrying many sockets costs about the same
// as one carrying a single socket. A batcher turns the per-socket calls into batch
// calls without any timer: a batch is whatever is queued when a worker becomes free.
// An idle gateway sends every request at once in a batch of one (no added latency);
// a loaded one sends batches that grow with the backlog, up to maxBatch.

// Defaults for the gateway's batchers: up to authWorkers (connectWorkers,
// sendWorkers) batch calls in flight, each carrying up to batchMax sockets (sends).
const (
	authWorkers    = 4
	connectWorkers = 4
	sendWorkers    = 4
	batchMax       = 256
)

// errBatcherClosed is returned by Do once the batcher has stopped.
var errBatcherClosed = errors.New("gateway: batcher closed")

// batcher gathers concurrent requests into batch calls. Safe for concurrent use.
type batcher[Req, Resp any] struct {
	call     func(ctx context.Context, reqs []Req) ([]Resp, error)
	workers  int
	maxBatch int

	queue    chan *pending[Req, Resp] // bounded: a full queue makes Do wait (backpressure)
	stop     chan struct{}            // closed by close: workers exit after their current batch
	exited   chan struct{}            // closed when every worker has exited
	wg       sync.WaitGroup
	startOne sync.Once
	stopOne  sync.Once
}

// pending is one Do waiting for its slot of a batch call.
type pending[Req, Resp any] struct {
	ctx  context.Context // the caller's: a batch skips callers that stopped waiting
	req  Req
	done chan result[Resp] // buffered: the worker never waits for a caller that left
}

type result[Resp any] struct {
	resp Resp
	err  error
}

// newBatcher returns a stopped batcher: start runs its workers. call gets at most
// maxBatch requests and must return one response per request, in the same order;
// its ctx is not any caller's (a batch serves many), so call bounds itself.
func newBatcher[Req, Resp any](workers, maxBatch int, call func(ctx context.Context, reqs []Req) ([]Resp, error)) *batcher[Req, Resp] {
	workers, maxBatch = max(workers, 1), max(maxBatch, 1)
	return &batcher[Req, Resp]{
		call:     call,
		workers:  workers,
		maxBatch: maxBatch,
		queue:    make(chan *pending[Req, Resp], workers*maxBatch),
		stop:     make(chan struct{}),
		exited:   make(chan struct{}),
	}
}

// start runs the workers; calls after the first do nothing.
func (b *batcher[Req, Resp]) start() {
	b.startOne.Do(func() {
		b.wg.Add(b.workers)
		for range b.workers {
			go func() {
				defer b.wg.Done()
				b.work()
			}()
		}
		go func() {
			b.wg.Wait()
			close(b.exited)
		}()
	})
}

// close stops the workers once their current batch is answered and waits for them.
// Requests still queued fail with errBatcherClosed. A batcher never started is
// closed at once.
func (b *batcher[Req, Resp]) close() {
	b.stopOne.Do(func() {
		close(b.stop)
		b.start() // so exited closes even when start never ran: workers see stop and leave
	})
	<-b.exited
	for {
		select {
		case p := <-b.queue:
			p.done <- result[Resp]{err: errBatcherClosed}
		default:
			return
		}
	}
}

// Do queues req and waits for its answer from the batch call it ends up in, or for
// ctx to end (the batch still completes; its answer for this caller is dropped).
func (b *batcher[Req, Resp]) Do(ctx context.Context, req Req) (Resp, error) {
	var zero Resp
	p := &pending[Req, Resp]{ctx: ctx, req: req, done: make(chan result[Resp], 1)}
	select {
	case <-b.stop:
		return zero, errBatcherClosed
	default:
	}
	select {
	case b.queue <- p:
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-b.stop:
		return zero, errBatcherClosed
	}
	select {
	case r := <-p.done:
		return r.resp, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-b.exited:
		// Queued just as the workers left: close answers what it finds in the
		// queue, but this request may have been taken by nobody.
		select {
		case r := <-p.done:
			return r.resp, r.err
		default:
			return zero, errBatcherClosed
		}
	}
}

// work takes batches until stop: it blocks for a first request, then takes what
// else is already queued, up to maxBatch, without waiting for more.
func (b *batcher[Req, Resp]) work() {
	batch := make([]*pending[Req, Resp], 0, b.maxBatch)
	reqs := make([]Req, 0, b.maxBatch)
	for {
		var first *pending[Req, Resp]
		select {
		case <-b.stop:
			return
		case first = <-b.queue:
		}
		batch = append(batch[:0], first)
	drain:
		for len(batch) < b.maxBatch {
			select {
			case p := <-b.queue:
				batch = append(batch, p)
			default:
				break drain
			}
		}
		b.run(batch, reqs[:0])
		clear(batch) // drop references to answered callers while idle
	}
}

// run makes one call for the callers still waiting in batch and answers each.
func (b *batcher[Req, Resp]) run(batch []*pending[Req, Resp], reqs []Req) {
	live := batch[:0]
	for _, p := range batch {
		if p.ctx.Err() != nil {
			continue // the caller stopped waiting: do not spend the call on it
		}
		live = append(live, p)
		reqs = append(reqs, p.req)
	}
	if len(live) == 0 {
		return
	}
	resps, err := b.call(context.Background(), reqs)
	if err == nil && len(resps) != len(reqs) {
		err = fmt.Errorf("gateway: batch call answered %d of %d requests", len(resps), len(reqs))
	}
	for i, p := range live {
		if err != nil {
			p.done <- result[Resp]{err: err}
		} else {
			p.done <- result[Resp]{resp: resps[i]}
		}
	}
	clear(reqs) // drop references to the requests while idle
}
