package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/gochat/gochat/repo/repotest"
)

// cluster is one running topology inside the test process.
type cluster struct {
	gateways []string // "127.0.0.1:port" of each gateway
	nodes    []*node
}

// counter reads a counter's value, or a histogram's sample count, from the first
// node running target.
func (c *cluster) counter(t *testing.T, target, name string) float64 {
	t.Helper()
	for _, n := range c.nodes {
		if !n.has(target) {
			continue
		}
		mfs, err := n.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name && len(mf.Metric) > 0 {
				if h := mf.Metric[0].GetHistogram(); h != nil {
					return float64(h.GetSampleCount())
				}
				return mf.Metric[0].GetCounter().GetValue()
			}
		}
		t.Fatalf("%s has no metric %s", target, name)
	}
	t.Fatalf("no node runs %s", target)
	return 0
}

func testLogger(t *testing.T, name string) *slog.Logger {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			_, _ = f.Seek(0, io.SeekStart)
			b, _ := io.ReadAll(f)
			t.Logf("--- %s log ---\n%s", name, b)
		}
		_ = f.Close()
	})
	return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// baseConfig is Default() on loopback ports chosen by the kernel.
func baseConfig(t *testing.T) Config {
	cfg := Default()
	cfg.Admin.Addr = ""
	cfg.ShutdownGrace = 20 * time.Second
	cfg.Etcd.DataDir = t.TempDir()
	cfg.Gateway.Addr = "127.0.0.1:0"
	cfg.Logic.RPCAddr = "127.0.0.1:0"
	cfg.Task.RPCAddr = "127.0.0.1:0"
	cfg.Repo.RPCAddr = "127.0.0.1:0"
	cfg.Logic.BcryptCost = 4
	cfg.Store.DSN = filepath.Join(t.TempDir(), "gochat.db")
	return cfg
}

// startNode runs one gochat process's worth of components until the test ends.
func startNode(t *testing.T, cfg Config, name string) *node {
	t.Helper()
	n, _ := startNodeStoppable(t, cfg, name)
	return n
}

// startNodeStoppable also returns a stop function: it cancels the node's context (as
// SIGTERM does) and returns Run's error. The test's cleanup stops it too.
func startNodeStoppable(t *testing.T, cfg Config, name string) (*node, func() error) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("%s config: %v", name, err)
	}
	n, err := newNode(cfg, testLogger(t, name), new(slog.LevelVar))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = fmt.Errorf("%s: did not stop within 30s", name)
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("%s: Run: %v", name, err)
		}
	})
	return n, stop
}

func waitReady(t *testing.T, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		select {
		case <-n.ready:
		case <-time.After(60 * time.Second):
			t.Fatalf("node %v not ready after 60s", n.targets)
		}
	}
}

func startAll(t *testing.T) *cluster {
	n := startNode(t, baseConfig(t), "all")
	waitReady(t, n)
	return &cluster{gateways: []string{n.gw.Addr().String()}, nodes: []*node{n}}
}

// startSplit runs repo, logic, task and two gateways as separate nodes against a real
// etcd (embedded in the test), a Kafka-protocol broker (kfake) over TCP, MariaDB and Redis.
func startSplit(t *testing.T) *cluster {
	ctx := context.Background()
	etcd, err := startEmbeddedEtcd(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = etcd.Close() })
	kc, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	dsn := repotest.MySQLDSN(t)
	redisAddr, prefix := repotest.RedisAddr(t)

	cfg := baseConfig(t)
	cfg.Etcd.Endpoints = []string{etcd.Endpoint()}
	cfg.Kafka.Brokers = kc.ListenAddrs()
	cfg.Auth.Secret = "split-topology-test-secret"
	cfg.Store.Driver, cfg.Store.DSN = "mysql", dsn
	cfg.Redis.Addr, cfg.Redis.Prefix = redisAddr, prefix
	// Groups of more than 3 go through task (jobs topic, consumer group, paged
	// fan-out), so the split suite covers that path and the all suite the direct one.
	cfg.Logic.LargeGroup = 3
	cfg.Task.FanoutBatch = 2

	var nodes []*node
	for _, target := range []string{"repo", "logic", "task", "gateway", "gateway"} {
		c := cfg
		c.Target = target
		nodes = append(nodes, startNode(t, c, fmt.Sprintf("%s-%d", target, len(nodes))))
	}
	waitReady(t, nodes...)
	return &cluster{gateways: []string{nodes[3].gw.Addr().String(), nodes[4].gw.Addr().String()}, nodes: nodes}
}

// ---- HTTP client ----

type apiResp struct {
	status int
	header http.Header
	Env    struct {
		Success    bool            `json:"success"`
		Message    string          `json:"message"`
		Code       string          `json:"code"`
		Data       json.RawMessage `json:"data"`
		Pagination *struct {
			Page, Size int
			Total      int64
			HasMore    bool
		} `json:"pagination"`
	}
}

func call(t *testing.T, method, url, token string, body any, hdr ...string) apiResp {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	out := apiResp{status: resp.StatusCode, header: resp.Header}
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) > 0 && json.Unmarshal(raw, &out.Env) != nil && resp.StatusCode != http.StatusNoContent {
		t.Fatalf("%s %s: status %d, body is not JSON: %q", method, url, resp.StatusCode, raw)
	}
	return out
}

func (r apiResp) want(t *testing.T, status int, code string) apiResp {
	t.Helper()
	if r.status != status || r.Env.Code != code || r.Env.Success != (status < 300) {
		t.Fatalf("got status %d code %q success %v message %q, want %d %q", r.status, r.Env.Code, r.Env.Success, r.Env.Message, status, code)
	}
	return r
}

func (r apiResp) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Env.Data, v); err != nil {
		t.Fatalf("data %s: %v", r.Env.Data, err)
	}
}

type user struct {
	UserID   string `json:"userId"`
	Username string `json:"username"`
	Avatar   string `json:"avatar"`
	IsGuest  bool   `json:"isGuest"`
}

type message struct {
	MessageID, ConversationID, SenderID, SenderName, Content, Type, SendTime, ClientMsgID string
	SeqID                                                                                 int64
}

func login(t *testing.T, api, name string) (string, user) {
	t.Helper()
	call(t, "POST", api+"/auth/register", "", map[string]string{"username": name, "password": "secret123"}).want(t, 201, "")
	r := call(t, "POST", api+"/auth/login", "", map[string]string{"username": name, "password": "secret123"}).want(t, 200, "")
	var d struct {
		Token string `json:"token"`
		User  user   `json:"user"`
	}
	r.decode(t, &d)
	if d.Token == "" || d.User.Username != name || d.User.IsGuest {
		t.Fatalf("login data = %+v", d)
	}
	return d.Token, d.User
}

// ---- WebSocket client ----

type frame struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

type wsClient struct {
	c        *websocket.Conn
	frames   chan frame
	closed   chan error // the read error (a *websocket.CloseError on a close frame)
	presence []frame    // friend-online frames set aside by expect
}

func dial(t *testing.T, gw, token string) *wsClient {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+gw+"/ws?token="+token, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (status %d)", err, status)
	}
	w := &wsClient{c: c, frames: make(chan frame, 256), closed: make(chan error, 1)}
	go func() {
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				w.closed <- err
				close(w.frames)
				return
			}
			var f frame
			if err := json.Unmarshal(b, &f); err != nil {
				w.closed <- fmt.Errorf("server sent non-JSON %q", b)
				close(w.frames)
				return
			}
			w.frames <- f
		}
	}()
	t.Cleanup(func() { _ = c.Close() })
	w.expect(t, "connected")
	return w
}

func (w *wsClient) send(t *testing.T, typ string, data any) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"type": typ, "data": data})
	if err := w.c.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// next returns the next frame.
func (w *wsClient) next(t *testing.T) frame {
	t.Helper()
	select {
	case f, ok := <-w.frames:
		if !ok {
			t.Fatalf("socket closed: %v", <-w.closed)
		}
		return f
	case <-time.After(10 * time.Second):
		t.Fatal("no frame within 10s")
	}
	return frame{}
}

// expect returns the next frame, which must be of type typ. Presence frames
// (friend-online) arrive whenever peers come and go; they are set aside for
// expectPresence unless typ asks for one.
func (w *wsClient) expect(t *testing.T, typ string) frame {
	t.Helper()
	for {
		f := w.next(t)
		if f.Type == "friend-online" && typ != "friend-online" {
			w.presence = append(w.presence, f)
			continue
		}
		if f.Type != typ {
			t.Fatalf("got frame %s %s, want %s", f.Type, f.Data, typ)
		}
		return f
	}
}

// expectPresence waits for friend-online {userId, online}, skipping other frames.
func (w *wsClient) expectPresence(t *testing.T, userID string, online bool) {
	t.Helper()
	match := func(f frame) bool {
		var d struct {
			UserID string `json:"userId"`
			Online bool   `json:"online"`
		}
		_ = json.Unmarshal(f.Data, &d)
		return d.UserID == userID && d.Online == online
	}
	for i, f := range w.presence {
		if match(f) {
			w.presence = append(w.presence[:i], w.presence[i+1:]...)
			return
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		f := w.next(t)
		if f.Type == "friend-online" && match(f) {
			return
		}
	}
	t.Fatalf("no friend-online {%s %v} within 10s", userID, online)
}

func (w *wsClient) expectClose(t *testing.T, code int) {
	t.Helper()
	for {
		select {
		case _, ok := <-w.frames:
			if ok {
				continue
			}
			err := <-w.closed
			ce, isClose := err.(*websocket.CloseError)
			if !isClose || ce.Code != code {
				t.Fatalf("socket ended with %v, want close code %d", err, code)
			}
			return
		case <-time.After(10 * time.Second):
			t.Fatalf("socket not closed within 10s, want close code %d", code)
		}
	}
}

func (w *wsClient) sendTo(t *testing.T, conv, content, tempID string) ack {
	t.Helper()
	w.send(t, "send-message", map[string]any{"conversationId": conv, "content": content, "messageType": "text", "tempMessageId": tempID})
	var a ack
	if err := json.Unmarshal(w.expect(t, "message-ack").Data, &a); err != nil {
		t.Fatal(err)
	}
	if a.TempMessageID != tempID || a.ConversationID != conv || a.SeqID < 1 {
		t.Fatalf("ack = %+v", a)
	}
	return a
}

type ack struct {
	TempMessageID, ClientMsgID, MessageID, ConversationID, SendTime string
	SeqID                                                           int64
}

func (w *wsClient) sendText(t *testing.T, content, tempID string) ack {
	t.Helper()
	w.send(t, "send-message", map[string]any{"conversationId": "world", "content": content, "messageType": "text", "tempMessageId": tempID})
	var a ack
	if err := json.Unmarshal(w.expect(t, "message-ack").Data, &a); err != nil {
		t.Fatal(err)
	}
	if a.TempMessageID != tempID || a.MessageID == "" || a.SeqID < 1 {
		t.Fatalf("ack = %+v", a)
	}
	return a
}

// expectMessage returns the next frame, which must be a new-message.
func (w *wsClient) expectMessage(t *testing.T) message {
	t.Helper()
	var d struct {
		ConversationID string  `json:"conversationId"`
		Message        message `json:"message"`
	}
	if err := json.Unmarshal(w.expect(t, "new-message").Data, &d); err != nil {
		t.Fatal(err)
	}
	if d.ConversationID != d.Message.ConversationID {
		t.Fatalf("new-message conversation mismatch: %+v", d)
	}
	return d.Message
}

// ---- the scenario suite, once per topology ----

func TestScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("scenario suite starts whole topologies")
	}
	for _, topo := range []struct {
		name  string
		start func(*testing.T) *cluster
	}{{"all", startAll}, {"split", startSplit}} {
		t.Run(topo.name, func(t *testing.T) {
			c := topo.start(t)
			t.Run("world chat", func(t *testing.T) {
				worldChat(t, c)
				if commits := c.counter(t, "repo", "gochat_repo_commit_messages"); commits == 0 {
					t.Fatal("repo observed no committed message batch")
				}
				if topo.name == "all" { // SQLite: the WAL checkpointer runs every 100 ms
					deadline := time.Now().Add(10 * time.Second)
					for c.counter(t, "repo", "gochat_repo_wal_checkpoint_seconds") == 0 {
						if time.Now().After(deadline) {
							t.Fatal("repo ran no WAL checkpoint in 10 s")
						}
						time.Sleep(20 * time.Millisecond)
					}
				}
			})
			t.Run("bad input", func(t *testing.T) { badInput(t, c) })
			t.Run("friends and 1:1", func(t *testing.T) { friendsAndSingles(t, c) })
			t.Run("groups", func(t *testing.T) {
				groups(t, c)
				jobs := c.counter(t, "task", "gochat_task_fanout_jobs_total")
				if large := topo.name == "split"; large != (jobs > 0) {
					t.Fatalf("task fan-out jobs = %v in the %s topology", jobs, topo.name)
				}
			})
			t.Run("presence", func(t *testing.T) { presence(t, c) })
			t.Run("guests", func(t *testing.T) { guests(t, c) })
		})
	}
}

func worldChat(t *testing.T, c *cluster) {
	gw1, gw2 := c.gateways[0], c.gateways[len(c.gateways)-1]
	api := "http://" + gw1 + "/api"
	aliceTok, alice := login(t, api, "alice")
	bobTok, _ := login(t, "http://"+gw2+"/api", "bob")
	var g struct {
		Token string `json:"token"`
		User  user   `json:"user"`
	}
	call(t, "POST", api+"/auth/guest", "", map[string]string{"guestName": ""}).want(t, 200, "").decode(t, &g)
	if !g.User.IsGuest || g.Token == "" || g.User.Username == "" {
		t.Fatalf("guest = %+v", g)
	}

	// Right after login, /conversations works and world comes first.
	var convs []struct {
		ConversationID string `json:"conversationId"`
		Type           string `json:"type"`
		UnreadCount    int64  `json:"unreadCount"`
		Target         struct {
			GroupID, GroupName string
		} `json:"target"`
	}
	call(t, "GET", api+"/conversations", g.Token, nil).want(t, 200, "").decode(t, &convs)
	if len(convs) == 0 || convs[0].ConversationID != "world" || convs[0].Type != "world" || convs[0].Target.GroupName != "World" {
		t.Fatalf("conversations = %+v", convs)
	}
	for _, p := range []string{"/users/info", "/user/info"} {
		var u user
		call(t, "GET", api+p, aliceTok, nil).want(t, 200, "").decode(t, &u)
		if u != alice {
			t.Fatalf("%s = %+v, want %+v", p, u, alice)
		}
	}

	a1 := dial(t, gw1, aliceTok) // two sockets for alice, on both gateways
	a2 := dial(t, gw2, aliceTok)
	bob := dial(t, gw2, bobTok)
	guest := dial(t, gw1, g.Token)

	// alice's first socket sends; everyone else, including her other socket, gets it.
	ak := a1.sendText(t, "hello world 你好", "tmp-1")
	for name, w := range map[string]*wsClient{"alice#2": a2, "bob": bob, "guest": guest} {
		m := w.expectMessage(t)
		if m.MessageID != ak.MessageID || m.SeqID != ak.SeqID || m.Content != "hello world 你好" ||
			m.SenderID != alice.UserID || m.SenderName != "alice" || m.Type != "text" || m.ConversationID != "world" {
			t.Fatalf("%s got %+v, want message %s seq %d", name, m, ak.MessageID, ak.SeqID)
		}
		if _, err := time.Parse("2006-01-02T15:04:05.000Z", m.SendTime); err != nil {
			t.Fatalf("sendTime %q is not RFC 3339 UTC with ms", m.SendTime)
		}
	}

	// A resend with the same temp id is acked with the same message and not delivered again.
	again := a1.sendText(t, "hello world 你好", "tmp-1")
	if again.MessageID != ak.MessageID || again.SeqID != ak.SeqID {
		t.Fatalf("resend ack = %+v, want %+v", again, ak)
	}
	// The client_msg_id alias and a numeric type work too.
	bob.send(t, "send-message", map[string]any{"conversationId": "world", "content": "marker", "messageType": 1, "client_msg_id": "b-1"})
	var bAck ack
	_ = json.Unmarshal(bob.expect(t, "message-ack").Data, &bAck)
	if bAck.TempMessageID != "b-1" || bAck.SeqID != ak.SeqID+1 {
		t.Fatalf("bob's ack = %+v, want seq %d", bAck, ak.SeqID+1)
	}
	// Everyone's next frame is bob's marker: no duplicate of alice's message, and
	// alice's sending socket never got its own message.
	for name, w := range map[string]*wsClient{"alice#1": a1, "alice#2": a2, "guest": guest} {
		if m := w.expectMessage(t); m.Content != "marker" || m.SeqID != bAck.SeqID {
			t.Fatalf("%s got %+v, want bob's marker", name, m)
		}
	}

	// ping/pong, HTTP send through the same pipeline, sync by seq.
	guest.send(t, "ping", nil)
	guest.expect(t, "pong")
	var hm message
	call(t, "POST", api+"/messages", aliceTok, map[string]any{"conversationId": "world", "content": "via http", "clientMsgId": "h-1"}).want(t, 201, "").decode(t, &hm)
	call(t, "POST", api+"/messages", aliceTok, map[string]any{"conversationId": "world", "content": "via http", "clientMsgId": "h-1"}).want(t, 200, "")
	for name, w := range map[string]*wsClient{"alice#1": a1, "alice#2": a2, "bob": bob, "guest": guest} {
		if m := w.expectMessage(t); m.MessageID != hm.MessageID {
			t.Fatalf("%s got %+v, want the HTTP message", name, m)
		}
	}
	guest.send(t, "sync", map[string]any{"conversationId": "world", "afterSeq": ak.SeqID})
	var sr struct {
		ConversationID string    `json:"conversationId"`
		Messages       []message `json:"messages"`
		HasMore        bool      `json:"hasMore"`
	}
	_ = json.Unmarshal(guest.expect(t, "sync-result").Data, &sr)
	if len(sr.Messages) != 2 || sr.Messages[0].Content != "marker" || sr.Messages[1].Content != "via http" || sr.HasMore {
		t.Fatalf("sync-result = %+v", sr)
	}

	// History: newest page, ascending, with pagination beside data.
	r := call(t, "GET", api+"/conversations/world/messages?page=1&size=2", bobTok, nil).want(t, 200, "")
	var hist []message
	r.decode(t, &hist)
	if len(hist) != 2 || hist[0].Content != "marker" || hist[1].Content != "via http" || r.Env.Pagination == nil ||
		r.Env.Pagination.Total != hm.SeqID || !r.Env.Pagination.HasMore || r.Env.Pagination.Size != 2 {
		t.Fatalf("history = %+v pagination %+v", hist, r.Env.Pagination)
	}

	// afterSeq is a cursor even at 0: the oldest messages first.
	var first []message
	call(t, "GET", api+"/conversations/world/messages?afterSeq=0&size=2", bobTok, nil).want(t, 200, "").decode(t, &first)
	if len(first) != 2 || first[0].SeqID != 1 || first[1].SeqID != 2 {
		t.Fatalf("afterSeq=0 page = %+v, want seqs 1 and 2", first)
	}

	// Unread: bob has read nothing but his own marker; PUT read clears it (world included).
	call(t, "GET", api+"/conversations", bobTok, nil).want(t, 200, "").decode(t, &convs)
	if convs[0].UnreadCount != 1 { // the HTTP message came after bob's own marker
		t.Fatalf("bob's world unread = %d, want 1", convs[0].UnreadCount)
	}
	call(t, "PUT", api+"/conversations/world/read", bobTok, nil).want(t, 200, "")
	call(t, "GET", api+"/conversations", bobTok, nil).want(t, 200, "").decode(t, &convs)
	if convs[0].UnreadCount != 0 {
		t.Fatalf("bob's world unread after read = %d, want 0", convs[0].UnreadCount)
	}
	guest.send(t, "read", map[string]any{"conversationId": "world", "seqId": hm.SeqID})
	guest.send(t, "ping", nil)
	guest.expect(t, "pong") // read has no reply on success

	// Logout revokes the token for HTTP and for new sockets; logout itself never 401s.
	call(t, "POST", api+"/auth/logout", bobTok, nil).want(t, 200, "")
	call(t, "GET", api+"/users/info", bobTok, nil).want(t, 401, "UNAUTHORIZED")
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+gw1+"/ws?token="+bobTok, nil)
	if err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("upgrade with a revoked token: err %v resp %v, want 401", err, resp)
	}
	call(t, "POST", api+"/auth/logout", bobTok, nil).want(t, 200, "")
	call(t, "POST", api+"/auth/logout", "", nil).want(t, 200, "")
}

func badInput(t *testing.T, c *cluster) {
	gw := c.gateways[0]
	api := "http://" + gw + "/api"
	tok, _ := login(t, api, "mallory")

	call(t, "POST", api+"/auth/register", "", map[string]string{"username": "mallory", "password": "secret123"}).want(t, 409, "USERNAME_TAKEN")
	call(t, "POST", api+"/auth/register", "", map[string]string{"username": "has space", "password": "secret123"}).want(t, 400, "INVALID_USERNAME")
	call(t, "POST", api+"/auth/register", "", map[string]string{"username": "ctl\x07x", "password": "secret123"}).want(t, 400, "INVALID_USERNAME")
	call(t, "POST", api+"/auth/register", "", `{"username": "x",`).want(t, 400, "BAD_REQUEST")
	call(t, "POST", api+"/auth/register", "", `{"username": 5, "password": "secret123"}`).want(t, 400, "BAD_REQUEST")
	call(t, "POST", api+"/auth/register", "", `{"username": "okname", "password": "secret123", "extra": true}`).want(t, 201, "")
	call(t, "POST", api+"/auth/register", "", bytes.Repeat([]byte("a"), 70<<10)).want(t, 413, "PAYLOAD_TOO_LARGE")
	call(t, "POST", api+"/auth/login", "", map[string]string{"username": "mallory", "password": "wrong-pw"}).want(t, 401, "INVALID_CREDENTIALS")
	call(t, "POST", api+"/auth/login", "", map[string]string{"username": "nobody", "password": "wrong-pw"}).want(t, 401, "INVALID_CREDENTIALS")
	for _, bad := range []string{"", "garbage", tok + "x", strings.ToUpper(tok)} {
		call(t, "GET", api+"/conversations", bad, nil).want(t, 401, "UNAUTHORIZED")
	}
	call(t, "GET", api+"/conversations", "", nil, "Authorization", "Basic abc").want(t, 401, "UNAUTHORIZED")
	call(t, "GET", api+"/conversations/world/messages?page=abc", tok, nil).want(t, 400, "BAD_REQUEST")
	call(t, "GET", api+"/conversations/nope/messages", tok, nil).want(t, 400, "INVALID_CONVERSATION")
	call(t, "GET", api+"/conversations/group_42/messages", tok, nil).want(t, 404, "CONVERSATION_NOT_FOUND")
	call(t, "POST", api+"/messages", tok, map[string]any{"conversationId": "world", "content": strings.Repeat("x", 4097)}).want(t, 400, "CONTENT_TOO_LONG")
	call(t, "POST", api+"/messages", tok, map[string]any{"conversationId": "world", "content": ""}).want(t, 400, "CONTENT_EMPTY")
	call(t, "GET", api+"/no/such/thing", tok, nil).want(t, 404, "NOT_FOUND")

	// CORS: preflight from another origin, echoed exactly.
	r := call(t, "OPTIONS", api+"/auth/login", "", nil, "Origin", "http://127.0.0.1:4173",
		"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type,authorization")
	if r.status != 204 || r.header.Get("Access-Control-Allow-Origin") != "http://127.0.0.1:4173" ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: %d %v", r.status, r.header)
	}

	// WebSocket: bad token before the upgrade, then bad frames on a live socket.
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+gw+"/ws?token=nope", nil)
	if err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("bad-token upgrade: err %v resp %v, want 401", err, resp)
	}
	w := dial(t, gw, tok)
	_ = w.c.WriteMessage(websocket.TextMessage, []byte("{not json"))
	if f := w.expect(t, "error"); !strings.Contains(string(f.Data), "BAD_FRAME") {
		t.Fatalf("malformed frame error = %s", f.Data)
	}
	w.send(t, "launch-missiles", map[string]any{})
	if f := w.expect(t, "error"); !strings.Contains(string(f.Data), "UNKNOWN_TYPE") {
		t.Fatalf("unknown type error = %s", f.Data)
	}
	w.send(t, "send-message", map[string]any{"conversationId": "world", "content": "", "tempMessageId": "e1"})
	if f := w.expect(t, "error"); !strings.Contains(string(f.Data), "CONTENT_EMPTY") || !strings.Contains(string(f.Data), `"tempMessageId":"e1"`) {
		t.Fatalf("empty content error = %s", f.Data)
	}
	w.send(t, "send-message", map[string]any{"conversationId": "world", "content": 42, "tempMessageId": "e2"})
	w.expect(t, "error")
	w.send(t, "send-message", map[string]any{"conversationId": "world", "content": "x", "messageType": "video", "tempMessageId": "e3"})
	if f := w.expect(t, "error"); !strings.Contains(string(f.Data), "INVALID_MESSAGE_TYPE") {
		t.Fatalf("bad type error = %s", f.Data)
	}
	w.send(t, "send-message", map[string]any{"conversationId": "world", "content": strings.Repeat("y", 5000), "tempMessageId": "e4"})
	if f := w.expect(t, "error"); !strings.Contains(string(f.Data), "CONTENT_TOO_LONG") {
		t.Fatalf("long content error = %s", f.Data)
	}
	w.send(t, "ping", nil)
	w.expect(t, "pong") // still alive after all of that

	bin := dial(t, gw, tok)
	_ = bin.c.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3})
	bin.expectClose(t, websocket.CloseUnsupportedData)

	big := dial(t, gw, tok)
	_ = big.c.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte("z"), 65<<10))
	big.expectClose(t, websocket.CloseMessageTooBig)

	// Nothing above hurt the gateway.
	call(t, "GET", "http://"+gw+"/healthz", "", nil).want(t, 200, "")
	call(t, "GET", "http://"+gw+"/readyz", "", nil).want(t, 200, "")
	if r := call(t, "GET", api+"/users/info", tok, nil); r.status != 200 {
		t.Fatalf("after bad input: %d", r.status)
	}
	raw, err := http.Get("http://" + gw + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(raw.Body)
	raw.Body.Close()
	for _, m := range []string{"gochat_gateway_connections", "gochat_gateway_frames_total", "gochat_gateway_send_seconds_bucket"} {
		if !bytes.Contains(b, []byte(m)) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

// TestGracefulShutdown: on SIGTERM (context cancelled) every socket is closed with
// 1001 "going away", readiness is withdrawn and Run returns cleanly within the grace.
func TestGracefulShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a topology")
	}
	n, stop := startNodeStoppable(t, baseConfig(t), "all")
	waitReady(t, n)
	gw := n.gw.Addr().String()
	tok, _ := login(t, "http://"+gw+"/api", "leaver")
	w1, w2 := dial(t, gw, tok), dial(t, gw, tok)
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- stop() }()
	w1.expectClose(t, websocket.CloseGoingAway)
	w2.expectClose(t, websocket.CloseGoingAway)
	if err := <-errc; err != nil {
		t.Fatalf("Run after shutdown: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("shutdown took %s", d)
	}
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	if _, err := fresh.Get("http://" + gw + "/healthz"); err == nil {
		t.Fatal("gateway still accepts connections after shutdown")
	}
}

func TestMain(m *testing.M) {
	// Kitex and Hertz log through process-global loggers; keep test output readable.
	bridgeFrameworkLogs(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}
