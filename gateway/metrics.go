package gateway

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	sendSeconds  *prometheus.HistogramVec // frame in → ack (or error) out
	pushSeconds  prometheus.Histogram     // message stored → frame queued on this gateway
	frames       *prometheus.CounterVec   // application frames by direction and type
	httpReqs     *prometheus.CounterVec
	resubscribes prometheus.Counter
	duplicates   prometheus.Counter // pushes whose every delivery was already made here
	// Children resolved once, so the per-frame path does no label lookups.
	in, out         map[string]prometheus.Counter
	sendOK, sendErr prometheus.Observer
}

func newMetrics(reg prometheus.Registerer, g *Gateway) (*metrics, error) {
	m := &metrics{
		sendSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gochat_gateway_send_seconds",
			Help:    "send-message frame received to message-ack (or error) queued.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"result"}),
		pushSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gochat_gateway_push_seconds",
			Help:    "Message stored (its send time) to new-message frames queued on this gateway.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gochat_gateway_frames_total",
			Help: "WebSocket application frames by direction (in/out) and type.",
		}, []string{"dir", "type"}),
		resubscribes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gochat_gateway_resubscribes_total",
			Help: "Push subscriptions lost and re-established (bus outages).",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gochat_gateway_duplicate_pushes_total",
			Help: "Pushes dropped because this gateway already delivered them (resends, redone fan-out pages).",
		}),
		httpReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gochat_gateway_http_requests_total",
			Help: "HTTP API requests by status code.",
		}, []string{"code"}),
	}
	m.sendOK, m.sendErr = m.sendSeconds.WithLabelValues("ok"), m.sendSeconds.WithLabelValues("error")
	m.in, m.out = map[string]prometheus.Counter{}, map[string]prometheus.Counter{}
	for _, typ := range []string{"send-message", "ping", "sync", "read", "unknown", "invalid"} {
		m.in[typ] = m.frames.WithLabelValues("in", typ)
	}
	for _, typ := range []string{"connected", "message-ack", "error", "pong", "sync-result", "new-message", "friend-online"} {
		m.out[typ] = m.frames.WithLabelValues("out", typ)
	}
	cs := []prometheus.Collector{
		m.sendSeconds, m.pushSeconds, m.frames, m.httpReqs, m.resubscribes, m.duplicates,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gochat_gateway_connections", Help: "Open WebSocket connections.",
		}, func() float64 { return float64(g.ws.Conns()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gochat_gateway_users", Help: "Distinct users with at least one open socket.",
		}, func() float64 { return float64(g.sockets.Users()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "gochat_gateway_upgrades_total", Help: "Successful WebSocket upgrades.",
		}, func() float64 { return float64(g.ws.Stats().Upgrades) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "gochat_gateway_upgrades_rejected_total", Help: "Refused WebSocket upgrades (bad token, bad request, overload).",
		}, func() float64 { return float64(g.ws.Stats().Rejected) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "gochat_gateway_handshake_timeouts_total", Help: "Connections closed for not completing a request head or upgrade in time.",
		}, func() float64 { return float64(g.ws.Stats().HandshakeTimeouts) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "gochat_gateway_connections_refused_total", Help: "TCP connections closed at accept because gateway.max_conns were held.",
		}, func() float64 { return float64(g.ws.Stats().Refused) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "gochat_gateway_ws_frames_in_total", Help: "WebSocket frames read (all opcodes).",
		}, func() float64 { return float64(g.ws.Stats().FramesIn) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "gochat_gateway_ws_frames_out_total", Help: "WebSocket frames written (all opcodes).",
		}, func() float64 { return float64(g.ws.Stats().FramesOut) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("gateway: register metrics: %w", err)
		}
	}
	return m, nil
}
