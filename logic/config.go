package logic

import (
	"errors"
	"fmt"
	"time"
)

// Config is logic's part of the gochat configuration.
type Config struct {
	RPCAddr       string        `yaml:"rpc_addr"`        // Kitex listen address
	TokenTTL      time.Duration `yaml:"token_ttl"`       // access token lifetime
	BcryptCost    int           `yaml:"bcrypt_cost"`     // password hashing cost
	MaxContent    int           `yaml:"max_content"`     // bytes of message content
	PushQueue     int           `yaml:"push_queue"`      // pushes waiting to be published, per shard
	PushShards    int           `yaml:"push_shards"`     // publisher goroutines; a conversation always maps to one
	PushRetry     time.Duration `yaml:"push_retry"`      // how long logic retries a failed publish before handing it to task
	DeferDeadline time.Duration `yaml:"defer_deadline"`  // how long task keeps retrying a push logic could not publish
	UserCacheSize int           `yaml:"user_cache_size"` // sender names kept in memory (usernames never change)
	ShutdownDrain time.Duration `yaml:"shutdown_drain"`  // time to publish queued pushes on shutdown
	LargeGroup    int           `yaml:"large_group"`     // conversations with more members are fanned out by task
	// MemberCacheTTL is how long a group's member list read for a send is reused
	// (groupcache.go); 0 reads it for every send.
	MemberCacheTTL time.Duration `yaml:"member_cache_ttl"`
}

// Default is the single-machine configuration.
func Default() Config {
	return Config{
		RPCAddr:       "127.0.0.1:9201",
		TokenTTL:      7 * 24 * time.Hour,
		BcryptCost:    10,
		MaxContent:    4096,
		PushQueue:     4096,
		PushShards:    8,
		PushRetry:     time.Second,
		DeferDeadline: 2 * time.Minute,
		UserCacheSize: 100_000,
		ShutdownDrain: 3 * time.Second,
		LargeGroup:    500,

		MemberCacheTTL: time.Second,
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.RPCAddr == "" {
		errs = append(errs, errors.New("logic.rpc_addr is required"))
	}
	if c.TokenTTL < time.Minute {
		errs = append(errs, fmt.Errorf("logic.token_ttl %s is shorter than a minute", c.TokenTTL))
	}
	if c.BcryptCost < 4 || c.BcryptCost > 31 {
		errs = append(errs, fmt.Errorf("logic.bcrypt_cost %d is outside 4..31", c.BcryptCost))
	}
	if c.MaxContent < 1 || c.MaxContent > 60*1024 {
		errs = append(errs, fmt.Errorf("logic.max_content %d is outside 1..61440 (frames are capped at 64 KiB)", c.MaxContent))
	}
	if c.PushQueue < 1 || c.PushShards < 1 {
		errs = append(errs, errors.New("logic.push_queue and logic.push_shards must be positive"))
	}
	if c.LargeGroup < 1 || c.LargeGroup > 999 {
		errs = append(errs, errors.New("logic.large_group must be 1..999"))
	}
	if c.MemberCacheTTL < 0 || c.MemberCacheTTL > time.Minute {
		errs = append(errs, fmt.Errorf("logic.member_cache_ttl %s is outside 0..1m", c.MemberCacheTTL))
	}
	if c.UserCacheSize < 0 {
		errs = append(errs, errors.New("logic.user_cache_size must not be negative"))
	}
	return errors.Join(errs...)
}
