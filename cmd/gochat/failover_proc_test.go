package main

// Failover with real processes: the cluster runs as separate gochat processes (so a
// crash is a real kill -9) against an etcd and a Kafka-protocol broker living in the
// test process (they survive the kills), MariaDB and Redis.
//
//   - logic / repo: kill -9 one of two instances under a steady WebSocket send load.
//     No acked message is lost or duplicated, a client sees at most a retried send
//     (same tempMessageId, at most 3 tries, like the web client), and the dead
//     instance's registration is gone within 3 s.
//   - gateway: kill -9 one of two gateways. Its registration is gone and logic stops
//     routing pushes to it within 3 s; its clients reconnect to the other gateway and
//     recover what they missed with sync by seq; users on the live gateway keep
//     getting pushes throughout.
//
// Each subtest logs one parseable line with the measured times, e.g.
//
//	FAILOVER logic: registration gone after 2.04s, last dial to it after 2.24s (449 failed dials, retried elsewhere), first ack after kill 0.00s, ...
//	FAILOVER gateway: registration gone after 2.10s, last push routed to the dead gateway after 2.07s (134 after the kill), ...
//
// The seconds are measured from the SIGKILL. Run with -v to see them.

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	_ "github.com/go-sql-driver/mysql"
	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gochat/gochat/logic/pushq"
	"github.com/gochat/gochat/repo/repotest"
)

// Budget of the failover guarantees (design.md §5, the issue).
const (
	foOutOfRotation = 3 * time.Second // a dead instance's registration is gone / its routes unused
	foAckTimeout    = 5 * time.Second // the web client fails a send without an ack after this
	foMaxTries      = 3               // first send + two resends with the same tempMessageId
)

func TestFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and kills real processes")
	}
	bin := foBuild(t)
	t.Run("logic", func(t *testing.T) { foKitexFailover(t, bin, "logic") })
	t.Run("repo", func(t *testing.T) { foKitexFailover(t, bin, "repo") })
	t.Run("gateway", func(t *testing.T) { foGatewayFailover(t, bin) })
}

// foBuild builds this command once for the subtests (removed with the parent test).
func foBuild(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "gochat")
	start := time.Now()
	cmd := exec.Command(goBin, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built gochat in %s", time.Since(start).Round(time.Millisecond))
	return bin
}

// ---- processes ----

// foSpawner starts every process from one OS thread that never exits: Pdeathsig is
// bound to the thread that forked, not to the process.
var foSpawner struct {
	once sync.Once
	ch   chan func()
}

func foSpawn(cmd *exec.Cmd) error {
	foSpawner.once.Do(func() {
		foSpawner.ch = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the test binary
			for f := range foSpawner.ch {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	foSpawner.ch <- func() { errc <- cmd.Start() }
	return <-errc
}

type foProc struct {
	name, target string
	admin        string // 127.0.0.1:port of /readyz and /metrics
	rpc          string // Kitex listener (logic, repo, task)
	gw, gwID     string // gateway listener and id
	log          string // stdout+stderr
	cmd          *exec.Cmd
	done         chan struct{} // closed when the process has exited
	waitErr      error         // valid after done
	killedAt     time.Time     // set by kill (before done)
}

// foInfra is one test's cluster: etcd and Kafka in this process, a database and a
// Redis prefix of its own, and the gochat processes.
type foInfra struct {
	t      *testing.T
	bin    string
	dir    string
	ctx    context.Context // caps every process's lifetime
	etcd   *clientv3.Client
	etcdEP string
	kafka  []string
	dsn    string
	redis  string
	prefix string
	secret string

	mu    sync.Mutex
	procs []*foProc
}

func foStartInfra(t *testing.T, bin string) *foInfra {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	if d, ok := t.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	t.Cleanup(cancel) // last: SIGKILLs whatever the graceful stop left
	e, err := startEmbeddedEtcd(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	kc, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	in := &foInfra{
		t: t, bin: bin, dir: t.TempDir(), ctx: ctx, etcdEP: e.Endpoint(), kafka: kc.ListenAddrs(),
		dsn: repotest.MySQLDSN(t), secret: "failover-test-secret-0123456789",
	}
	in.redis, in.prefix = repotest.RedisAddr(t)
	if in.etcd, err = clientv3.New(clientv3.Config{Endpoints: []string{in.etcdEP}, DialTimeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.etcd.Close() })
	t.Cleanup(in.stopAll) // first: the processes go before the database, Redis keys, Kafka and etcd
	return in
}

// foFreeAddr returns a loopback address free now, for a process started later. The
// port is below the kernel's ephemeral range (32768–60999 here): a port picked by
// listening on :0 comes from that range, and between the pick and the process's bind
// any outgoing connection of any test running beside this one (thousands of sockets in
// the wsnet tests) could take it as its local port (seen: "bind: address already in
// use").
func foFreeAddr(t *testing.T) string {
	t.Helper()
	for range 1000 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+mrand.IntN(12000)))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken: try another
		}
		_ = ln.Close()
		return addr
	}
	t.Fatal("no free port in 20000–31999")
	return ""
}

// start runs one gochat process with target (repo, logic, task or gateway).
func (in *foInfra) start(name, target string) *foProc {
	t := in.t
	t.Helper()
	p := &foProc{name: name, target: target, admin: foFreeAddr(t), log: filepath.Join(in.dir, name+".log"), done: make(chan struct{})}
	args := []string{"-target=" + target, "-admin.addr=" + p.admin}
	switch target {
	case "gateway":
		p.gw, p.gwID = foFreeAddr(t), name
		args = append(args, "-gateway.addr="+p.gw, "-gateway.id="+p.gwID)
	default:
		p.rpc = foFreeAddr(t)
		args = append(args, "-"+target+".rpc_addr="+p.rpc)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOCHAT_") && !strings.HasPrefix(kv, "KITEX_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"GOCHAT_ETCD_ENDPOINTS="+in.etcdEP,
		"GOCHAT_KAFKA_BROKERS="+strings.Join(in.kafka, ","),
		"GOCHAT_REDIS_ADDR="+in.redis,
		"GOCHAT_REDIS_PREFIX="+in.prefix,
		"GOCHAT_AUTH_SECRET="+in.secret,
		"GOCHAT_STORE_DRIVER=mysql",
		"GOCHAT_STORE_DSN="+in.dsn,
		"GOCHAT_LOGIC_BCRYPT_COST=4",
	)
	f, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.CommandContext(in.ctx, in.bin, args...)
	p.cmd.Env, p.cmd.Stdout, p.cmd.Stderr = env, f, f
	p.cmd.SysProcAttr = foSysProcAttr()
	if err := foSpawn(p.cmd); err != nil {
		_ = f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	in.mu.Lock()
	in.procs = append(in.procs, p)
	in.mu.Unlock()
	return p
}

func (p *foProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill is kill -9; it returns once the process is gone.
func (p *foProc) kill(t *testing.T) time.Time {
	t.Helper()
	p.killedAt = time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still running 10s after SIGKILL", p.name)
	}
	return p.killedAt
}

// stopAll sends SIGTERM to every live process, waits for them together and checks
// that each one shut down cleanly; on failure it dumps the logs.
func (in *foInfra) stopAll() {
	t := in.t
	in.mu.Lock()
	procs := slices.Clone(in.procs)
	in.mu.Unlock()
	for _, p := range procs {
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	timeout := time.After(30 * time.Second)
	for _, p := range procs {
		select {
		case <-p.done:
		case <-timeout:
		}
		if !p.exited() {
			t.Errorf("%s did not stop within 30s of SIGTERM; killing it", p.name)
			_ = p.cmd.Process.Kill()
			<-p.done
			continue
		}
		if p.killedAt.IsZero() && p.waitErr != nil {
			t.Errorf("%s: exit after SIGTERM: %v", p.name, p.waitErr)
		}
	}
	if t.Failed() {
		for _, p := range procs {
			t.Logf("--- %s log (tail) ---\n%s", p.name, foTail(p.log, 120))
		}
	}
}

func foTail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = append([]string{fmt.Sprintf("... %d lines before", len(all)-lines)}, all[len(all)-lines:]...)
	}
	return strings.Join(all, "\n")
}

var foHTTP = &http.Client{Timeout: 5 * time.Second}

// waitReady waits for every process's /readyz.
func (in *foInfra) waitReady(procs ...*foProc) {
	t := in.t
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for _, p := range procs {
		for {
			if p.exited() {
				t.Fatalf("%s exited during startup: %v\n%s", p.name, p.waitErr, foTail(p.log, 60))
			}
			if resp, err := foHTTP.Get("http://" + p.admin + "/readyz"); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready after 60s\n%s", p.name, foTail(p.log, 60))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// metric sums the samples of one metric on a process's /metrics.
func (p *foProc) metric(name string) (float64, error) {
	resp, err := foHTTP.Get("http://" + p.admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		n := strings.IndexAny(line, "{ ")
		if n < 0 || line[:n] != name {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %w", name, line, err)
		}
		sum += v
		found = true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("%s has no metric %s", p.name, name)
	}
	return sum, nil
}

func (in *foInfra) keyExists(key string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := in.etcd.Get(ctx, key, clientv3.WithCountOnly())
	if err != nil {
		return false, err
	}
	return resp.Count > 0, nil
}

// waitKey polls key every 50 ms until its presence is want; it returns the time
// since from and whether that happened within limit.
func (in *foInfra) waitKey(key string, want bool, from time.Time, limit time.Duration) (time.Duration, bool) {
	for {
		ok, err := in.keyExists(key)
		if err == nil && ok == want {
			return time.Since(from), true
		}
		if time.Since(from) > limit {
			return time.Since(from), false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const foKitexPrefix = "kitex/registry-etcd/"

// ---- WebSocket clients ----

// foConn is one socket; its reader forwards frames until the socket ends.
type foConn struct {
	c      *websocket.Conn
	frames chan frame // closed when the socket ends
	quit   chan struct{}
	once   sync.Once
}

func foDial(gw, tok string) (*foConn, error) {
	d := websocket.Dialer{HandshakeTimeout: 3 * time.Second}
	c, resp, err := d.Dial("ws://"+gw+"/ws?token="+tok, nil)
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (status %d)", err, resp.StatusCode)
		}
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var f frame
	if _, b, err := c.ReadMessage(); err != nil || json.Unmarshal(b, &f) != nil || f.Type != "connected" {
		_ = c.Close()
		return nil, fmt.Errorf("no connected frame (%v): %s", err, b)
	}
	_ = c.SetReadDeadline(time.Time{})
	fc := &foConn{c: c, frames: make(chan frame, 1024), quit: make(chan struct{})}
	go func() {
		defer close(fc.frames)
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			var f frame
			if json.Unmarshal(b, &f) != nil {
				f = frame{Type: "non-json", Data: json.RawMessage(strconv.Quote(string(b)))}
			}
			select {
			case fc.frames <- f:
			case <-fc.quit:
				return
			}
		}
	}()
	return fc, nil
}

func (fc *foConn) close() {
	fc.once.Do(func() { close(fc.quit) })
	_ = fc.c.Close()
}

// foRec is one message the client wants sent, tracked like the web client does:
// one tempMessageId, resent on an UNAVAILABLE/INTERNAL error, a lost socket or no
// ack within 5 s, at most foMaxTries attempts.
type foRec struct {
	temp     string
	first    time.Time // first attempt
	last     time.Time // latest attempt
	next     time.Time // a resend is due then (zero: none scheduled)
	tries    int
	inflight bool
	acked    bool
	gaveUp   bool
	late     bool // acked after the client gave up on it
	ackAt    time.Time
	ack      ack
}

// foFail is one failed attempt.
type foFail struct {
	temp      string
	start, at time.Time // when the attempt was sent, when its failure was seen
	why       string
}

// foRecv is one message the client received, live or through sync.
type foRecv struct {
	msg   message
	at    time.Time
	epoch int // which connection (1 = the first)
	sync  bool
}

type foEpoch struct {
	gw string
	at time.Time
}

type foClient struct {
	name, tok, conv string
	gws             []string      // gateways, tried in order; a lost socket moves on to the next
	every           time.Duration // send period; 0 = receive only
	gate            chan struct{} // if set, a reconnect waits until it is closed
	reconnectDelay  time.Duration // a reconnect waits this long first
	resync          bool          // after a reconnect, sync from the last seq of an unbroken run
	connected       chan struct{} // closed at the first connect

	mu       sync.Mutex // guards everything below
	recs     []*foRec
	byTemp   map[string]*foRec
	pending  map[*foRec]bool
	fails    []foFail
	recv     []foRecv
	problems []string // protocol violations
	epochs   []foEpoch
	drops    []time.Time
	syncs    int     // sync requests sent
	syncFrom []int64 // afterSeq of each sync after a reconnect
	syncDone []time.Time
	syncing  bool
	maxSeen  int64
	have     map[int64]bool // seqs received (live or by sync) or acked to this client
	contig   int64          // every seq up to this one is in have
	dupAcks  int
	conn     *foConn
	gwIdx    int
	n        int
}

func newFoClient(name, tok, conv string, gws []string, every time.Duration) *foClient {
	return &foClient{
		name: name, tok: tok, conv: conv, gws: gws, every: every, connected: make(chan struct{}),
		byTemp: map[string]*foRec{}, pending: map[*foRec]bool{}, have: map[int64]bool{},
	}
}

// run keeps the client connected until quit (or ctx) ends it: it sends a new
// message every c.every between start and stopSend, retries like the web client,
// and records everything it receives.
func (c *foClient) run(ctx context.Context, start, stopSend, quit <-chan struct{}) {
	check := time.NewTicker(50 * time.Millisecond)
	defer check.Stop()
	var ticker *time.Ticker
	var tick <-chan time.Time
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
		c.mu.Lock()
		if c.conn != nil {
			c.conn.close()
			c.conn = nil
		}
		c.mu.Unlock()
	}()
	for {
		c.mu.Lock()
		conn := c.conn
		c.mu.Unlock()
		if conn == nil {
			if !c.connect(ctx, quit) {
				return
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-quit:
			return
		case <-start:
			start = nil
			if c.every > 0 {
				ticker = time.NewTicker(c.every)
				tick = ticker.C
			}
		case <-stopSend:
			stopSend, start, tick = nil, nil, nil
		case <-tick:
			c.sendNew()
		case f, ok := <-conn.frames:
			if !ok {
				c.dropped()
				continue
			}
			c.handle(f)
		case now := <-check.C:
			c.checkTimeouts(now)
		}
	}
}

func (c *foClient) connect(ctx context.Context, quit <-chan struct{}) bool {
	c.mu.Lock()
	reconnect := len(c.epochs) > 0
	c.mu.Unlock()
	if reconnect && c.gate != nil {
		select {
		case <-c.gate:
		case <-ctx.Done():
			return false
		case <-quit:
			return false
		}
	}
	if reconnect && c.reconnectDelay > 0 {
		select {
		case <-time.After(c.reconnectDelay):
		case <-ctx.Done():
			return false
		case <-quit:
			return false
		}
	}
	for {
		c.mu.Lock()
		gw := c.gws[c.gwIdx%len(c.gws)]
		c.mu.Unlock()
		conn, err := foDial(gw, c.tok)
		if err == nil {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.conn = conn
			c.epochs = append(c.epochs, foEpoch{gw: gw, at: time.Now()})
			if len(c.epochs) == 1 {
				close(c.connected)
			} else if c.resync {
				// From the last seq of an unbroken run: pushes may arrive out of order,
				// so the highest seq seen can lie beyond a message that never came.
				c.syncFrom = append(c.syncFrom, c.contig)
				c.sendSyncLocked(c.contig)
			}
			c.resendDueLocked(time.Now()) // what the lost socket left pending
			return true
		}
		c.mu.Lock()
		c.gwIdx++
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return false
		case <-quit:
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *foClient) writeLocked(typ string, data any) {
	if c.conn == nil {
		return
	}
	b, _ := json.Marshal(map[string]any{"type": typ, "data": data})
	_ = c.conn.c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if err := c.conn.c.WriteMessage(websocket.TextMessage, b); err != nil {
		c.conn.close() // the reader ends, frames closes, dropped() takes over
	}
}

func (c *foClient) sendNew() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	r := &foRec{temp: fmt.Sprintf("%s-%05d", c.name, c.n), first: time.Now()}
	c.recs = append(c.recs, r)
	c.byTemp[r.temp] = r
	c.pending[r] = true
	c.attemptLocked(r)
}

func (c *foClient) attemptLocked(r *foRec) {
	r.tries++
	r.last, r.next, r.inflight = time.Now(), time.Time{}, true
	c.writeLocked("send-message", map[string]any{
		"conversationId": c.conv, "content": "msg " + r.temp, "messageType": "text", "tempMessageId": r.temp,
	})
}

func (c *foClient) failLocked(r *foRec, now time.Time, why string) {
	c.fails = append(c.fails, foFail{temp: r.temp, start: r.last, at: now, why: why})
	r.inflight = false
	if r.tries >= foMaxTries {
		r.gaveUp = true
		delete(c.pending, r)
		return
	}
	r.next = now.Add(time.Duration(r.tries) * 100 * time.Millisecond)
}

func (c *foClient) resendDueLocked(now time.Time) {
	if c.conn == nil {
		return
	}
	for r := range c.pending {
		if !r.inflight && !r.next.IsZero() && !now.Before(r.next) {
			c.attemptLocked(r)
		}
	}
}

func (c *foClient) checkTimeouts(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for r := range c.pending {
		if r.inflight && now.Sub(r.last) > foAckTimeout {
			c.failLocked(r, now, "no ack within 5s")
		}
	}
	c.resendDueLocked(now)
}

func (c *foClient) sendSyncLocked(after int64) {
	c.syncing = true
	c.syncs++
	c.writeLocked("sync", map[string]any{"conversationId": c.conv, "afterSeq": after, "limit": 100})
}

func (c *foClient) dropped() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	c.drops = append(c.drops, now)
	c.conn.close()
	c.conn = nil
	c.syncing = false // redone from the last seq seen after the reconnect
	c.gwIdx++
	for r := range c.pending {
		if r.inflight {
			c.failLocked(r, now, "socket lost")
		}
	}
}

func (c *foClient) problemLocked(format string, args ...any) {
	if len(c.problems) < 20 {
		c.problems = append(c.problems, fmt.Sprintf(format, args...))
	}
}

func (c *foClient) handle(f frame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	epoch := len(c.epochs)
	switch f.Type {
	case "message-ack":
		var a ack
		if err := json.Unmarshal(f.Data, &a); err != nil {
			c.problemLocked("bad ack %s", f.Data)
			return
		}
		r := c.byTemp[a.TempMessageID]
		switch {
		case r == nil:
			c.problemLocked("ack for unknown temp id %s", f.Data)
		case r.acked:
			if a.MessageID != r.ack.MessageID || a.SeqID != r.ack.SeqID {
				c.problemLocked("second ack for %s differs: %+v, first %+v", r.temp, a, r.ack)
			}
			c.dupAcks++
		default:
			if a.MessageID == "" || a.SeqID < 1 || a.ConversationID != c.conv {
				c.problemLocked("bad ack %s", f.Data)
			}
			r.acked, r.ack, r.ackAt, r.inflight, r.late = true, a, now, false, r.gaveUp
			delete(c.pending, r)
			c.markLocked(a.SeqID)
		}
	case "error":
		var e struct {
			Code          string `json:"code"`
			Message       string `json:"message"`
			TempMessageID string `json:"tempMessageId"`
		}
		_ = json.Unmarshal(f.Data, &e)
		retryable := e.Code == "UNAVAILABLE" || e.Code == "INTERNAL"
		switch r := c.byTemp[e.TempMessageID]; {
		case r != nil && retryable:
			if r.inflight && !r.acked {
				c.failLocked(r, now, "error "+e.Code)
			}
		case r != nil:
			c.problemLocked("send %s refused: %s", r.temp, f.Data)
			r.inflight, r.gaveUp = false, true
			delete(c.pending, r)
		case c.syncing && retryable:
			c.sendSyncLocked(c.contig)
		default:
			c.problemLocked("error frame %s", f.Data)
		}
	case "new-message":
		var d struct {
			ConversationID string  `json:"conversationId"`
			Message        message `json:"message"`
		}
		if err := json.Unmarshal(f.Data, &d); err != nil || d.Message.ConversationID != d.ConversationID {
			c.problemLocked("bad new-message %s", f.Data)
			return
		}
		if d.ConversationID == c.conv {
			c.recv = append(c.recv, foRecv{msg: d.Message, at: now, epoch: epoch})
			c.maxSeen = max(c.maxSeen, d.Message.SeqID)
			c.markLocked(d.Message.SeqID)
		}
	case "sync-result":
		var d struct {
			ConversationID string    `json:"conversationId"`
			Messages       []message `json:"messages"`
			HasMore        bool      `json:"hasMore"`
		}
		if err := json.Unmarshal(f.Data, &d); err != nil || d.ConversationID != c.conv {
			c.problemLocked("bad sync-result %s", f.Data)
			return
		}
		for _, m := range d.Messages {
			c.recv = append(c.recv, foRecv{msg: m, at: now, epoch: epoch, sync: true})
			c.maxSeen = max(c.maxSeen, m.SeqID)
			c.markLocked(m.SeqID)
		}
		if d.HasMore && len(d.Messages) > 0 {
			c.sendSyncLocked(d.Messages[len(d.Messages)-1].SeqID)
			return
		}
		c.syncing = false
		c.syncDone = append(c.syncDone, now)
	case "friend-online", "conversation-update", "pong", "connected":
	default:
		c.problemLocked("unexpected frame %s %s", f.Type, f.Data)
	}
}

func (c *foClient) markLocked(seq int64) {
	c.have[seq] = true
	for c.have[c.contig+1] {
		c.contig++
	}
}

// covered reports whether the client has every seq up to n.
func (c *foClient) covered(n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.contig >= int64(n)
}

// settled: nothing left to send or retry, no sync running.
func (c *foClient) settled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending) == 0 && !c.syncing && c.conn != nil
}

func (c *foClient) seen() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxSeen
}

// foGroup runs clients and ends them together.
type foGroup struct {
	clients               []*foClient
	start, stopSend, quit chan struct{}
	wg                    sync.WaitGroup
	cancel                context.CancelFunc
}

func foRun(t *testing.T, clients ...*foClient) *foGroup {
	t.Helper()
	g := &foGroup{clients: clients, start: make(chan struct{}), stopSend: make(chan struct{}), quit: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	g.cancel = cancel
	for _, c := range clients {
		g.wg.Add(1)
		go func() { defer g.wg.Done(); c.run(ctx, g.start, g.stopSend, g.quit) }()
	}
	t.Cleanup(g.end)
	for _, c := range clients {
		select {
		case <-c.connected:
		case <-time.After(15 * time.Second):
			t.Fatalf("%s could not connect", c.name)
		}
	}
	return g
}

var foCloseMu sync.Mutex

func foClose(ch chan struct{}) {
	foCloseMu.Lock()
	defer foCloseMu.Unlock()
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (g *foGroup) end() {
	foClose(g.stopSend)
	foClose(g.quit)
	g.wg.Wait()
	g.cancel()
}

// waitFor polls cond every 20 ms until it holds or limit passes.
func foWaitFor(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// ---- verification ----

// foHistory reads a conversation's whole history over HTTP, 100 messages a page.
// Over HTTP afterSeq=0 is no cursor (it reads as "no afterSeq": the newest page), so
// the first page is asked for with beforeSeq.
func foHistory(t *testing.T, api, tok, conv string) []message {
	t.Helper()
	r := call(t, "GET", api+"/conversations/"+conv+"/messages?page=1&size=1", tok, nil).want(t, 200, "")
	if r.Env.Pagination == nil {
		t.Fatal("history without pagination")
	}
	total := r.Env.Pagination.Total
	var out []message
	for after := int64(0); after < total; {
		q := fmt.Sprintf("afterSeq=%d&size=100", after)
		if after == 0 {
			q = "beforeSeq=101&size=100"
		}
		var page []message
		call(t, "GET", api+"/conversations/"+conv+"/messages?"+q, tok, nil).want(t, 200, "").decode(t, &page)
		if len(page) == 0 {
			t.Fatalf("history page %s is empty, total %d", q, total)
		}
		out = append(out, page...)
		after = page[len(page)-1].SeqID
	}
	return out
}

// foSendStats is what the senders saw.
type foSendStats struct {
	sent, acked, retried, gaveUp, late, dupAcks, maxTries int
	fails                                                 []foFail
	firstAckAfter                                         time.Duration // first ack received after the kill
	okAgain                                               time.Duration // the last disrupted send was acked
	maxLatency                                            time.Duration // first attempt → ack, over every send
	lastFailStart                                         time.Duration // latest failed attempt's send time (≤0: none after the kill)
}

func foStats(kill time.Time, clients ...*foClient) foSendStats {
	var s foSendStats
	s.firstAckAfter = -1
	s.lastFailStart = -time.Hour
	for _, c := range clients {
		c.mu.Lock()
		s.dupAcks += c.dupAcks
		s.fails = append(s.fails, c.fails...)
		for _, r := range c.recs {
			s.sent++
			s.maxTries = max(s.maxTries, r.tries)
			if r.tries > 1 {
				s.retried++
			}
			if r.gaveUp && !r.late {
				s.gaveUp++
			}
			if r.late {
				s.late++
			}
			if !r.acked {
				continue
			}
			s.acked++
			lat := r.ackAt.Sub(r.first)
			s.maxLatency = max(s.maxLatency, lat)
			if a := r.ackAt.Sub(kill); a >= 0 && (s.firstAckAfter < 0 || a < s.firstAckAfter) {
				s.firstAckAfter = a
			}
			if (r.tries > 1 || lat > time.Second) && r.ackAt.After(kill) {
				s.okAgain = max(s.okAgain, r.ackAt.Sub(kill))
			}
		}
		c.mu.Unlock()
	}
	for _, f := range s.fails {
		s.lastFailStart = max(s.lastFailStart, f.start.Sub(kill))
	}
	s.okAgain = max(s.okAgain, s.firstAckAfter)
	return s
}

// foCheckHistory: seqs are exactly 1..N; every acked send is there exactly once with
// the acked id and seq; nothing is there twice; nothing is there that nobody sent.
// extra lists client message ids sent outside the clients (HTTP).
func foCheckHistory(t *testing.T, hist []message, clients []*foClient, extra ...string) {
	t.Helper()
	byClient := map[string]message{}
	ids := map[string]bool{}
	for i, m := range hist {
		if m.SeqID != int64(i+1) {
			t.Errorf("history[%d] has seq %d, want %d (gap or duplicate)", i, m.SeqID, i+1)
			break
		}
		if ids[m.MessageID] {
			t.Errorf("message %s appears twice in history", m.MessageID)
		}
		ids[m.MessageID] = true
		if m.ClientMsgID == "" {
			t.Errorf("seq %d has no clientMsgId", m.SeqID)
			continue
		}
		if prev, dup := byClient[m.ClientMsgID]; dup {
			t.Errorf("clientMsgId %s stored twice: seq %d and %d", m.ClientMsgID, prev.SeqID, m.SeqID)
		}
		byClient[m.ClientMsgID] = m
	}
	known := map[string]bool{}
	for _, id := range extra {
		known[id] = true
	}
	for _, c := range clients {
		c.mu.Lock()
		for _, r := range c.recs {
			known[r.temp] = true
			m, ok := byClient[r.temp]
			switch {
			case r.acked && !ok:
				t.Errorf("acked message %s (id %s seq %d) is missing from history", r.temp, r.ack.MessageID, r.ack.SeqID)
			case r.acked && (m.MessageID != r.ack.MessageID || m.SeqID != r.ack.SeqID):
				t.Errorf("acked %s as id %s seq %d, history has id %s seq %d", r.temp, r.ack.MessageID, r.ack.SeqID, m.MessageID, m.SeqID)
			case ok && m.Content != "msg "+r.temp:
				t.Errorf("%s stored with content %q", r.temp, m.Content)
			}
		}
		c.mu.Unlock()
	}
	for id, m := range byClient {
		if !known[id] {
			t.Errorf("history has seq %d with clientMsgId %q that nobody sent", m.SeqID, id)
		}
	}
}

// foCheckDB cross-checks the store: exactly n rows, seqs 1..n, last_seq n.
func (in *foInfra) foCheckDB(t *testing.T, conv string, n int) {
	t.Helper()
	db, err := sql.Open("mysql", in.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rows, distinct, lo, hi, last int64
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*), COUNT(DISTINCT seq), COALESCE(MIN(seq),0), COALESCE(MAX(seq),0) FROM messages WHERE conversation_id = ?", conv).
		Scan(&rows, &distinct, &lo, &hi); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, "SELECT last_seq FROM conversations WHERE id = ?", conv).Scan(&last); err != nil {
		t.Fatal(err)
	}
	if rows != int64(n) || distinct != int64(n) || lo != min(1, int64(n)) || hi != int64(n) || last != int64(n) {
		t.Errorf("store: %d rows, %d distinct seqs %d..%d, last_seq %d; want %d rows, seqs 1..%d", rows, distinct, lo, hi, last, n, n)
	}
}

// foLiveCheck: no socket got the same message twice. It returns, per client, how
// many of the messages it should have had (all but its own, live or by sync) it
// does not have, and how many pushes came after a push with a higher seq.
func foLiveCheck(t *testing.T, n int, clients []*foClient) (missed, reordered map[string]int) {
	t.Helper()
	missed, reordered = map[string]int{}, map[string]int{}
	for _, c := range clients {
		c.mu.Lock()
		got := map[int64]bool{}
		perEpoch := map[int]map[int64]bool{}
		last := map[int]int64{}
		for _, rv := range c.recv {
			if !rv.sync {
				if rv.msg.SeqID < last[rv.epoch] {
					reordered[c.name]++
				}
				last[rv.epoch] = max(last[rv.epoch], rv.msg.SeqID)
			}
			if rv.sync {
				got[rv.msg.SeqID] = true
				continue
			}
			if perEpoch[rv.epoch] == nil {
				perEpoch[rv.epoch] = map[int64]bool{}
			}
			if perEpoch[rv.epoch][rv.msg.SeqID] {
				t.Errorf("%s got seq %d twice on one socket", c.name, rv.msg.SeqID)
			}
			perEpoch[rv.epoch][rv.msg.SeqID] = true
			got[rv.msg.SeqID] = true
		}
		for _, r := range c.recs {
			if r.acked {
				got[r.ack.SeqID] = true // its own: never pushed to the sending socket
			}
		}
		for s := int64(1); s <= int64(n); s++ {
			if !got[s] {
				missed[c.name]++
			}
		}
		c.mu.Unlock()
	}
	return missed, reordered
}

func foProblems(t *testing.T, clients []*foClient) {
	t.Helper()
	for _, c := range clients {
		c.mu.Lock()
		for _, p := range c.problems {
			t.Errorf("%s: %s", c.name, p)
		}
		c.mu.Unlock()
	}
}

func foSecs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// ---- logic / repo ----

// foKitexFailover kills one of two instances of victim (logic or repo) under load.
func foKitexFailover(t *testing.T, bin, victim string) {
	in := foStartInfra(t, bin)
	var procs []*foProc
	for _, target := range []string{"repo", "logic", "task", "gateway"} {
		procs = append(procs, in.start(target+"-1", target))
		if target == victim {
			procs = append(procs, in.start(target+"-2", target))
		}
	}
	in.waitReady(procs...)
	var dead, alive, gw *foProc
	for _, p := range procs {
		switch {
		case p.name == victim+"-1":
			dead = p
		case p.name == victim+"-2":
			alive = p
		case p.target == "gateway":
			gw = p
		}
	}
	svc := "gochat." + victim
	deadKey, aliveKey := foKitexPrefix+svc+"/"+dead.rpc, foKitexPrefix+svc+"/"+alive.rpc
	for _, k := range []string{deadKey, aliveKey} {
		if _, ok := in.waitKey(k, true, time.Now(), 10*time.Second); !ok {
			t.Fatalf("%s is not registered", k)
		}
	}
	time.Sleep(600 * time.Millisecond) // one resolver refresh: both instances in rotation

	api := "http://" + gw.gw + "/api"
	var clients []*foClient
	for i := range 4 {
		name := fmt.Sprintf("%s_s%d", victim, i)
		tok, _ := login(t, api, name)
		clients = append(clients, newFoClient(name, tok, "world", []string{gw.gw}, 20*time.Millisecond))
	}
	g := foRun(t, clients...)
	foClose(g.start)
	time.Sleep(2500 * time.Millisecond)

	// The victim is really in rotation: logic publishes the pushes of the sends it
	// handled; repo's snowflake node shows in message ids (checked below).
	if victim == "logic" {
		if v, err := dead.metric("gochat_logic_pushes_published_total"); err != nil || v == 0 {
			t.Fatalf("%s handled no send before the kill (published %v, %v)", dead.name, v, err)
		}
	}
	kill := dead.kill(t)
	regGone, ok := in.waitKey(deadKey, false, kill, 10*time.Second)
	if !ok {
		t.Errorf("%s still registered %s after the kill", dead.name, foSecs(regGone))
	}
	if still, _ := in.keyExists(aliveKey); !still {
		t.Errorf("the surviving %s lost its registration", alive.name)
	}
	time.Sleep(time.Until(kill.Add(5 * time.Second)))
	foClose(g.stopSend)
	if !foWaitFor(30*time.Second, func() bool {
		for _, c := range clients {
			if !c.settled() {
				return false
			}
		}
		return true
	}) {
		t.Errorf("senders still have unresolved sends 30s after the load stopped")
	}
	hist := foHistory(t, api, clients[0].tok, "world")
	n := len(hist)
	foWaitFor(3*time.Second, func() bool { // late pushes
		for _, c := range clients {
			if !c.covered(n) {
				return false
			}
		}
		return true
	})
	g.end()

	foProblems(t, clients)
	foCheckHistory(t, hist, clients)
	in.foCheckDB(t, "world", n)
	st := foStats(kill, clients...)
	missed, reordered := foLiveCheck(t, n, clients)

	// Every send was acked, none needed more than the client's three tries.
	if st.acked != st.sent || st.gaveUp > 0 || st.maxTries > foMaxTries {
		t.Errorf("%d sends, %d acked, %d given up after %d tries (max tries seen %d)", st.sent, st.acked, st.gaveUp, foMaxTries, st.maxTries)
	}
	if n != st.acked {
		t.Errorf("history has %d messages, clients got %d acks", n, st.acked)
	}
	if regGone > foOutOfRotation {
		t.Errorf("%s's registration was gone only %s after the kill, want ≤ %s", dead.name, foSecs(regGone), foOutOfRotation)
	}
	// Out of rotation from the client's side too: no send started later than that failed.
	if st.lastFailStart > foOutOfRotation {
		t.Errorf("a send attempted %s after the kill still failed", foSecs(st.lastFailStart))
	}
	busPushes, busInverted := foBusOrder(t, in.kafka, pushq.TopicBroadcast, "world")
	extra := fmt.Sprintf(", bus: %d of %d world pushes published after a higher seq", busInverted, busPushes)
	if victim == "repo" {
		extra += foSnowflakeReport(t, dead, hist, kill)
	}
	for _, f := range st.fails {
		t.Logf("failed attempt %s: sent %+.3fs, failed %+.3fs after the kill: %s", f.temp, f.start.Sub(kill).Seconds(), f.at.Sub(kill).Seconds(), f.why)
	}
	if len(st.fails) > 0 { // why the gateway gave up
		for _, p := range procs {
			if p.exited() {
				continue
			}
			b, _ := os.ReadFile(p.log)
			shown := 0
			for line := range strings.SplitSeq(string(b), "\n") {
				if strings.Contains(line, "level=ERROR") && !strings.Contains(line, `op="ping `) && shown < 20 {
					t.Logf("%s: %s", p.name, line)
					shown++
				}
			}
		}
	}
	// The callers of the dead instance (the gateway calls logic, logic calls repo)
	// dial it until their resolver drops it; Kitex logs each failed dial.
	var dials int
	lastDial := time.Duration(-1)
	for _, p := range procs {
		if p.target == map[string]string{"logic": "gateway", "repo": "logic"}[victim] {
			cnt, last := foDialsTo(t, p, dead.rpc, kill)
			dials += cnt
			lastDial = max(lastDial, last)
		}
	}
	if lastDial > foOutOfRotation {
		t.Errorf("%s was still dialled %s after the kill, want out of rotation within %s", dead.name, foSecs(lastDial), foOutOfRotation)
	}
	t.Logf("FAILOVER %s: registration gone after %s, last dial to it after %s (%d failed dials, retried elsewhere), first ack after kill %s, sends ok again after %s, "+
		"last failed attempt sent at %s, max ack latency %s, sent %d, acked %d, retried %d, max tries %d, "+
		"duplicate acks %d, failed attempts %d, missed pushes %v, out-of-order pushes %v%s",
		victim, foSecs(regGone), foRelSkip(lastDial), dials, foSecs(st.firstAckAfter), foSecs(st.okAgain), foRel(st.lastFailStart), foSecs(st.maxLatency),
		st.sent, st.acked, st.retried, st.maxTries, st.dupAcks, len(st.fails), missed, reordered, extra)
}

func foRel(d time.Duration) string {
	if d <= -time.Hour {
		return "none"
	}
	return fmt.Sprintf("%+.2fs", d.Seconds())
}

var foLogTime = regexp.MustCompile(`^time=(\S+) `)

// foDialsTo counts the failed connection attempts to addr that p logged after kill
// and returns the time of the last one, measured from kill (-1: none).
func foDialsTo(t *testing.T, p *foProc, addr string, kill time.Time) (int, time.Duration) {
	t.Helper()
	b, err := os.ReadFile(p.log)
	if err != nil {
		t.Fatal(err)
	}
	n, last := 0, time.Duration(-1)
	for line := range strings.SplitSeq(string(b), "\n") {
		if !strings.Contains(line, "dial tcp "+addr) {
			continue
		}
		m := foLogTime.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil || at.Before(kill) {
			continue
		}
		n++
		last = max(last, at.Sub(kill))
	}
	return n, last
}

var foSnowflakeNode = regexp.MustCompile(`snowflake_node=(\d+)`)

// foSnowflakeReport shows that the killed repo served appends before the kill (its
// snowflake node is in the ids) and none after.
func foSnowflakeReport(t *testing.T, dead *foProc, hist []message, kill time.Time) string {
	t.Helper()
	b, _ := os.ReadFile(dead.log)
	m := foSnowflakeNode.FindSubmatch(b)
	if m == nil {
		t.Errorf("%s's log does not name its snowflake node", dead.name)
		return ""
	}
	node, _ := strconv.ParseInt(string(m[1]), 10, 64)
	const epoch = 1288834974657 // bwmarrin/snowflake's default epoch (ms)
	var before, after, others int
	for _, msg := range hist {
		id, err := strconv.ParseInt(msg.MessageID, 10, 64)
		if err != nil {
			t.Errorf("message id %q", msg.MessageID)
			continue
		}
		if (id>>12)&0x3ff != node {
			others++
			continue
		}
		if created := time.UnixMilli(id>>22 + epoch); created.After(kill.Add(time.Millisecond)) {
			after++
		} else {
			before++
		}
	}
	if before == 0 {
		t.Errorf("%s (snowflake node %d) stored no message before the kill: it was never in rotation", dead.name, node)
	}
	if after > 0 {
		t.Errorf("%d messages carry the dead %s's snowflake node with a time after the kill", after, dead.name)
	}
	return fmt.Sprintf(", stored by the killed repo %d, by the survivor %d", before, others)
}

// ---- gateway ----

func foGatewayFailover(t *testing.T, bin string) {
	in := foStartInfra(t, bin)
	repoP, logicP, taskP := in.start("repo-1", "repo"), in.start("logic-1", "logic"), in.start("task-1", "task")
	gw1, gw2 := in.start("gw1", "gateway"), in.start("gw2", "gateway")
	in.waitReady(repoP, logicP, taskP, gw1, gw2)
	gwKey := gatewayPrefix + gw1.gwID
	for _, k := range []string{gwKey, gatewayPrefix + gw2.gwID} {
		if _, ok := in.waitKey(k, true, time.Now(), 10*time.Second); !ok {
			t.Fatalf("%s is not registered", k)
		}
	}

	api := "http://" + gw2.gw + "/api"
	toks := map[string]string{}
	ids := map[string]string{}
	for _, name := range []string{"gw_a1", "gw_a2", "gw_b1", "gw_b2"} {
		tok, u := login(t, api, name)
		toks[name], ids[name] = tok, u.UserID
	}
	var created struct {
		Conversation struct {
			ConversationID string `json:"conversationId"`
		} `json:"conversation"`
	}
	call(t, "POST", api+"/groups", toks["gw_b1"], map[string]any{
		"groupName": "failover", "members": []string{ids["gw_a1"], ids["gw_a2"], ids["gw_b2"]},
	}).want(t, 201, "").decode(t, &created)
	conv := created.Conversation.ConversationID

	// a1 and a2 live on gw1 (a1 reconnects after 0.5 s, a2 only once gw1's
	// registration is gone); b1 and b2 live on gw2. All send to the group.
	regGoneCh := make(chan struct{})
	a1 := newFoClient("gw_a1", toks["gw_a1"], conv, []string{gw1.gw, gw2.gw}, 100*time.Millisecond)
	a2 := newFoClient("gw_a2", toks["gw_a2"], conv, []string{gw1.gw, gw2.gw}, 100*time.Millisecond)
	a1.resync, a2.resync, a1.reconnectDelay, a2.gate = true, true, 500*time.Millisecond, regGoneCh
	b1 := newFoClient("gw_b1", toks["gw_b1"], conv, []string{gw2.gw}, 40*time.Millisecond)
	b2 := newFoClient("gw_b2", toks["gw_b2"], conv, []string{gw2.gw}, 40*time.Millisecond)
	clients := []*foClient{a1, a2, b1, b2}
	g := foRun(t, clients...)

	// Routes are in place once a push reaches everyone.
	call(t, "POST", api+"/messages", toks["gw_b1"], map[string]any{"conversationId": conv, "content": "warm-up", "clientMsgId": "warmup"}).want(t, 201, "")
	if !foWaitFor(10*time.Second, func() bool {
		for _, c := range clients {
			if c.seen() < 1 {
				return false
			}
		}
		return true
	}) {
		t.Fatal("the warm-up message did not reach every member")
	}
	dead0, err := logicP.metric("gochat_logic_dead_gateway_routes_total")
	if err != nil {
		t.Fatal(err)
	}
	if dead0 != 0 {
		t.Errorf("dead-gateway route skips before any gateway died: %v", dead0)
	}

	foClose(g.start)
	time.Sleep(2 * time.Second)
	seqAtKill := max(b1.seen(), b2.seen())
	// gw1 handles a socket's frames one after the other: a burst right before the
	// crash leaves sends of a1 and a2 unanswered (some stored, some not), which they
	// resend with the same tempMessageId through gw2.
	for range 10 {
		a1.sendNew()
		a2.sendNew()
	}
	time.Sleep(15 * time.Millisecond) // gw1 is working through them: one in flight to logic
	kill := gw1.kill(t)

	// logic's skip counter, sampled until the load ends.
	type sample struct {
		at time.Duration
		v  float64
	}
	samplesCh := make(chan []sample, 1)
	stopSampling := make(chan struct{})
	go func() {
		var out []sample
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			if v, err := logicP.metric("gochat_logic_dead_gateway_routes_total"); err == nil {
				out = append(out, sample{time.Since(kill), v})
			}
			select {
			case <-stopSampling:
				samplesCh <- out
				return
			case <-tk.C:
			}
		}
	}()

	regGone, ok := in.waitKey(gwKey, false, kill, 10*time.Second)
	close(regGoneCh)
	if !ok {
		t.Errorf("%s still registered %s after the kill", gwKey, foSecs(regGone))
	}
	time.Sleep(time.Until(kill.Add(5 * time.Second)))
	foClose(g.stopSend)
	if !foWaitFor(30*time.Second, func() bool { return b1.settled() && b2.settled() }) {
		t.Errorf("senders still have unresolved sends 30s after the load stopped")
	}
	hist := foHistory(t, api, toks["gw_b1"], conv)
	n := len(hist)
	if !foWaitFor(10*time.Second, func() bool {
		for _, c := range clients {
			if !c.covered(n) || !c.settled() {
				return false
			}
		}
		return true
	}) {
		for _, c := range clients {
			c.mu.Lock()
			t.Logf("%s has seqs 1..%d and up to %d of %d (syncing %v)", c.name, c.contig, c.maxSeen, n, c.syncing)
			c.mu.Unlock()
		}
	}
	close(stopSampling)
	samples := <-samplesCh
	g.end()

	foProblems(t, clients)
	foCheckHistory(t, hist, clients, "warmup")
	in.foCheckDB(t, conv, n)
	st := foStats(kill, b1, b2)
	if st.acked != st.sent || st.gaveUp > 0 || st.retried > 0 {
		t.Errorf("gw2 senders: %d sends, %d acked, %d retried, %d given up", st.sent, st.acked, st.retried, st.gaveUp)
	}
	// gw1's senders: every send acked within the client's tries; a resend of one
	// that gw1 had already stored got the stored message back.
	sta := foStats(kill, a1, a2)
	if sta.acked != sta.sent || sta.gaveUp > 0 || sta.maxTries > foMaxTries {
		t.Errorf("gw1 senders: %d sends, %d acked, %d given up (max tries %d)", sta.sent, sta.acked, sta.gaveUp, sta.maxTries)
	}
	if sta.retried == 0 {
		t.Error("no send of gw1's clients was pending at the crash: the resend path went untested")
	}
	deduped := 0
	for _, c := range []*foClient{a1, a2} {
		c.mu.Lock()
		for _, r := range c.recs {
			if st, err := time.Parse("2006-01-02T15:04:05.000Z", r.ack.SendTime); err == nil && r.tries > 1 && st.Before(kill) {
				deduped++ // stored before the crash, acked only to the resend
			}
		}
		c.mu.Unlock()
	}
	if regGone > foOutOfRotation {
		t.Errorf("%s gone only %s after the kill, want ≤ %s", gwKey, foSecs(regGone), foOutOfRotation)
	}

	// gw2's users kept getting every push (b1 and b2 get each other's messages).
	missed, reordered := foLiveCheck(t, n, clients)
	for _, c := range []*foClient{b1, b2} {
		if missed[c.name] > 0 {
			t.Errorf("%s (on the live gateway) missed %d of %d pushes", c.name, missed[c.name], n)
		}
	}
	var afterKill int
	b2.mu.Lock()
	for _, rv := range b2.recv {
		if rv.at.After(kill.Add(regGone)) && !rv.sync {
			afterKill++
		}
	}
	b2.mu.Unlock()
	if afterKill == 0 {
		t.Error("gw2's user got no push after gw1's registration was gone")
	}

	// gw1's users: after the reconnect, sync from the end of what they had brings
	// everything after it without a gap, and with what they saw live it is 1..N.
	recovered, onlySync := map[string]int{}, map[string]int{}
	reconnectAfter := map[string]time.Duration{}
	for _, c := range []*foClient{a1, a2} {
		c.mu.Lock()
		if len(c.epochs) < 2 || c.epochs[1].gw != gw2.gw || len(c.syncFrom) == 0 {
			t.Errorf("%s did not reconnect to gw2 and sync: epochs %+v, syncs from %v", c.name, c.epochs, c.syncFrom)
			c.mu.Unlock()
			continue
		}
		reconnectAfter[c.name] = c.epochs[1].at.Sub(kill)
		from := c.syncFrom[0]
		var synced []int64
		all := map[int64]bool{}
		for _, rv := range c.recv {
			all[rv.msg.SeqID] = true
			if rv.sync {
				synced = append(synced, rv.msg.SeqID)
			}
		}
		for _, r := range c.recs {
			if r.acked {
				all[r.ack.SeqID] = true // its own, never pushed to the socket that sent it
			}
		}
		for i, s := range synced {
			if s != from+int64(i)+1 {
				t.Errorf("%s: sync after seq %d returned %v, want %d.. in order without gaps", c.name, from, synced, from+1)
				break
			}
		}
		if len(c.syncDone) == 0 {
			t.Errorf("%s never completed a sync after reconnecting", c.name)
		}
		for s := int64(1); s <= int64(n); s++ {
			if !all[s] {
				t.Errorf("%s never got seq %d (sync from %d brought %d, %d seqs in all)", c.name, s, from, len(synced), len(all))
				break
			}
		}
		// What only sync delivered: the messages lost with gw1 (or sent while
		// the client was away) that no push brought.
		live := map[int64]bool{}
		for _, rv := range c.recv {
			if !rv.sync {
				live[rv.msg.SeqID] = true
			}
		}
		for _, s := range synced {
			if !live[s] {
				onlySync[c.name]++
			}
		}
		recovered[c.name] = len(synced)
		c.mu.Unlock()
	}

	// logic stopped routing to gw1: the last push record on gw1's topic was
	// published within the budget, and the skip counter only moved once gw1's
	// registration was gone, for routes that Redis still holds.
	var lastPub time.Duration = -1
	pubsAfter := 0
	for _, r := range foTopic(t, in.kafka, pushq.GatewayTopic(gw1.gwID)) {
		if r.Timestamp.After(kill) {
			pubsAfter++
			lastPub = max(lastPub, r.Timestamp.Sub(kill))
		}
	}
	if lastPub > foOutOfRotation {
		t.Errorf("logic still published a push to dead gw1 %s after the kill, want ≤ %s", foSecs(lastPub), foOutOfRotation)
	}
	skipFrom := time.Duration(-1)
	var deadEnd float64
	for _, s := range samples {
		if s.v > dead0 && skipFrom < 0 {
			skipFrom = s.at
		}
		deadEnd = max(deadEnd, s.v)
	}
	if v, err := logicP.metric("gochat_logic_dead_gateway_routes_total"); err == nil {
		deadEnd = max(deadEnd, v)
	}
	delta := deadEnd - dead0
	liveGw1 := foRedisRoutes(t, in, []string{ids["gw_a1"], ids["gw_a2"]}, gw1.gwID)
	switch {
	case delta > 0 && liveGw1 == 0:
		t.Errorf("logic skipped %v dead-gateway routes, but Redis holds no live route to gw1", delta)
	case delta == 0 && liveGw1 > 0:
		t.Errorf("Redis still routes %d users to dead gw1, yet logic never counted a skipped route", liveGw1)
	case delta > float64(liveGw1*(n-int(seqAtKill))):
		t.Errorf("logic skipped %v routes; at most %d users × %d messages after the kill were possible", delta, liveGw1, n-int(seqAtKill))
	}
	if skipFrom >= 0 && skipFrom+150*time.Millisecond < regGone {
		t.Errorf("logic skipped gw1's routes %s after the kill, before its registration was gone (%s)", foSecs(skipFrom), foSecs(regGone))
	}
	t.Logf("FAILOVER gateway: registration gone after %s, last push routed to the dead gateway after %s (%d after the kill), "+
		"dead-route skips from %s (%v skips, %d stale routes in Redis), a1 reconnected after %s, a2 reconnected after %s, "+
		"sync returned a1=%d a2=%d (only by sync a1=%d a2=%d), messages %d (%d after the kill), gw2 sends %d acked %d retried %d, max ack latency %s, "+
		"gw1 clients' sends %d acked %d retried %d (stored before the crash and deduplicated %d) max tries %d",
		foSecs(regGone), foSecs(lastPub), pubsAfter, foRelSkip(skipFrom), delta, liveGw1, foSecs(reconnectAfter["gw_a1"]), foSecs(reconnectAfter["gw_a2"]),
		recovered["gw_a1"], recovered["gw_a2"], onlySync["gw_a1"], onlySync["gw_a2"], n, n-int(seqAtKill), st.sent, st.acked, st.retried, foSecs(st.maxLatency),
		sta.sent, sta.acked, sta.retried, deduped, sta.maxTries)
	busPushes, busInverted := foBusOrder(t, in.kafka, pushq.GatewayTopic(gw2.gwID), conv)
	t.Logf("FAILOVER gateway: out-of-order pushes %v; on gw2's topic %d of %d pushes were published after a higher seq", reordered, busInverted, busPushes)
}

func foRelSkip(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return foSecs(d)
}

// foRedisRoutes counts the users among uids with a live route to gateway gw.
func foRedisRoutes(t *testing.T, in *foInfra, uids []string, gw string) int {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: in.redis})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now, err := rc.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	live := 0
	for _, uid := range uids {
		v, err := rc.HGet(ctx, in.prefix+"route:"+uid, gw).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var cnt, exp int64
		if _, err := fmt.Sscanf(v, "%d:%d", &cnt, &exp); err != nil {
			t.Fatalf("route %s/%s = %q: %v", uid, gw, v, err)
		}
		if cnt > 0 && exp > now.UnixMilli() {
			live++
		}
	}
	return live
}

// foTopic returns every record on topic, partition by partition, in log order.
func foTopic(t *testing.T, brokers []string, topic string) []*sarama.ConsumerMessage {
	t.Helper()
	cfg := sarama.NewConfig()
	cfg.Consumer.Return.Errors = true
	cli, err := sarama.NewClient(brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	parts, err := cli.Partitions(topic)
	if err != nil {
		t.Fatalf("partitions of %s: %v", topic, err)
	}
	cons, err := sarama.NewConsumerFromClient(cli)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var out []*sarama.ConsumerMessage
	for _, p := range parts {
		oldest, err1 := cli.GetOffset(topic, p, sarama.OffsetOldest)
		newest, err2 := cli.GetOffset(topic, p, sarama.OffsetNewest)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		if newest <= oldest {
			continue
		}
		pc, err := cons.ConsumePartition(topic, p, oldest)
		if err != nil {
			t.Fatal(err)
		}
		timeout := time.After(10 * time.Second)
	read:
		for {
			select {
			case m := <-pc.Messages():
				out = append(out, m)
				if m.Offset >= newest-1 {
					break read
				}
			case err := <-pc.Errors():
				t.Fatalf("consume %s/%d: %v", topic, p, err)
			case <-timeout:
				t.Fatalf("consume %s/%d: offsets %d..%d not read within 10s", topic, p, oldest, newest)
			}
		}
		_ = pc.Close()
	}
	return out
}

// foBusOrder counts the message pushes of conv on topic and those published after a
// push with a higher seq (out of seq order on the bus itself).
func foBusOrder(t *testing.T, brokers []string, topic, conv string) (pushes, inverted int) {
	t.Helper()
	var top int64
	for _, r := range foTopic(t, brokers, topic) {
		p, err := pushq.DecodePush(r.Value)
		if err != nil || p.Message.ConversationID != conv {
			continue
		}
		pushes++
		if p.Message.Seq < top {
			inverted++
		}
		top = max(top, p.Message.Seq)
	}
	return pushes, inverted
}
