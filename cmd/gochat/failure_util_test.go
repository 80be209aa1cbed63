package main

// Helpers of the failure tests (failure_test.go): topologies with handles on their
// parts, a TCP proxy that can take the Kafka broker away, a WebSocket client that
// records every frame without ever blocking the socket, and metric readers.
// Identifiers carry an fl prefix so they cannot collide with other test files.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/gochat/gochat/repo/repotest"
)

// ---- topologies ----

// flTopo is a running topology with handles on its parts.
type flTopo struct {
	gateways []string         // "127.0.0.1:port" of each gateway
	nodes    map[string]*node // by name: repo, logic, task, gateway-0, gateway-1 (split) or all
	redis    *redis.Client    // split only
	prefix   string           // the test's Redis key prefix (split only)
	proxy    *flProxy         // in front of the Kafka broker, when asked for
}

// flStopTogether stops every node at once when the test ends. The nodes' own
// cleanups (registered earlier, so run later) then only collect Run's error. One
// by one, each Kitex server waits out its exit grace and the whole takes ~15 s.
func flStopTogether(t *testing.T, stops []func() error) {
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, stop := range stops {
			wg.Add(1)
			go func() { defer wg.Done(); _ = stop() }()
		}
		wg.Wait()
	})
}

// flStartAll runs the all topology with cfg adjusted by mutate.
func flStartAll(t *testing.T, mutate func(*Config)) *flTopo {
	t.Helper()
	cfg := baseConfig(t)
	if mutate != nil {
		mutate(&cfg)
	}
	n, stop := startNodeStoppable(t, cfg, "all")
	flStopTogether(t, []func() error{stop})
	waitReady(t, n)
	return &flTopo{gateways: []string{n.gw.Addr().String()}, nodes: map[string]*node{"all": n}}
}

// flStartSplit runs repo, logic, task and two gateways against an embedded etcd, a
// kfake broker over TCP, MariaDB and Redis, like startSplit, with cfg adjusted by
// mutate. With proxied, every Kafka connection goes through an flProxy (see there).
func flStartSplit(t *testing.T, mutate func(*Config), proxied bool) *flTopo {
	t.Helper()
	etcd, err := startEmbeddedEtcd(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = etcd.Close() })

	opts := []kfake.Opt{kfake.NumBrokers(1)}
	var proxy *flProxy
	if proxied {
		proxy = flNewProxy(t)
		opts = append(opts, kfake.ListenFn(proxy.brokerListen))
	}
	kc, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	brokers := kc.ListenAddrs()
	if proxied {
		proxy.start(t)
		t.Cleanup(proxy.stop) // runs before kc.Close
		brokers = []string{proxy.addr}
	}

	dsn := repotest.MySQLDSN(t)
	redisAddr, prefix := repotest.RedisAddr(t)
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = rdb.Close() })

	cfg := baseConfig(t)
	cfg.Etcd.Endpoints = []string{etcd.Endpoint()}
	cfg.Kafka.Brokers = brokers
	cfg.Auth.Secret = "split-topology-test-secret"
	cfg.Store.Driver, cfg.Store.DSN = "mysql", dsn
	cfg.Redis.Addr, cfg.Redis.Prefix = redisAddr, prefix
	if mutate != nil {
		mutate(&cfg)
	}

	topo := &flTopo{nodes: map[string]*node{}, redis: rdb, prefix: prefix, proxy: proxy}
	var stops []func() error
	var all []*node
	var gws []*node
	for i, target := range []string{"repo", "logic", "task", "gateway", "gateway"} {
		c := cfg
		c.Target = target
		name := target
		if target == "gateway" {
			name = fmt.Sprintf("gateway-%d", len(gws))
		}
		n, stop := startNodeStoppable(t, c, fmt.Sprintf("%d-%s", i, name))
		topo.nodes[name] = n
		stops = append(stops, stop)
		all = append(all, n)
		if target == "gateway" {
			gws = append(gws, n)
		}
	}
	flStopTogether(t, stops)
	waitReady(t, all...)
	for _, n := range gws {
		topo.gateways = append(topo.gateways, n.gw.Addr().String())
	}
	return topo
}

// ---- a Kafka broker that can be taken away ----

// flProxy forwards TCP connections to the kfake broker. kfake advertises its
// listener's Addr() in metadata; the listener handed to kfake (brokerListen)
// reports the proxy's address instead, so clients reach the broker through the
// proxy for the seed connection and for every connection metadata sends them to.
// stop closes the proxy's listener and every proxied connection: the broker is
// unreachable (connection refused) until start, and keeps its data meanwhile.
type flProxy struct {
	addr   string // what clients dial; the same across restarts
	target string // kfake's real listener; set by brokerListen before start

	mu    sync.Mutex
	ln    net.Listener // nil while stopped
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup

	accepted atomic.Int64 // connections the proxy took from clients
	dialed   atomic.Int64 // connections the proxy made to the broker
	direct   atomic.Int64 // connections the broker accepted (all should be the proxy's)
}

func flNewProxy(t *testing.T) *flProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &flProxy{addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]struct{}{}}
}

// flAdvertised is a listener that reports another address and counts accepts.
type flAdvertised struct {
	net.Listener
	addr     net.Addr
	accepted *atomic.Int64
}

func (l flAdvertised) Addr() net.Addr { return l.addr }

func (l flAdvertised) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// brokerListen is kfake's ListenFn.
func (p *flProxy) brokerListen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	adv, err := net.ResolveTCPAddr("tcp", p.addr)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	p.target = ln.Addr().String()
	return flAdvertised{Listener: ln, addr: adv, accepted: &p.direct}, nil
}

// start serves on p.addr again (or for the first time).
func (p *flProxy) start(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		var err error
		deadline := time.Now().Add(5 * time.Second)
		for {
			if p.ln, err = net.Listen("tcp", p.addr); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond) // the port is ours; wait for the kernel to let go of it
		}
		if err != nil {
			t.Fatalf("proxy: listen again on %s: %v", p.addr, err)
		}
	}
	p.wg.Add(1)
	go p.serve(p.ln)
}

// stop refuses new connections and cuts every open one; idempotent.
func (p *flProxy) stop() {
	p.mu.Lock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *flProxy) serve(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		p.wg.Add(1)
		go p.pipe(c)
	}
}

// track registers conns unless the proxy stopped meanwhile.
func (p *flProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *flProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

func (p *flProxy) pipe(down net.Conn) {
	defer p.wg.Done()
	up, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		_ = down.Close()
		return
	}
	p.dialed.Add(1)
	if !p.track(down, up) {
		_ = down.Close()
		_ = up.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, down); done <- struct{}{} }()
	go func() { _, _ = io.Copy(down, up); done <- struct{}{} }()
	<-done
	_ = down.Close()
	_ = up.Close()
	<-done
	p.untrack(down, up)
}

// ---- a recording WebSocket client ----

// flPush is one new-message as received.
type flPush struct {
	msg message
	at  time.Time
}

// flAck is one message-ack as received.
type flAck struct {
	ack
	at time.Time
}

type flPresence struct {
	UserID string `json:"userId"`
	Online bool   `json:"online"`
}

type flSyncResult struct {
	ConversationID string    `json:"conversationId"`
	Messages       []message `json:"messages"`
	HasMore        bool      `json:"hasMore"`
}

// flRec is a WebSocket client whose reader never stops: every frame is recorded
// (so the server never sees it as a slow consumer) and read back under a lock.
type flRec struct {
	name string
	c    *websocket.Conn
	wmu  sync.Mutex // one writer at a time (gorilla)

	mu       sync.Mutex
	pushes   []flPush
	acks     map[string][]flAck // by tempMessageId; a resend is acked again
	errs     []string           // error frames and unexpected frames
	presence []flPresence

	connected chan struct{}
	syncs     chan flSyncResult
	done      chan struct{} // closed when the reader ends
	readErr   error         // set before done is closed
}

func flDial(t *testing.T, gw, token, name string) *flRec {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+gw+"/ws?token="+token, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("%s: dial: %v (status %d)", name, err, status)
	}
	r := &flRec{
		name: name, c: c, acks: map[string][]flAck{},
		connected: make(chan struct{}), syncs: make(chan flSyncResult, 16), done: make(chan struct{}),
	}
	go r.read()
	t.Cleanup(func() { _ = c.Close(); <-r.done })
	select {
	case <-r.connected:
	case <-r.done:
		t.Fatalf("%s: socket ended before connected: %v", name, r.readErr)
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no connected frame within 10s", name)
	}
	return r
}

func (r *flRec) read() {
	defer close(r.done)
	for {
		_, b, err := r.c.ReadMessage()
		at := time.Now()
		if err != nil {
			r.readErr = err
			return
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			r.addErr(fmt.Sprintf("non-JSON frame %q", b))
			continue
		}
		switch f.Type {
		case "connected":
			close(r.connected)
		case "new-message":
			var d struct {
				ConversationID string  `json:"conversationId"`
				Message        message `json:"message"`
			}
			if err := json.Unmarshal(f.Data, &d); err != nil || d.ConversationID != d.Message.ConversationID {
				r.addErr(fmt.Sprintf("bad new-message %s", f.Data))
				continue
			}
			d.Message.Content = "" // never checked; keeps floods from filling this process's heap
			r.mu.Lock()
			r.pushes = append(r.pushes, flPush{msg: d.Message, at: at})
			r.mu.Unlock()
		case "message-ack":
			var a ack
			if err := json.Unmarshal(f.Data, &a); err != nil {
				r.addErr(fmt.Sprintf("bad ack %s", f.Data))
				continue
			}
			r.mu.Lock()
			r.acks[a.TempMessageID] = append(r.acks[a.TempMessageID], flAck{ack: a, at: at})
			r.mu.Unlock()
		case "friend-online":
			var p flPresence
			_ = json.Unmarshal(f.Data, &p)
			r.mu.Lock()
			r.presence = append(r.presence, p)
			r.mu.Unlock()
		case "sync-result":
			var s flSyncResult
			if err := json.Unmarshal(f.Data, &s); err != nil {
				r.addErr(fmt.Sprintf("bad sync-result %s", f.Data))
				continue
			}
			select {
			case r.syncs <- s:
			default:
				r.addErr("sync-result nobody asked for")
			}
		case "pong", "conversation-update":
		default:
			r.addErr(fmt.Sprintf("frame %s %s", f.Type, f.Data))
		}
	}
}

func (r *flRec) addErr(s string) {
	r.mu.Lock()
	r.errs = append(r.errs, s)
	r.mu.Unlock()
}

// sendFrame writes one frame; safe from any goroutine.
func (r *flRec) sendFrame(typ string, data any) error {
	b, err := json.Marshal(map[string]any{"type": typ, "data": data})
	if err != nil {
		return err
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	_ = r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return r.c.WriteMessage(websocket.TextMessage, b)
}

func (r *flRec) sendMsg(conv, content, tempID string) error {
	return r.sendFrame("send-message", map[string]any{
		"conversationId": conv, "content": content, "messageType": "text", "tempMessageId": tempID,
	})
}

// pushesIn returns the new-messages of conv received so far, in arrival order.
func (r *flRec) pushesIn(conv string) []flPush {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []flPush
	for _, p := range r.pushes {
		if p.msg.ConversationID == conv {
			out = append(out, p)
		}
	}
	return out
}

func (r *flRec) acksFor(tempID string) []flAck {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.acks[tempID])
}

func (r *flRec) errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs)
}

func (r *flRec) presenceOf(userID string) []bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []bool
	for _, p := range r.presence {
		if p.UserID == userID {
			out = append(out, p.Online)
		}
	}
	return out
}

// hasPushWithClientID reports whether a new-message carrying clientMsgId id arrived.
func (r *flRec) hasPushWithClientID(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.pushes {
		if p.msg.ClientMsgID == id {
			return true
		}
	}
	return false
}

// syncFrom asks for everything of conv after seq with sync frames (paging on hasMore).
func (r *flRec) syncFrom(t *testing.T, conv string, after int64) []message {
	t.Helper()
	var out []message
	for range 1000 {
		if err := r.sendFrame("sync", map[string]any{"conversationId": conv, "afterSeq": after, "limit": 100}); err != nil {
			t.Fatalf("%s: sync: %v", r.name, err)
		}
		var s flSyncResult
		select {
		case s = <-r.syncs:
		case <-r.done:
			t.Fatalf("%s: socket ended during sync: %v", r.name, r.readErr)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no sync-result within 10s", r.name)
		}
		if s.ConversationID != conv {
			t.Fatalf("%s: sync-result for %q, want %q", r.name, s.ConversationID, conv)
		}
		out = append(out, s.Messages...)
		if !s.HasMore {
			return out
		}
		if len(s.Messages) == 0 {
			t.Fatalf("%s: sync-result with hasMore and no messages", r.name)
		}
		after = s.Messages[len(s.Messages)-1].SeqID
	}
	t.Fatalf("%s: sync of %s does not end", r.name, conv)
	return nil
}

// ---- a paced sender ----

// flLoad sends send-message frames at a fixed pace, round robin over convs, until
// stopped. Each send records when it left; acks are read from the socket's flRec.
type flLoad struct {
	r      *flRec
	prefix string
	stopc  chan struct{}
	done   chan struct{}
	err    error // a failed write, set before done is closed

	mu     sync.Mutex
	sentAt map[string]time.Time // by tempMessageId
	convOf map[string]string
	order  []string
}

func flStartLoad(r *flRec, convs []string, every time.Duration, prefix string) *flLoad {
	l := &flLoad{
		r: r, prefix: prefix, stopc: make(chan struct{}), done: make(chan struct{}),
		sentAt: map[string]time.Time{}, convOf: map[string]string{},
	}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			conv := convs[i%len(convs)]
			id := prefix + "-" + strconv.Itoa(i)
			l.mu.Lock()
			l.sentAt[id], l.convOf[id] = time.Now(), conv
			l.order = append(l.order, id)
			l.mu.Unlock()
			if err := r.sendMsg(conv, fmt.Sprintf("%s message %d", prefix, i), id); err != nil {
				l.err = err
				return
			}
			select {
			case <-l.stopc:
				return
			case <-tick.C:
			}
		}
	}()
	return l
}

func (l *flLoad) stop(t *testing.T) {
	t.Helper()
	close(l.stopc)
	<-l.done
	if l.err != nil {
		t.Fatalf("load %s: write: %v", l.prefix, l.err)
	}
}

// sent returns the temp ids sent so far, in order, with their send times and conversations.
func (l *flLoad) sent() ([]string, map[string]time.Time, map[string]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.order), maps.Clone(l.sentAt), maps.Clone(l.convOf)
}

// overdue returns the sends older than limit that have no ack yet.
func (l *flLoad) overdue(limit time.Duration) []string {
	ids, at, _ := l.sent()
	var out []string
	for _, id := range ids {
		if time.Since(at[id]) > limit && len(l.r.acksFor(id)) == 0 {
			out = append(out, id)
		}
	}
	return out
}

// ---- checks ----

// flWait polls cond every 10 ms until it holds or timeout passes.
func flWait(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// flHistory reads all of conv's history over HTTP, page by page, oldest first.
func flHistory(t *testing.T, api, tok, conv string) (msgs []message, total int64) {
	t.Helper()
	for page := 1; ; page++ {
		r := call(t, "GET", fmt.Sprintf("%s/conversations/%s/messages?page=%d&size=100", api, conv, page), tok, nil).want(t, 200, "")
		var ms []message
		r.decode(t, &ms)
		if r.Env.Pagination == nil {
			t.Fatalf("history of %s: no pagination", conv)
		}
		msgs = append(msgs, ms...)
		total = r.Env.Pagination.Total
		if !r.Env.Pagination.HasMore || page > 10000 {
			break
		}
	}
	slices.SortFunc(msgs, func(a, b message) int { return int(a.SeqID - b.SeqID) })
	return msgs, total
}

// flGapFree fails unless msgs hold seqs 1..n exactly once each.
func flGapFree(t *testing.T, what string, msgs []message, n int64) {
	t.Helper()
	seen := map[int64]int{}
	for _, m := range msgs {
		seen[m.SeqID]++
	}
	var missing, dup []int64
	for s := int64(1); s <= n; s++ {
		switch seen[s] {
		case 0:
			missing = append(missing, s)
		case 1:
		default:
			dup = append(dup, s)
		}
	}
	var extra []int64
	for s := range seen {
		if s < 1 || s > n {
			extra = append(extra, s)
		}
	}
	if len(missing)+len(dup)+len(extra) > 0 {
		t.Fatalf("%s: want seqs 1..%d once each; missing %s, duplicated %s, beyond %s",
			what, n, flSeqs(missing), flSeqs(dup), flSeqs(extra))
	}
}

// flSeqs prints a seq list, shortened.
func flSeqs(s []int64) string {
	slices.Sort(s)
	if len(s) > 20 {
		return fmt.Sprintf("%v… (%d)", s[:20], len(s))
	}
	return fmt.Sprint(s)
}

// flContiguous is the highest p such that 1..p all occur in seqs.
func flContiguous(seqs []int64) int64 {
	have := map[int64]bool{}
	for _, s := range seqs {
		have[s] = true
	}
	var p int64
	for have[p+1] {
		p++
	}
	return p
}

// ---- metrics ----

// flScrape sums the samples of metric name in the Prometheus text at url.
func flScrape(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape %s: status %d, %v", url, resp.StatusCode, err)
	}
	v, found := flParseMetric(string(b), name)
	if !found {
		t.Fatalf("scrape %s: no metric %s", url, name)
	}
	return v
}

func flParseMetric(text, name string) (float64, bool) {
	var sum float64
	found := false
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		// With labels, the value follows the closing brace.
		val := fields[len(fields)-1]
		if i := strings.LastIndex(line, "}"); i >= 0 {
			val = strings.Fields(line[i+1:])[0]
		}
		f, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		sum += f
		found = true
	}
	return sum, found
}

// flGather sums the samples (counter or gauge) of metric name in n's registry.
func flGather(t *testing.T, n *node, name string) float64 {
	t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return sum
	}
	return 0 // a labelled family with no series yet is absent
}

// flRedisKeys counts the keys under prefix.
func flRedisKeys(t *testing.T, rdb *redis.Client, prefix string) int {
	t.Helper()
	n := 0
	iter := rdb.Scan(context.Background(), 0, prefix+"*", 500).Iterator()
	for iter.Next(context.Background()) {
		n++
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// ---- a client that stops reading ----

// flStuck is a WebSocket client on a raw TCP connection with a tiny receive buffer
// that reads nothing after the upgrade until drain is called.
type flStuck struct {
	conn net.Conn
	br   *bufio.Reader
}

func flDialStuck(t *testing.T, gw, token string) *flStuck {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
	conn, err := d.Dial("tcp", gw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	var key [16]byte
	_, _ = rand.Read(key[:])
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /ws?token=%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", token, gw, base64.StdEncoding.EncodeToString(key[:]))
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("stuck client: upgrade: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("stuck client: upgrade status %d", resp.StatusCode)
	}
	_ = conn.SetDeadline(time.Time{})
	return &flStuck{conn: conn, br: br}
}

// drain reads frames until the connection ends. It returns the number of text
// frames read, the close code if a close frame came (0 otherwise) and how the
// stream ended (io.EOF, a reset, or a timeout if the server never closed).
func (s *flStuck) drain(timeout time.Duration) (texts int, closeCode int, end error) {
	_ = s.conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		var h [2]byte
		if _, err := io.ReadFull(s.br, h[:]); err != nil {
			return texts, closeCode, err
		}
		op := h[0] & 0x0f
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(s.br, b[:]); err != nil {
				return texts, closeCode, err
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(s.br, b[:]); err != nil {
				return texts, closeCode, err
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		if h[1]&0x80 != 0 {
			return texts, closeCode, errors.New("server frame is masked")
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(s.br, p); err != nil {
			return texts, closeCode, err
		}
		switch op {
		case 0x1:
			texts++
		case 0x8:
			if len(p) >= 2 {
				closeCode = int(binary.BigEndian.Uint16(p[:2]))
			}
		}
	}
}

// ackCount is the number of distinct temp ids acked so far.
func (r *flRec) ackCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.acks)
}

// flTCPWmemMax is the most a TCP socket's send buffer may grow to here (Linux
// net.ipv4.tcp_wmem, third field), 4 MiB when unknown.
func flTCPWmemMax() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem")
	if f := strings.Fields(string(b)); err == nil && len(f) == 3 {
		if n, err := strconv.Atoi(f[2]); err == nil && n > 0 {
			return n
		}
	}
	return 4 << 20
}
