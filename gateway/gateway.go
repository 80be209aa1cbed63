// Package gateway holds the client connections: the HTTP API (Hertz) and the
// WebSocket endpoint (netpoll event loops + gobwas/ws framing) on one port. It verifies
// tokens, forwards requests and sends to logic over Kitex, and writes the pushes it
// consumes from the bus to its sockets.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/kitex/client/callopt"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gochat/gochat/gateway/internal/conn"
	"github.com/gochat/gochat/gateway/internal/wsnet"
	"github.com/gochat/gochat/kitex_gen/logicapi"
	"github.com/gochat/gochat/kitex_gen/repoapi"
	"github.com/gochat/gochat/logic/authtoken"
	"github.com/gochat/gochat/logic/pushq"
)

// Logic is what the gateway calls; the generated logicservice.Client satisfies it.
type Logic interface {
	Ping(ctx context.Context, req *repoapi.PingReq, opts ...callopt.Option) (*repoapi.PingResp, error)
	Register(ctx context.Context, req *logicapi.RegisterReq, opts ...callopt.Option) (*logicapi.RegisterResp, error)
	Login(ctx context.Context, req *logicapi.LoginReq, opts ...callopt.Option) (*logicapi.LoginResp, error)
	Guest(ctx context.Context, req *logicapi.GuestReq, opts ...callopt.Option) (*logicapi.LoginResp, error)
	Logout(ctx context.Context, req *logicapi.LogoutReq, opts ...callopt.Option) (*logicapi.LogoutResp, error)
	Auth(ctx context.Context, req *logicapi.AuthReq, opts ...callopt.Option) (*logicapi.AuthResp, error)
	GetUser(ctx context.Context, req *logicapi.GetUserReq, opts ...callopt.Option) (*logicapi.GetUserResp, error)
	ListConversations(ctx context.Context, req *logicapi.ListConversationsReq, opts ...callopt.Option) (*logicapi.ListConversationsResp, error)
	ListMessages(ctx context.Context, req *logicapi.ListMessagesReq, opts ...callopt.Option) (*logicapi.ListMessagesResp, error)
	MarkRead(ctx context.Context, req *logicapi.MarkReadReq, opts ...callopt.Option) (*logicapi.MarkReadResp, error)
	Send(ctx context.Context, req *logicapi.SendReq, opts ...callopt.Option) (*logicapi.SendResp, error)
}

// Subscriber tails bus topics; *pushq.Memory and *pushq.Kafka satisfy it.
type Subscriber interface {
	Subscribe(ctx context.Context, topic string, h func(value []byte)) (*pushq.Subscription, error)
}

// Deps are the gateway's collaborators.
type Deps struct {
	Log     *slog.Logger
	Metrics prometheus.Registerer
	Logic   Logic
	Bus     Subscriber
	Tokens  *authtoken.Signer // verifies tokens locally; logic.Auth adds the revocation check
	// Gatherer, when set, is served at /metrics on the gateway port too.
	Gatherer prometheus.Gatherer
}

// Gateway is one gateway process's client-facing side.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	logic  Logic
	bus    Subscriber
	tokens *authtoken.Signer
	gather prometheus.Gatherer
	m      *metrics

	sockets *conn.Table[*wsnet.Conn]
	ws      *wsnet.Server

	ready    chan struct{} // closed when the listener is up and the push subscription is live
	addr     atomic.Pointer[net.TCPAddr]
	draining atomic.Bool // set at shutdown: /readyz answers 503
}

// New validates the configuration and builds the gateway. It does no I/O.
func New(cfg Config, d Deps) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Log == nil || d.Metrics == nil || d.Logic == nil || d.Bus == nil || d.Tokens == nil {
		return nil, errors.New("gateway: every dependency is required")
	}
	if cfg.ID == "" {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("gateway: id: %w", err)
		}
		cfg.ID = "gw-" + hex.EncodeToString(b[:])
	}
	g := &Gateway{
		cfg:     cfg,
		log:     d.Log.With("component", "gateway", "gateway", cfg.ID),
		logic:   d.Logic,
		bus:     d.Bus,
		tokens:  d.Tokens,
		gather:  d.Gatherer,
		sockets: conn.New[*wsnet.Conn](cfg.Shards),
		ready:   make(chan struct{}),
	}
	g.ws = wsnet.New(wsnet.Config{
		Path: cfg.WSPath, MaxFrame: cfg.MaxFrame, HandshakeTimeout: cfg.HandshakeTimeout,
		ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout, PingInterval: cfg.PingInterval,
		IdleTimeout: cfg.IdleTimeout, SendQueue: cfg.SendQueue, MaxHandshakes: cfg.MaxHandshakes,
	}, (*wsHandler)(g))
	m, err := newMetrics(d.Metrics, g)
	if err != nil {
		return nil, err
	}
	g.m = m
	return g, nil
}

// ID is this gateway's id.
func (g *Gateway) ID() string { return g.cfg.ID }

// Ready is closed once the gateway accepts connections and receives pushes.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// Addr is the bound address once Ready is closed.
func (g *Gateway) Addr() *net.TCPAddr { return g.addr.Load() }

// Run serves until ctx is done, then shuts down: readiness off, every socket closed
// with 1001 "going away", in-flight requests finished.
func (g *Gateway) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", g.cfg.Addr)
	if err != nil {
		return fmt.Errorf("gateway: listen %s: %w", g.cfg.Addr, err)
	}
	g.addr.Store(ln.Addr().(*net.TCPAddr))

	sub, err := g.bus.Subscribe(ctx, pushq.TopicBroadcast, g.onBroadcast)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("gateway: subscribe %s: %w", pushq.TopicBroadcast, err)
	}
	defer sub.Close()

	h := server.New(
		server.WithListener(ln),
		server.WithTransport(g.ws.Transport),
		server.WithMaxRequestBodySize(4*g.cfg.MaxBody), // the handler refuses > MaxBody with the envelope
		server.WithDisablePrintRoute(true),
		server.WithHandleMethodNotAllowed(true),
		server.WithExitWaitTime(2*time.Second),
		server.WithReadTimeout(30*time.Second),
		server.WithIdleTimeout(2*time.Minute),
	)
	g.routes(h, g.gather)

	var runErr error
	var once sync.Once
	h.SetCustomSignalWaiter(func(errCh chan error) error {
		once.Do(func() { close(g.ready) })
		select {
		case <-ctx.Done():
			g.draining.Store(true)
			sctx, cancel := context.WithTimeout(context.Background(), g.cfg.CloseGrace+time.Second)
			defer cancel()
			if err := g.ws.Shutdown(sctx); err != nil {
				g.log.Warn("closing websockets", "err", err)
			}
			return nil // Hertz then shuts down gracefully
		case err := <-errCh:
			runErr = err
			return err
		case <-sub.Done():
			// Without its push subscription the gateway would silently stop
			// delivering; fail so the process is restarted (clients reconnect and
			// recover by seq).
			runErr = fmt.Errorf("gateway: push subscription ended: %w", sub.Err())
			return runErr
		}
	})
	g.log.Info("gateway listening", "addr", ln.Addr().String(), "ws", g.cfg.WSPath)
	h.Spin()
	return runErr
}

// callCtx bounds one call to logic.
func (g *Gateway) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, g.cfg.RPCTimeout)
}
