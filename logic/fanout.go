package logic

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gochat/gochat/kitex_gen/taskapi"
	"github.com/gochat/gochat/logic/pushq"
)

// pushJob is one record to publish.
type pushJob struct {
	topic string
	key   []byte
	push  pushq.Push
}

// fanout publishes pushes off the send path: Send enqueues and returns (the ack does
// not wait for the bus). A conversation always hashes to the same shard, and a shard
// publishes in FIFO order, so pushes of one conversation leave logic in the order
// their appends returned. A publish that keeps failing for PushRetry is handed to
// task, which retries it for longer; pushes are best effort in any case, because a
// recipient recovers anything it missed by seq.
type fanout struct {
	bus      Publisher
	task     Task
	log      *slog.Logger
	retry    time.Duration
	deferFor time.Duration

	shards []chan pushJob

	// base bounds every publish and hand-over; cancelled ShutdownDrain after close so
	// a dead bus cannot hold shutdown hostage.
	base       context.Context
	baseCancel context.CancelFunc

	// mu guards closed; held for reading while enqueueing so close never races a send
	// on a closed channel.
	mu     sync.RWMutex
	closed bool

	published, deferred, dropped prometheus.Counter
	publishSeconds               prometheus.Histogram
}

func newFanout(cfg Config, bus Publisher, task Task, log *slog.Logger, reg prometheus.Registerer) (*fanout, error) {
	f := &fanout{
		bus: bus, task: task, log: log, retry: cfg.PushRetry, deferFor: cfg.DeferDeadline,
		shards: make([]chan pushJob, cfg.PushShards),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gochat_logic_pushes_published_total", Help: "Push records published to the bus.",
		}),
		deferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gochat_logic_pushes_deferred_total", Help: "Push records handed to task after publishing kept failing.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gochat_logic_pushes_dropped_total", Help: "Push records given up on (recipients recover by seq).",
		}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gochat_logic_publish_seconds", Help: "Time to publish one push record.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	for i := range f.shards {
		f.shards[i] = make(chan pushJob, cfg.PushQueue)
	}
	f.base, f.baseCancel = context.WithCancel(context.Background())
	for _, c := range []prometheus.Collector{f.published, f.deferred, f.dropped, f.publishSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("logic: register metrics: %w", err)
		}
	}
	return f, nil
}

func (f *fanout) enqueue(j pushJob) {
	h := fnv.New32a()
	h.Write(j.key)
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		f.dropped.Inc()
		f.log.Warn("push dropped: logic is shutting down", "conv", j.push.Message.ConversationID, "seq", j.push.Message.Seq)
		return
	}
	select {
	case f.shards[h.Sum32()%uint32(len(f.shards))] <- j:
	default:
		f.dropped.Inc()
		f.log.Warn("push dropped: publish queue full", "conv", j.push.Message.ConversationID, "seq", j.push.Message.Seq)
	}
}

// run publishes until close is called and the queues are drained.
func (f *fanout) run() {
	var wg sync.WaitGroup
	for _, ch := range f.shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				f.publish(j)
			}
		}()
	}
	wg.Wait()
}

// close stops accepting pushes; run returns once what is queued was published, or
// after drain, when the rest is dropped.
func (f *fanout) close(drain time.Duration) {
	f.mu.Lock()
	f.closed = true
	for _, ch := range f.shards {
		close(ch)
	}
	f.mu.Unlock()
	time.AfterFunc(drain, f.baseCancel)
}

func (f *fanout) publish(j pushJob) {
	value, err := j.push.Encode()
	if err != nil {
		f.dropped.Inc()
		f.log.Error("push dropped: encode", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(f.base, f.retry)
	defer cancel()
	backoff := 10 * time.Millisecond
	for {
		start := time.Now()
		err = f.bus.Publish(ctx, j.topic, j.key, value)
		if err == nil {
			f.publishSeconds.Observe(sinceSeconds(start))
			f.published.Inc()
			return
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
	f.handOver(j, value, err)
}

// handOver gives a push logic could not publish to task.
func (f *fanout) handOver(j pushJob, value []byte, cause error) {
	ctx, cancel := context.WithTimeout(f.base, 2*time.Second)
	defer cancel()
	_, err := f.task.DeferPush(ctx, &taskapi.DeferPushReq{
		Topic: j.topic, Key: j.key, Value: value, DeadlineMs: time.Now().Add(f.deferFor).UnixMilli(),
	})
	if err != nil {
		f.dropped.Inc()
		f.log.Error("push dropped: publish and hand-over to task failed",
			"conv", j.push.Message.ConversationID, "seq", j.push.Message.Seq, "err", errors.Join(cause, err))
		return
	}
	f.deferred.Inc()
	f.log.Warn("push handed to task after publish failures", "conv", j.push.Message.ConversationID, "seq", j.push.Message.Seq, "err", cause)
}
