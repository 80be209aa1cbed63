package pushq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

const maxPartitions = 10000

// KafkaConfig configures the Kafka bus. Empty Brokers means "no Kafka": the
// composition root then uses Memory, and Validate accepts that.
type KafkaConfig struct {
	Brokers  []string `yaml:"brokers"`
	ClientID string   `yaml:"client_id"`
	// Partitions is what EnsureTopics creates when asked for <= 0.
	Partitions int `yaml:"partitions"`
	// PublishTimeout bounds one Publish (connect, queue, ack) when the
	// caller's ctx has no earlier deadline; it is also the broker-side ack
	// timeout.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// Consumer-group timing (ConsumeGroup). Brokers clamp the session
	// timeout to group.min.session.timeout.ms (6 s on Kafka and kfake).
	// A member learns about a rebalance at its next heartbeat, so the
	// heartbeat interval bounds how fast a new member gets work.
	SessionTimeout    time.Duration `yaml:"session_timeout"`
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// RebalanceTimeout is how long members get to finish the record in hand
	// and rejoin during a rebalance.
	RebalanceTimeout time.Duration `yaml:"rebalance_timeout"`
}

// DefaultKafka is the configuration without brokers (so: in-process bus).
func DefaultKafka() KafkaConfig {
	return KafkaConfig{
		ClientID:          "gochat",
		Partitions:        6,
		PublishTimeout:    5 * time.Second,
		SessionTimeout:    10 * time.Second,
		HeartbeatInterval: 3 * time.Second,
		RebalanceTimeout:  60 * time.Second,
	}
}

// Validate reports every problem at once.
func (c KafkaConfig) Validate() error {
	var errs []error
	for _, b := range c.Brokers {
		if host, port, err := net.SplitHostPort(b); err != nil || host == "" || port == "" {
			errs = append(errs, fmt.Errorf("brokers: %q is not host:port", b))
		}
	}
	if c.ClientID == "" || !topicChars(c.ClientID) {
		errs = append(errs, fmt.Errorf("client_id: %q must be 1+ of [a-zA-Z0-9._-]", c.ClientID))
	}
	if c.Partitions < 1 || c.Partitions > maxPartitions {
		errs = append(errs, fmt.Errorf("partitions: must be 1..%d, got %d", maxPartitions, c.Partitions))
	}
	if c.PublishTimeout <= 0 {
		errs = append(errs, fmt.Errorf("publish_timeout: must be > 0, got %s", c.PublishTimeout))
	}
	if c.SessionTimeout <= 0 {
		errs = append(errs, fmt.Errorf("session_timeout: must be > 0, got %s", c.SessionTimeout))
	}
	if c.HeartbeatInterval <= 0 || c.HeartbeatInterval >= c.SessionTimeout {
		errs = append(errs, fmt.Errorf("heartbeat_interval: must be > 0 and < session_timeout, got %s", c.HeartbeatInterval))
	}
	if c.RebalanceTimeout <= 0 {
		errs = append(errs, fmt.Errorf("rebalance_timeout: must be > 0, got %s", c.RebalanceTimeout))
	}
	if len(errs) == 0 {
		if err := c.saramaConfig().Validate(); err != nil {
			errs = append(errs, fmt.Errorf("sarama config: %w", err))
		}
	}
	return errors.Join(errs...)
}

// saramaConfig returns a fresh config: every sarama client gets its own.
// Producer: acks from all in-sync replicas, hash partitioner by key, sync
// semantics (Return.Successes). Consumer settings per deps.md §7.
func (c KafkaConfig) saramaConfig() *sarama.Config {
	sc := sarama.NewConfig() // Version V2_8_0_0, verified against kfake
	sc.ClientID = c.ClientID
	sc.Net.DialTimeout = 10 * time.Second
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Producer.Partitioner = sarama.NewHashPartitioner
	sc.Producer.Timeout = c.PublishTimeout
	sc.Consumer.Return.Errors = true
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest // groups: a new group starts at the beginning
	sc.Consumer.Group.Session.Timeout = c.SessionTimeout
	sc.Consumer.Group.Heartbeat.Interval = c.HeartbeatInterval
	sc.Consumer.Group.Rebalance.Timeout = c.RebalanceTimeout
	return sc
}

// Kafka is the bus over Kafka (sarama).
//
// Connections are made lazily: NewKafka does no I/O. The producer connection
// (also used by EnsureTopics) is dialled on first use and shared; a failed
// dial is not remembered, the next call dials again. Call EnsureTopics at
// startup to fail fast on a wrong broker list. Each Subscription and each
// ConsumeGroup call gets its own sarama client, hence its own broker
// connections: a broker answers the requests of one connection in order, so
// a long-polling fetch or JoinGroup would otherwise stall produce requests
// and other members' heartbeats behind it.
//
// sarama calls are not ctx-aware; where one may block for long (dial,
// produce) it runs in a goroutine tracked by the bus, the caller returns on
// ctx, and Close waits for it.
type Kafka struct {
	cfg  KafkaConfig
	log  *slog.Logger
	runs *runs // subscriptions, group members, in-flight publishes and dials

	mu       sync.Mutex
	client   sarama.Client       // producer/admin client, nil until connected; guarded by mu
	producer sarama.SyncProducer // on client; guarded by mu
	dialing  *kafkaDial          // connect in progress, nil otherwise; guarded by mu
}

// kafkaDial is one shared connect attempt; its fields are written before done
// is closed and only read after.
type kafkaDial struct {
	done     chan struct{}
	client   sarama.Client
	producer sarama.SyncProducer
	err      error
}

// NewKafka validates cfg and returns a bus that connects on first use.
func NewKafka(cfg KafkaConfig, log *slog.Logger) (*Kafka, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kafka config: %w", err)
	}
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("kafka config: brokers: at least one is required")
	}
	if log == nil {
		log = discardLogger()
	}
	return &Kafka{cfg: cfg, log: log.With("component", "pushq"), runs: newRuns()}, nil
}

// Publish sends the record with a sync producer and returns after the broker
// acked it (acks=all), or after ctx or PublishTimeout, whichever is first. On
// a ctx error the record may still be written.
func (k *Kafka) Publish(ctx context.Context, topic string, key, value []byte) error {
	if err := validateTopic(topic); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, k.cfg.PublishTimeout)
	defer cancel()
	_, release, err := k.runs.start(context.Background())
	if err != nil {
		return err
	}
	prod, _, err := k.conn(ctx)
	if err != nil {
		release()
		return fmt.Errorf("publish to %s: %w", topic, err)
	}
	msg := &sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(bytes.Clone(value))}
	if len(key) > 0 {
		msg.Key = sarama.ByteEncoder(bytes.Clone(key))
	}
	res := make(chan error, 1)
	go func() {
		defer release()
		_, _, err := prod.SendMessage(msg)
		res <- err
	}()
	select {
	case err := <-res:
		if err != nil {
			return fmt.Errorf("publish to %s: %w", topic, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("publish to %s: %w", topic, context.Cause(ctx))
	}
}

// PublishMany publishes recs in one pipelined round (sarama's SendMessages: the
// records of a partition travel together, in order) and waits for every broker
// ack; errs[i] answers recs[i]. One round trip for the lot is what lets a logic
// publish a busy group commit's pushes as fast as it stores them.
func (k *Kafka) PublishMany(ctx context.Context, recs []Record) []error {
	errs := make([]error, len(recs))
	msgs := make([]*sarama.ProducerMessage, 0, len(recs))
	index := make(map[*sarama.ProducerMessage]int, len(recs))
	for i, r := range recs {
		if err := validateTopic(r.Topic); err != nil {
			errs[i] = err
			continue
		}
		msg := &sarama.ProducerMessage{Topic: r.Topic, Value: sarama.ByteEncoder(bytes.Clone(r.Value))}
		if len(r.Key) > 0 {
			msg.Key = sarama.ByteEncoder(bytes.Clone(r.Key))
		}
		index[msg] = i
		msgs = append(msgs, msg)
	}
	if len(msgs) == 0 {
		return errs
	}
	fail := func(err error) []error {
		for _, i := range index {
			errs[i] = fmt.Errorf("publish to %s: %w", recs[i].Topic, err)
		}
		return errs
	}
	ctx, cancel := context.WithTimeout(ctx, k.cfg.PublishTimeout)
	defer cancel()
	_, release, err := k.runs.start(context.Background())
	if err != nil {
		return fail(err)
	}
	prod, _, err := k.conn(ctx)
	if err != nil {
		release()
		return fail(err)
	}
	res := make(chan error, 1)
	go func() {
		defer release()
		res <- prod.SendMessages(msgs)
	}()
	select {
	case err := <-res:
		if err == nil {
			return errs
		}
		var perMsg sarama.ProducerErrors
		if !errors.As(err, &perMsg) {
			return fail(err)
		}
		for _, pe := range perMsg {
			if i, ok := index[pe.Msg]; ok {
				errs[i] = fmt.Errorf("publish to %s: %w", recs[i].Topic, pe.Err)
			}
		}
		return errs
	case <-ctx.Done():
		return fail(context.Cause(ctx))
	}
}

// Subscribe starts one partition consumer per partition of topic at the
// newest offset, with no group and no commits. The newest offsets are
// resolved before it returns.
func (k *Kafka) Subscribe(ctx context.Context, topic string, h func(value []byte)) (*Subscription, error) {
	if err := validateTopic(topic); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("subscribe to %s: nil handler", topic)
	}
	runCtx, release, err := k.runs.start(ctx)
	if err != nil {
		return nil, err
	}
	cons, err := dialCtx(runCtx, k.runs, func() (sarama.Consumer, error) {
		return sarama.NewConsumer(k.cfg.Brokers, k.cfg.saramaConfig())
	})
	if err != nil {
		release()
		return nil, fmt.Errorf("subscribe to %s: connect: %w", topic, err)
	}
	pcs, err := consumeNewest(cons, topic)
	if err != nil {
		_ = cons.Close()
		release()
		return nil, fmt.Errorf("subscribe to %s: %w", topic, err)
	}

	ctx, cancel := context.WithCancel(runCtx)
	sub := newSubscription(cancel)
	var wg sync.WaitGroup
	for _, pc := range pcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k.tail(ctx, sub, topic, pc, h)
		}()
	}
	go func() {
		wg.Wait()
		if err := cons.Close(); err != nil {
			k.log.Warn("close subscription consumer", "topic", topic, "err", err)
		}
		close(sub.done) // before release, so that a returned Close implies Done
		release()
	}()
	return sub, nil
}

// consumeNewest starts a consumer at the newest offset on every partition of
// topic, concurrently (each start resolves offsets with two round trips).
func consumeNewest(cons sarama.Consumer, topic string) ([]sarama.PartitionConsumer, error) {
	parts, err := cons.Partitions(topic)
	if err != nil {
		return nil, fmt.Errorf("list partitions: %w", err)
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("list partitions: %w", sarama.ErrUnknownTopicOrPartition)
	}
	pcs := make([]sarama.PartitionConsumer, len(parts))
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pcs[i], errs[i] = cons.ConsumePartition(topic, p, sarama.OffsetNewest)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("partition %d: %w", p, errs[i])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, pc := range pcs {
			if pc != nil {
				_ = pc.Close()
			}
		}
		return nil, err
	}
	return pcs, nil
}

// tail feeds one partition to h until ctx is done, then closes the partition
// consumer and drains it as sarama requires. If sarama gives the partition up
// by itself, the whole subscription fails so the owner can resubscribe.
func (k *Kafka) tail(ctx context.Context, sub *Subscription, topic string, pc sarama.PartitionConsumer, h func([]byte)) {
	msgs, errs := pc.Messages(), pc.Errors()
	stop := ctx.Done()
	for msgs != nil || errs != nil {
		select {
		case <-stop:
			stop = nil
			pc.AsyncClose()
		case m, ok := <-msgs:
			if !ok {
				msgs = nil
				if ctx.Err() == nil {
					sub.fail(fmt.Errorf("subscription to %s: partition consumer stopped", topic))
				}
				continue
			}
			if ctx.Err() == nil {
				h(m.Value)
			}
		case e, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			if ctx.Err() == nil {
				k.log.Warn("subscription fetch failed", "topic", e.Topic, "partition", e.Partition, "err", e.Err)
			}
		}
	}
}

// ConsumeGroup runs a sarama consumer group member until ctx is done. Offsets
// are marked only after h returned nil (committed every second and when a
// session ends); a failing h is retried in place with capped backoff, because
// a returning ConsumeClaim would end the session for every partition. After
// each rebalance it joins again. Failing to connect at all is returned as an
// error; session errors after that are logged and retried.
func (k *Kafka) ConsumeGroup(ctx context.Context, group string, topics []string, h func(ctx context.Context, key, value []byte) error) error {
	if err := validateGroupArgs(group, topics, h); err != nil {
		return err
	}
	ctx, release, err := k.runs.start(ctx)
	if err != nil {
		return err
	}
	defer release()

	cg, err := dialCtx(ctx, k.runs, func() (sarama.ConsumerGroup, error) {
		return sarama.NewConsumerGroup(k.cfg.Brokers, group, k.cfg.saramaConfig())
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("join group %s: %w", group, err)
	}
	errsDone := make(chan struct{})
	go func() {
		defer close(errsDone)
		for err := range cg.Errors() { // closed by cg.Close
			k.log.Warn("consumer group error", "group", group, "err", err)
		}
	}()
	defer func() {
		if err := cg.Close(); err != nil {
			k.log.Warn("leave consumer group", "group", group, "err", err)
		}
		<-errsDone
	}()

	handler := groupHandler{group: group, h: h, log: k.log}
	backoff := retryMin
	for {
		err := cg.Consume(ctx, topics, handler)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil { // rebalance: join again
			backoff = retryMin
			continue
		}
		k.log.Warn("consumer group session failed, rejoining", "group", group, "backoff", backoff, "err", err)
		if !sleepCtx(ctx, backoff) {
			return nil
		}
		backoff = min(2*backoff, retryMax)
	}
}

// groupHandler marks a message only after h succeeded (style.md §4.10).
type groupHandler struct {
	group string
	h     func(context.Context, []byte, []byte) error
	log   *slog.Logger
}

func (groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (g groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	ctx := sess.Context()
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			ref := recordRef{group: g.group, topic: msg.Topic, partition: msg.Partition, offset: msg.Offset}
			if !handleWithRetry(ctx, g.log, g.h, msg.Key, msg.Value, ref) {
				return nil // session ending; unmarked, so the next owner gets it again
			}
			sess.MarkMessage(msg, "")
		}
	}
}

// EnsureTopics creates each missing topic with partitions partitions (<= 0:
// KafkaConfig.Partitions) and the broker's default replication factor.
// Existing topics are left as they are.
func (k *Kafka) EnsureTopics(ctx context.Context, partitions int, topics ...string) error {
	if err := validateTopics(topics); err != nil {
		return err
	}
	if partitions <= 0 {
		partitions = k.cfg.Partitions
	}
	if partitions > maxPartitions {
		return fmt.Errorf("ensure topics: %d partitions exceeds %d", partitions, maxPartitions)
	}
	ctx, release, err := k.runs.start(ctx)
	if err != nil {
		return err
	}
	defer release()
	_, client, err := k.conn(ctx)
	if err != nil {
		return fmt.Errorf("ensure topics: %w", err)
	}
	// Not closed: closing a ClusterAdmin closes the client it was built on.
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return fmt.Errorf("ensure topics: admin: %w", err)
	}
	for _, t := range topics {
		if ctx.Err() != nil {
			return fmt.Errorf("ensure topics: %w", context.Cause(ctx))
		}
		detail := &sarama.TopicDetail{NumPartitions: int32(partitions), ReplicationFactor: -1}
		if err := admin.CreateTopic(t, detail, false); err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", t, err)
		}
	}
	if err := client.RefreshMetadata(topics...); err != nil {
		return fmt.Errorf("ensure topics: refresh metadata: %w", err)
	}
	return nil
}

// Close stops every subscription and group member, waits for in-flight
// publishes and dials, then closes the producer connection. Safe to call more
// than once.
func (k *Kafka) Close() error {
	if !k.runs.close() {
		return nil
	}
	k.mu.Lock()
	p, c := k.producer, k.client
	k.mu.Unlock()
	if p == nil {
		return nil
	}
	var errs []error
	if err := p.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close producer: %w", err))
	}
	if err := c.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close kafka client: %w", err))
	}
	return errors.Join(errs...)
}

// conn returns the shared producer and its client, connecting if needed.
// Concurrent callers share one attempt; each waits for it at most until its
// own ctx is done.
func (k *Kafka) conn(ctx context.Context) (sarama.SyncProducer, sarama.Client, error) {
	k.mu.Lock()
	if k.producer != nil {
		p, c := k.producer, k.client
		k.mu.Unlock()
		return p, c, nil
	}
	d := k.dialing
	if d == nil {
		_, release, err := k.runs.start(context.Background())
		if err != nil {
			k.mu.Unlock()
			return nil, nil, err
		}
		d = &kafkaDial{done: make(chan struct{})}
		k.dialing = d
		go k.dial(d, release)
	}
	k.mu.Unlock()
	select {
	case <-d.done:
		return d.producer, d.client, d.err
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("connect to kafka: %w", context.Cause(ctx))
	}
}

func (k *Kafka) dial(d *kafkaDial, release func()) {
	defer release()
	c, err := sarama.NewClient(k.cfg.Brokers, k.cfg.saramaConfig())
	var p sarama.SyncProducer
	if err == nil {
		if p, err = sarama.NewSyncProducerFromClient(c); err != nil {
			_ = c.Close()
		}
	}
	k.mu.Lock()
	k.dialing = nil
	if err == nil {
		k.client, k.producer = c, p
		d.client, d.producer = c, p
	} else {
		d.err = fmt.Errorf("connect to kafka %s: %w", strings.Join(k.cfg.Brokers, ","), err)
	}
	k.mu.Unlock()
	close(d.done)
}

// dialCtx runs dial in a goroutine tracked by r so that the caller can give
// up when ctx is done; a result nobody took is closed by that goroutine.
func dialCtx[T io.Closer](ctx context.Context, r *runs, dial func() (T, error)) (T, error) {
	var zero T
	_, release, err := r.start(context.Background())
	if err != nil {
		return zero, err
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result) // unbuffered: a send succeeds only if the caller takes it
	go func() {
		defer release()
		v, err := dial()
		select {
		case ch <- result{v, err}:
		case <-ctx.Done():
			if err == nil {
				_ = v.Close()
			}
		}
	}()
	select {
	case res := <-ch:
		return res.v, res.err
	case <-ctx.Done():
		return zero, context.Cause(ctx)
	}
}
