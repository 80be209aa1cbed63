package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gochat/gochat/gateway"
	"github.com/gochat/gochat/logic"
	"github.com/gochat/gochat/logic/pushq"
	"github.com/gochat/gochat/repo/store"
	"github.com/gochat/gochat/task"
)

// Config is the whole gochat configuration. Precedence: flags > GOCHAT_* env > YAML
// file > Default(). Every leaf is reachable the same three ways: YAML key
// gateway.addr, env GOCHAT_GATEWAY_ADDR, flag -gateway.addr.
type Config struct {
	Target        string            `yaml:"target"`         // all | comma list of gateway,logic,task,repo
	ShutdownGrace time.Duration     `yaml:"shutdown_grace"` // after this the process exits non-zero
	GCPercent     int               `yaml:"gc_percent"`     // the process's GOGC; 0 = by target (gcPercent)
	Log           LogConfig         `yaml:"log"`
	Admin         AdminConfig       `yaml:"admin"`
	Auth          AuthConfig        `yaml:"auth"`
	Etcd          EtcdConfig        `yaml:"etcd"`
	Redis         RedisConfig       `yaml:"redis"`
	Kafka         pushq.KafkaConfig `yaml:"kafka"`
	Store         store.Config      `yaml:"store"`
	Gateway       gateway.Config    `yaml:"gateway"`
	Logic         logic.Config      `yaml:"logic"`
	Task          task.Config       `yaml:"task"`
	Repo          RepoConfig        `yaml:"repo"`
}

// LogConfig selects the slog handler.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json
}

// AdminConfig is the per-process admin listener: /metrics, /healthz, /readyz, /debug/pprof, /log_level.
type AdminConfig struct {
	Addr string `yaml:"addr"` // empty disables it
}

// AuthConfig holds the token secret shared by logic (signs) and gateways (verify).
type AuthConfig struct {
	Secret string `yaml:"secret" secret:"true"` // at least 16 bytes; generated per run when empty in all mode
}

// EtcdConfig is service discovery. No endpoints in all mode = an embedded etcd.
type EtcdConfig struct {
	Endpoints []string      `yaml:"endpoints"`
	DataDir   string        `yaml:"data_dir"`  // embedded etcd's directory
	LeaseTTL  time.Duration `yaml:"lease_ttl"` // registration lease: a dead instance leaves rotation after this
}

// RedisConfig is the volatile state. No address in all mode = in-process state.
type RedisConfig struct {
	Addr     string `yaml:"addr"`
	Password string `yaml:"password" secret:"true"`
	DB       int    `yaml:"db"`
	Prefix   string `yaml:"prefix"`
}

// RepoConfig is repo's listener.
type RepoConfig struct {
	RPCAddr string `yaml:"rpc_addr"`
	NodeID  int64  `yaml:"node_id"` // snowflake node; -1 = lease one from etcd (split mode default)
}

// Default runs everything on this machine with embedded defaults.
func Default() Config {
	return Config{
		Target:        "all",
		ShutdownGrace: 15 * time.Second,
		Log:           LogConfig{Level: "info", Format: "text"},
		Admin:         AdminConfig{Addr: "127.0.0.1:9100"},
		Etcd:          EtcdConfig{DataDir: "data/etcd", LeaseTTL: 2 * time.Second},
		Redis:         RedisConfig{Prefix: "gochat:"},
		Kafka:         pushq.DefaultKafka(),
		Store:         store.Default(),
		Gateway:       gateway.Default(),
		Logic:         logic.Default(),
		Task:          task.Default(),
		Repo:          RepoConfig{RPCAddr: "127.0.0.1:9401", NodeID: -1},
	}
}

// Validate checks each part and the cross-component rules of the split topology.
func (c Config) Validate() error {
	targets, err := expandTargets(c.Target)
	if err != nil {
		return err
	}
	errs := []error{c.Gateway.Validate(), c.Logic.Validate(), c.Task.Validate(), c.Store.Validate()}
	if len(c.Kafka.Brokers) > 0 {
		errs = append(errs, c.Kafka.Validate())
	}
	if c.ShutdownGrace <= 0 {
		errs = append(errs, errors.New("shutdown_grace must be positive"))
	}
	if c.GCPercent < 0 {
		errs = append(errs, errors.New("gc_percent must be positive, or 0 for the target's default"))
	}
	if c.Etcd.LeaseTTL < time.Second {
		errs = append(errs, errors.New("etcd.lease_ttl must be at least 1s"))
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		errs = append(errs, fmt.Errorf("log.level %q: use debug, info, warn or error", c.Log.Level))
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format %q: use text or json", c.Log.Format))
	}
	if c.Auth.Secret != "" && len(c.Auth.Secret) < 16 {
		errs = append(errs, errors.New("auth.secret must be at least 16 bytes"))
	}
	if c.Repo.RPCAddr == "" {
		errs = append(errs, errors.New("repo.rpc_addr is required"))
	}
	if c.Repo.NodeID < -1 || c.Repo.NodeID > 1023 {
		errs = append(errs, errors.New("repo.node_id must be -1 (lease from etcd) or 0..1023"))
	}
	if !isAll(targets) {
		// Split topology: every process must share discovery, secret, bus and state.
		if len(c.Etcd.Endpoints) == 0 {
			errs = append(errs, errors.New("split topology: etcd.endpoints is required"))
		}
		if c.Auth.Secret == "" && (slices.Contains(targets, "gateway") || slices.Contains(targets, "logic")) {
			errs = append(errs, errors.New("split topology: auth.secret is required (gateways and logic must share it)"))
		}
		if len(c.Kafka.Brokers) == 0 && (slices.Contains(targets, "gateway") || slices.Contains(targets, "logic") || slices.Contains(targets, "task")) {
			errs = append(errs, errors.New("split topology: kafka.brokers is required"))
		}
		if slices.Contains(targets, "repo") {
			if c.Store.Driver != "mysql" {
				errs = append(errs, errors.New("split topology: repo needs store.driver=mysql"))
			}
			if c.Redis.Addr == "" {
				errs = append(errs, errors.New("split topology: repo needs redis.addr"))
			}
		}
	}
	return errors.Join(errs...)
}

// options are the command-line switches that are not config leaves.
type options struct {
	configFile  string
	printConfig bool
	listTargets bool
}

// Load builds the configuration from defaults, an optional YAML file, GOCHAT_* env and flags.
func Load(args []string, environ []string, stderr io.Writer) (Config, options, error) {
	cfg := Default()
	var opts options
	fs := flag.NewFlagSet("gochat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&opts.configFile, "config", "", "optional YAML config file")
	fs.BoolVar(&opts.printConfig, "print-config", false, "print the effective config (secrets redacted) and exit")
	fs.BoolVar(&opts.listTargets, "list-targets", false, "print the targets and exit")

	leaves := configLeaves(&cfg)
	flagVals := map[string]string{}
	for _, l := range leaves {
		fs.Func(l.path, l.help(), func(s string) error {
			flagVals[l.path] = s
			return nil
		})
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, opts, err
	}
	if fs.NArg() > 0 {
		return Config{}, opts, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if opts.configFile != "" {
		b, err := os.ReadFile(opts.configFile)
		if err != nil {
			return Config{}, opts, fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return Config{}, opts, fmt.Errorf("parse %s: %w", opts.configFile, err)
		}
	}
	// The file may have replaced slices/structs; walk again for fresh setters.
	leaves = configLeaves(&cfg)
	byEnv := map[string]leaf{}
	byPath := map[string]leaf{}
	for _, l := range leaves {
		byEnv[l.env] = l
		byPath[l.path] = l
	}
	var errs []error
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "GOCHAT_") || strings.HasPrefix(k, "GOCHAT_TEST_") {
			continue
		}
		l, ok := byEnv[k]
		if !ok {
			errs = append(errs, fmt.Errorf("unknown environment variable %s", k))
			continue
		}
		if err := l.set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
		}
	}
	for path, v := range flagVals {
		if err := byPath[path].set(v); err != nil {
			errs = append(errs, fmt.Errorf("-%s: %w", path, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, opts, err
	}
	return cfg, opts, cfg.Validate()
}

// leaf is one settable config value.
type leaf struct {
	path   string // gateway.addr
	env    string // GOCHAT_GATEWAY_ADDR
	v      reflect.Value
	secret bool
}

func (l leaf) help() string {
	return fmt.Sprintf("config %s (env %s)", l.path, l.env)
}

var durationType = reflect.TypeFor[time.Duration]()

func (l leaf) set(s string) error {
	switch {
	case l.v.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		l.v.SetInt(int64(d))
	case l.v.Kind() == reflect.String:
		l.v.SetString(s)
	case l.v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		l.v.SetBool(b)
	case l.v.CanInt():
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		if l.v.OverflowInt(n) {
			return fmt.Errorf("%d is out of range", n)
		}
		l.v.SetInt(n)
	case l.v.Kind() == reflect.Slice && l.v.Type().Elem().Kind() == reflect.String:
		var parts []string
		for p := range strings.SplitSeq(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		l.v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported type %s", l.v.Type())
	}
	return nil
}

// configLeaves walks the yaml-tagged fields of cfg.
func configLeaves(cfg *Config) []leaf {
	var out []leaf
	var walk func(v reflect.Value, path []string)
	walk = func(v reflect.Value, path []string) {
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			p := append(slices.Clone(path), name)
			fv := v.Field(i)
			if f.Type.Kind() == reflect.Struct {
				walk(fv, p)
				continue
			}
			out = append(out, leaf{
				path:   strings.Join(p, "."),
				env:    "GOCHAT_" + strings.ToUpper(strings.Join(p, "_")),
				v:      fv,
				secret: f.Tag.Get("secret") == "true",
			})
		}
	}
	walk(reflect.ValueOf(cfg).Elem(), nil)
	return out
}

var dsnPassword = regexp.MustCompile(`^([^:@/]*):([^@]*)@`)

// Redacted returns the config as YAML with secrets replaced.
func (c Config) Redacted() ([]byte, error) {
	cp := c
	cp.Gateway.AllowedOrigins = slices.Clone(c.Gateway.AllowedOrigins)
	for _, l := range configLeaves(&cp) {
		if l.secret && l.v.String() != "" {
			l.v.SetString("<redacted>")
		}
	}
	cp.Store.DSN = dsnPassword.ReplaceAllString(cp.Store.DSN, "$1:<redacted>@")
	return yaml.Marshal(cp)
}
