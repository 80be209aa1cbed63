package gateway

import (
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"syscall"
	"time"
)

// Config is the gateway's part of the gochat configuration.
type Config struct {
	// ID names this gateway in pushes and routes; empty = generated at start.
	ID string `yaml:"id"`
	// Addr serves the HTTP API and the WebSocket endpoint (/ws) on one port.
	Addr string `yaml:"addr"`
	// AllowedOrigins for CORS and WebSocket upgrades; "*" allows any origin.
	AllowedOrigins []string      `yaml:"allowed_origins"`
	MaxBody        int           `yaml:"max_body"`    // bytes of an HTTP request body
	RPCTimeout     time.Duration `yaml:"rpc_timeout"` // calls to logic
	Shards         int           `yaml:"shards"`      // socket table shards

	WSPath           string        `yaml:"ws_path"`
	MaxFrame         int           `yaml:"max_frame"`         // bytes of one WebSocket message
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"` // whole upgrade request
	ReadTimeout      time.Duration `yaml:"read_timeout"`      // rest of a started frame
	WriteTimeout     time.Duration `yaml:"write_timeout"`
	PingInterval     time.Duration `yaml:"ping_interval"`  // server RFC 6455 pings
	IdleTimeout      time.Duration `yaml:"idle_timeout"`   // close a socket silent this long
	SendQueue        int           `yaml:"send_queue"`     // frames queued per socket before it is closed
	MaxHandshakes    int           `yaml:"max_handshakes"` // concurrent upgrades
	// MaxConns caps the TCP connections held at once (WebSocket, HTTP, not yet
	// classified); one over it is closed as soon as it is accepted. 0: the process's
	// open-file limit minus fdReserve, which keeps descriptors for RPC, store and etcd.
	MaxConns     int           `yaml:"max_conns"`
	CloseGrace   time.Duration `yaml:"close_grace"`   // shutdown: time for close frames to go out
	RouteRefresh time.Duration `yaml:"route_refresh"` // heartbeat of this gateway's routes (they expire after 90 s)
}

// Default is the single-machine configuration.
func Default() Config {
	return Config{
		Addr:             ":8080",
		AllowedOrigins:   []string{"*"},
		MaxBody:          64 << 10,
		RPCTimeout:       3 * time.Second,
		Shards:           64,
		WSPath:           "/ws",
		MaxFrame:         64 << 10,
		HandshakeTimeout: 5 * time.Second,
		ReadTimeout:      10 * time.Second,
		WriteTimeout:     5 * time.Second,
		PingInterval:     30 * time.Second,
		IdleTimeout:      90 * time.Second,
		SendQueue:        256,
		MaxHandshakes:    1024,
		CloseGrace:       time.Second,
		RouteRefresh:     30 * time.Second,
	}
}

var idRe = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,64}$`)

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.ID != "" && !idRe.MatchString(c.ID) {
		errs = append(errs, fmt.Errorf("gateway.id %q: use 1-64 of [a-zA-Z0-9._-]", c.ID))
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("gateway.addr: %w", err))
	}
	if len(c.AllowedOrigins) == 0 {
		errs = append(errs, errors.New("gateway.allowed_origins: list at least one origin or \"*\""))
	}
	if c.MaxBody < 1024 {
		errs = append(errs, errors.New("gateway.max_body must be at least 1024"))
	}
	if c.MaxFrame < 1024 {
		errs = append(errs, errors.New("gateway.max_frame must be at least 1024"))
	}
	if c.WSPath == "" || c.WSPath[0] != '/' {
		errs = append(errs, errors.New("gateway.ws_path must start with /"))
	}
	for name, d := range map[string]time.Duration{
		"rpc_timeout": c.RPCTimeout, "handshake_timeout": c.HandshakeTimeout, "read_timeout": c.ReadTimeout,
		"write_timeout": c.WriteTimeout, "ping_interval": c.PingInterval, "idle_timeout": c.IdleTimeout,
		"route_refresh": c.RouteRefresh,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("gateway.%s must be positive", name))
		}
	}
	if c.IdleTimeout <= c.PingInterval {
		errs = append(errs, errors.New("gateway.idle_timeout must be longer than gateway.ping_interval"))
	}
	if c.MaxConns < 0 {
		errs = append(errs, errors.New("gateway.max_conns must not be negative (0: derived from the open-file limit)"))
	}
	if c.SendQueue < 1 || c.MaxHandshakes < 1 || c.Shards < 1 {
		errs = append(errs, errors.New("gateway.send_queue, max_handshakes and shards must be positive"))
	}
	return errors.Join(errs...)
}

// fdReserve is how many file descriptors a derived max_conns leaves to the rest of
// the process. In -target=all that includes both ends of every pooled Kitex loopback
// connection: with 20,000 open files, 18,000 sockets worked and 20,000 did not.
const fdReserve = 1024

// maxConns is c.MaxConns, or the open-file limit minus fdReserve when it is 0 (at
// least 64; no cap when the limit cannot be read or is unlimited).
func (c Config) maxConns() int {
	if c.MaxConns > 0 {
		return c.MaxConns
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > math.MaxInt32 {
		return 0
	}
	return max(int(lim.Cur)-fdReserve, 64)
}
