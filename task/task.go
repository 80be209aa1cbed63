// Package task runs work that must not block a send:
//   - pushes logic could not publish (the bus was unreachable for longer than logic's
//     own retry): kept in a bounded queue and retried with backoff until their deadline;
//   - fan-out of messages to large groups (fanout.go): jobs consumed from the jobs topic
//     with at-least-once semantics, resumable by message id.
package task

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/kitex/pkg/kerrors"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gochat/gochat/kitex_gen/base"
	"github.com/gochat/gochat/kitex_gen/taskapi"
	"github.com/gochat/gochat/logic/pushq"
)

// ServiceName is the Kitex service name task registers under.
const ServiceName = "gochat.task"

// Config is task's part of the gochat configuration.
type Config struct {
	RPCAddr     string        `yaml:"rpc_addr"`
	QueueSize   int           `yaml:"queue_size"`   // deferred pushes held at once
	MaxBackoff  time.Duration `yaml:"max_backoff"`  // cap of the retry backoff
	Group       string        `yaml:"group"`        // consumer group of the jobs topic
	FanoutBatch int           `yaml:"fanout_batch"` // members per page (and per push record) of a large-group fan-out
}

// Default is the single-machine configuration.
func Default() Config {
	return Config{RPCAddr: "127.0.0.1:9301", QueueSize: 100_000, MaxBackoff: 2 * time.Second, Group: "gochat-task", FanoutBatch: 200}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.RPCAddr == "" {
		errs = append(errs, errors.New("task.rpc_addr is required"))
	}
	if c.QueueSize < 1 {
		errs = append(errs, errors.New("task.queue_size must be positive"))
	}
	if c.MaxBackoff < time.Millisecond {
		errs = append(errs, errors.New("task.max_backoff must be at least 1ms"))
	}
	if c.Group == "" {
		errs = append(errs, errors.New("task.group is required"))
	}
	if c.FanoutBatch < 1 || c.FanoutBatch > 1000 {
		errs = append(errs, errors.New("task.fanout_batch must be 1..1000"))
	}
	return errors.Join(errs...)
}

// Publisher puts a record on the bus; *pushq.Memory and *pushq.Kafka satisfy it.
type Publisher interface {
	Publish(ctx context.Context, topic string, key, value []byte) error
}

// Bus is the bus task uses: publishing, and consuming the jobs topic as a group.
type Bus interface {
	Publisher
	ConsumeGroup(ctx context.Context, group string, topics []string, h func(ctx context.Context, key, value []byte) error) error
}

// Deps are task's collaborators.
type Deps struct {
	Log     *slog.Logger
	Metrics prometheus.Registerer
	Bus     Bus
	Repo    Repo       // members, routes and job progress, for large-group fan-out
	Gateway GatewaySet // live gateways; nil = every routed gateway counts as alive
}

type job struct {
	topic      string
	key, value []byte
	deadline   time.Time
}

// Task implements the TaskService Kitex API.
type Task struct {
	cfg      Config
	bus      Bus
	repo     Repo
	gateways GatewaySet
	log      *slog.Logger
	queue    chan job
	fan      *fanMetrics

	pending, delivered, dropped atomic.Int64
	deliveredC, droppedC        prometheus.Counter
}

var _ taskapi.TaskService = (*Task)(nil)

// New builds task; it does no I/O and starts nothing.
func New(cfg Config, d Deps) (*Task, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Log == nil || d.Metrics == nil || d.Bus == nil || d.Repo == nil {
		return nil, errors.New("task: log, metrics, bus and repo are required")
	}
	reg := d.Metrics
	t := &Task{
		cfg: cfg, bus: d.Bus, repo: d.Repo, gateways: d.Gateway, log: d.Log.With("component", "task"),
		queue: make(chan job, cfg.QueueSize),
		deliveredC: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gochat_task_deferred_delivered_total", Help: "Deferred pushes finally published.",
		}),
		droppedC: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gochat_task_deferred_dropped_total", Help: "Deferred pushes given up at their deadline or refused when the queue was full.",
		}),
	}
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gochat_task_deferred_pending", Help: "Deferred pushes waiting to be published.",
	}, func() float64 { return float64(t.pending.Load()) })
	for _, c := range []prometheus.Collector{t.deliveredC, t.droppedC, pending} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("task: register metrics: %w", err)
		}
	}
	fm, err := newFanMetrics(reg)
	if err != nil {
		return nil, err
	}
	t.fan = fm
	return t, nil
}

// DeferPush queues a push for retried publishing.
func (t *Task) DeferPush(_ context.Context, req *taskapi.DeferPushReq) (*taskapi.DeferPushResp, error) {
	if req.Topic == "" || len(req.Value) == 0 {
		return nil, kerrors.NewBizStatusError(int32(base.ErrCode_BAD_REQUEST), "topic and value are required")
	}
	j := job{topic: req.Topic, key: req.Key, value: req.Value, deadline: time.UnixMilli(req.DeadlineMs)}
	select {
	case t.queue <- j:
		t.pending.Add(1)
		return &taskapi.DeferPushResp{}, nil
	default:
		t.drop()
		return nil, kerrors.NewBizStatusError(int32(base.ErrCode_UNAVAILABLE), "deferred push queue is full")
	}
}

// Stats reports the deferred-push counters.
func (t *Task) Stats(context.Context, *taskapi.StatsReq) (*taskapi.StatsResp, error) {
	return &taskapi.StatsResp{Pending: t.pending.Load(), Delivered: t.delivered.Load(), Dropped: t.dropped.Load()}, nil
}

func (t *Task) drop() {
	t.dropped.Add(1)
	t.droppedC.Inc()
}

// Run serves the Kitex API (serve), retries deferred pushes and consumes fan-out jobs
// until ctx is done. Pushes still queued at shutdown are dropped and counted: they are
// best effort, and recipients recover by seq. A job in hand at shutdown is not marked
// and is redelivered to the next consumer, which resumes it from its cursor.
func (t *Task) Run(ctx context.Context, serve func(context.Context) error) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		t.work(ctx)
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			err := t.bus.ConsumeGroup(ctx, t.cfg.Group, []string{pushq.TopicJobs}, t.handleJob)
			if err == nil || ctx.Err() != nil {
				return
			}
			t.log.Warn("jobs consumer stopped; restarting", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	err := serve(ctx)
	wg.Wait()
	if n := t.pending.Swap(0); n > 0 {
		t.dropped.Add(n)
		t.droppedC.Add(float64(n))
		t.log.Warn("deferred pushes dropped at shutdown", "count", n)
	}
	return err
}

// work publishes queued pushes one at a time, in arrival order, backing off while the
// bus keeps failing.
func (t *Task) work(ctx context.Context) {
	backoff := 10 * time.Millisecond
	for {
		var j job
		select {
		case <-ctx.Done():
			return
		case j = <-t.queue:
		}
		for {
			if time.Now().After(j.deadline) {
				t.pending.Add(-1)
				t.drop()
				t.log.Warn("deferred push dropped at its deadline", "topic", j.topic)
				break
			}
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := t.bus.Publish(pctx, j.topic, j.key, j.value)
			cancel()
			if err == nil {
				t.pending.Add(-1)
				t.delivered.Add(1)
				t.deliveredC.Inc()
				backoff = 10 * time.Millisecond
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, t.cfg.MaxBackoff)
		}
	}
}
