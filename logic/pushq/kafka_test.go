package pushq

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

func TestKafkaConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*KafkaConfig)
		wantErr bool
	}{
		{name: "default, no brokers", mutate: func(*KafkaConfig) {}},
		{name: "brokers", mutate: func(c *KafkaConfig) { c.Brokers = []string{"127.0.0.1:9092", "[::1]:9093", "kafka:9092"} }},
		{name: "broker without port", mutate: func(c *KafkaConfig) { c.Brokers = []string{"kafka"} }, wantErr: true},
		{name: "broker without host", mutate: func(c *KafkaConfig) { c.Brokers = []string{":9092"} }, wantErr: true},
		{name: "bad client id", mutate: func(c *KafkaConfig) { c.ClientID = "go chat" }, wantErr: true},
		{name: "zero partitions", mutate: func(c *KafkaConfig) { c.Partitions = 0 }, wantErr: true},
		{name: "zero publish timeout", mutate: func(c *KafkaConfig) { c.PublishTimeout = 0 }, wantErr: true},
		{name: "heartbeat not below session", mutate: func(c *KafkaConfig) { c.HeartbeatInterval = c.SessionTimeout }, wantErr: true},
		{name: "zero rebalance", mutate: func(c *KafkaConfig) { c.RebalanceTimeout = 0 }, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultKafka()
			tt.mutate(&c)
			if err := c.Validate(); (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func TestKafkaValidateReportsAllProblems(t *testing.T) {
	c := DefaultKafka()
	c.Partitions, c.PublishTimeout = 0, 0
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate() = nil")
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 2 {
		t.Errorf("Validate() = %v, want both problems", err)
	}
}

func TestNewKafkaDoesNoIO(t *testing.T) {
	if _, err := NewKafka(DefaultKafka(), nil); err == nil {
		t.Error("NewKafka without brokers: err = nil")
	}
	// Port 1 on loopback refuses connections; NewKafka must not notice.
	k, err := NewKafka(testKafkaConfig([]string{"127.0.0.1:1"}), testLogger(t))
	if err != nil {
		t.Fatalf("NewKafka: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := k.Publish(ctx, "t", nil, []byte("x")); err == nil {
		t.Error("Publish to an unreachable broker: err = nil")
	}
	if err := k.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestKafkaPublishHonoursCtx(t *testing.T) {
	k := newKafkaBus(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := k.Publish(ctx, TopicJobs, nil, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("Publish with a cancelled ctx = %v, want context.Canceled", err)
	}
}

func TestKafkaEnsureTopics(t *testing.T) {
	c := newKafkaCluster(t)
	cfg := testKafkaConfig(c.ListenAddrs())
	cfg.Partitions = 3
	k, err := NewKafka(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("NewKafka: %v", err)
	}
	t.Cleanup(func() { _ = k.Close() })

	const a, b = "ensure.a", "ensure.b"
	if err := k.EnsureTopics(t.Context(), 0, a); err != nil { // default partitions
		t.Fatalf("EnsureTopics(%s): %v", a, err)
	}
	if err := k.EnsureTopics(t.Context(), 5, a, b, TopicJobs); err != nil { // a and jobs exist: fine
		t.Fatalf("EnsureTopics again: %v", err)
	}

	client, err := sarama.NewClient(cfg.Brokers, cfg.saramaConfig())
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	defer client.Close()
	for topic, want := range map[string]int{a: 3, b: 5, TopicJobs: 6} {
		parts, err := client.Partitions(topic)
		if err != nil || len(parts) != want {
			t.Errorf("%s: %d partitions (%v), want %d", topic, len(parts), err, want)
		}
	}
}
