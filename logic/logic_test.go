package logic_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/snowflake"
	"github.com/cloudwego/kitex/client/callopt"
	"github.com/cloudwego/kitex/pkg/kerrors"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gochat/gochat/kitex_gen/base"
	"github.com/gochat/gochat/kitex_gen/logicapi"
	"github.com/gochat/gochat/kitex_gen/repoapi"
	"github.com/gochat/gochat/kitex_gen/taskapi"
	"github.com/gochat/gochat/logic"
	"github.com/gochat/gochat/logic/authtoken"
	"github.com/gochat/gochat/logic/pushq"
	"github.com/gochat/gochat/repo"
	"github.com/gochat/gochat/repo/kv"
	"github.com/gochat/gochat/repo/repotest"
	"github.com/gochat/gochat/repo/store"
)

// direct calls the repo handler in-process: logic is tested against the real repo
// and a real SQLite store, without Kitex in between.
type direct struct{ h *repo.Handler }

func (d direct) CreateUser(ctx context.Context, r *repoapi.CreateUserReq, _ ...callopt.Option) (*repoapi.CreateUserResp, error) {
	return d.h.CreateUser(ctx, r)
}
func (d direct) GetUserByName(ctx context.Context, r *repoapi.GetUserByNameReq, _ ...callopt.Option) (*repoapi.GetUserByNameResp, error) {
	return d.h.GetUserByName(ctx, r)
}
func (d direct) GetUsers(ctx context.Context, r *repoapi.GetUsersReq, _ ...callopt.Option) (*repoapi.GetUsersResp, error) {
	return d.h.GetUsers(ctx, r)
}
func (d direct) Append(ctx context.Context, r *repoapi.AppendReq, _ ...callopt.Option) (*repoapi.AppendResp, error) {
	return d.h.Append(ctx, r)
}
func (d direct) AppendBatch(ctx context.Context, r *repoapi.AppendBatchReq, _ ...callopt.Option) (*repoapi.AppendBatchResp, error) {
	return d.h.AppendBatch(ctx, r)
}
func (d direct) ListMessages(ctx context.Context, r *repoapi.ListMessagesReq, _ ...callopt.Option) (*repoapi.ListMessagesResp, error) {
	return d.h.ListMessages(ctx, r)
}
func (d direct) GetConversation(ctx context.Context, r *repoapi.GetConversationReq, _ ...callopt.Option) (*repoapi.GetConversationResp, error) {
	return d.h.GetConversation(ctx, r)
}
func (d direct) ListUserConversations(ctx context.Context, r *repoapi.ListUserConversationsReq, _ ...callopt.Option) (*repoapi.ListUserConversationsResp, error) {
	return d.h.ListUserConversations(ctx, r)
}
func (d direct) SetReadSeq(ctx context.Context, r *repoapi.SetReadSeqReq, _ ...callopt.Option) (*repoapi.SetReadSeqResp, error) {
	return d.h.SetReadSeq(ctx, r)
}
func (d direct) RevokeToken(ctx context.Context, r *repoapi.RevokeTokenReq, _ ...callopt.Option) (*repoapi.RevokeTokenResp, error) {
	return d.h.RevokeToken(ctx, r)
}
func (d direct) IsRevoked(ctx context.Context, r *repoapi.IsRevokedReq, _ ...callopt.Option) (*repoapi.IsRevokedResp, error) {
	return d.h.IsRevoked(ctx, r)
}
func (d direct) IsRevokedBatch(ctx context.Context, r *repoapi.IsRevokedBatchReq, _ ...callopt.Option) (*repoapi.IsRevokedBatchResp, error) {
	return d.h.IsRevokedBatch(ctx, r)
}
func (d direct) ConnectBatch(ctx context.Context, r *repoapi.ConnectBatchReq, _ ...callopt.Option) (*repoapi.ConnectBatchResp, error) {
	return d.h.ConnectBatch(ctx, r)
}
func (d direct) DisconnectBatch(ctx context.Context, r *repoapi.DisconnectBatchReq, _ ...callopt.Option) (*repoapi.DisconnectBatchResp, error) {
	return d.h.DisconnectBatch(ctx, r)
}
func (d direct) Ping(ctx context.Context, r *repoapi.PingReq, _ ...callopt.Option) (*repoapi.PingResp, error) {
	return d.h.Ping(ctx, r)
}

func (d direct) AddFriend(ctx context.Context, r *repoapi.AddFriendReq, _ ...callopt.Option) (*repoapi.AddFriendResp, error) {
	return d.h.AddFriend(ctx, r)
}
func (d direct) ListFriends(ctx context.Context, r *repoapi.ListFriendsReq, _ ...callopt.Option) (*repoapi.ListFriendsResp, error) {
	return d.h.ListFriends(ctx, r)
}
func (d direct) EnsureSingle(ctx context.Context, r *repoapi.EnsureSingleReq, _ ...callopt.Option) (*repoapi.EnsureSingleResp, error) {
	return d.h.EnsureSingle(ctx, r)
}
func (d direct) CreateGroup(ctx context.Context, r *repoapi.CreateGroupReq, _ ...callopt.Option) (*repoapi.CreateGroupResp, error) {
	return d.h.CreateGroup(ctx, r)
}
func (d direct) GetMember(ctx context.Context, r *repoapi.GetMemberReq, _ ...callopt.Option) (*repoapi.GetMemberResp, error) {
	return d.h.GetMember(ctx, r)
}
func (d direct) ListMembers(ctx context.Context, r *repoapi.ListMembersReq, _ ...callopt.Option) (*repoapi.ListMembersResp, error) {
	return d.h.ListMembers(ctx, r)
}
func (d direct) AddMembers(ctx context.Context, r *repoapi.AddMembersReq, _ ...callopt.Option) (*repoapi.AddMembersResp, error) {
	return d.h.AddMembers(ctx, r)
}
func (d direct) RemoveMember(ctx context.Context, r *repoapi.RemoveMemberReq, _ ...callopt.Option) (*repoapi.RemoveMemberResp, error) {
	return d.h.RemoveMember(ctx, r)
}
func (d direct) ListPeers(ctx context.Context, r *repoapi.ListPeersReq, _ ...callopt.Option) (*repoapi.ListPeersResp, error) {
	return d.h.ListPeers(ctx, r)
}

func (d direct) ListPeersBatch(ctx context.Context, r *repoapi.ListPeersBatchReq, _ ...callopt.Option) (*repoapi.ListPeersBatchResp, error) {
	return d.h.ListPeersBatch(ctx, r)
}
func (d direct) Connect(ctx context.Context, r *repoapi.ConnectReq, _ ...callopt.Option) (*repoapi.ConnectResp, error) {
	return d.h.Connect(ctx, r)
}
func (d direct) Disconnect(ctx context.Context, r *repoapi.DisconnectReq, _ ...callopt.Option) (*repoapi.DisconnectResp, error) {
	return d.h.Disconnect(ctx, r)
}
func (d direct) RefreshRoutes(ctx context.Context, r *repoapi.RefreshRoutesReq, _ ...callopt.Option) (*repoapi.RefreshRoutesResp, error) {
	return d.h.RefreshRoutes(ctx, r)
}
func (d direct) GetRoutes(ctx context.Context, r *repoapi.GetRoutesReq, _ ...callopt.Option) (*repoapi.GetRoutesResp, error) {
	return d.h.GetRoutes(ctx, r)
}

// fakeTask records hand-overs.
type fakeTask struct {
	mu   sync.Mutex
	reqs []*taskapi.DeferPushReq
}

func (f *fakeTask) DeferPush(_ context.Context, r *taskapi.DeferPushReq, _ ...callopt.Option) (*taskapi.DeferPushResp, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, r)
	return &taskapi.DeferPushResp{}, nil
}

type env struct {
	l      *logic.Logic
	bus    *pushq.Memory
	pushes chan pushq.Push
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, func(r logic.Repo) logic.Repo { return r })
}

// gatewayPushes subscribes to gateway gw's topic and passes on the pushes keep
// accepts (nil: all), in a channel of size; an undecodable push fails the test.
func (e *env) gatewayPushes(t *testing.T, gw string, size int, keep func(pushq.Push) bool) <-chan pushq.Push {
	t.Helper()
	ch := make(chan pushq.Push, size)
	sub, err := e.bus.Subscribe(context.Background(), pushq.GatewayTopic(gw), func(v []byte) {
		p, err := pushq.DecodePush(v)
		if err != nil {
			t.Errorf("undecodable push: %v", err)
			return
		}
		if keep == nil || keep(p) {
			ch <- p
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return ch
}

func messagesOnly(p pushq.Push) bool { return p.Kind == pushq.KindMessage }

// newEnvWith is newEnv with logic's repo client wrapped by wrap.
func newEnvWith(t *testing.T, wrap func(logic.Repo) logic.Repo) *env {
	t.Helper()
	return newEnvConfig(t, wrap, func(*logic.Config) {})
}

// newEnvConfig is newEnvWith with logic's configuration changed by tune.
func newEnvConfig(t *testing.T, wrap func(logic.Repo) logic.Repo, tune func(*logic.Config)) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ids, _ := snowflake.NewNode(1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(ctx, store.Config{Driver: "sqlite", DSN: repotest.SQLiteDSN(t)}, ids, log)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := authtoken.New("0123456789abcdef-test", time.Hour)
	bus := pushq.NewMemory()
	cfg := logic.Default()
	cfg.BcryptCost = 4
	tune(&cfg)
	l, err := logic.New(cfg, logic.Deps{
		Log: log, Metrics: prometheus.NewRegistry(), Repo: wrap(direct{repo.New(st, kv.NewMemory(), log)}),
		Task: &fakeTask{}, Bus: bus, Tokens: signer,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{l: l, bus: bus, pushes: make(chan pushq.Push, 100)}
	sub, err := bus.Subscribe(ctx, pushq.TopicBroadcast, func(v []byte) {
		p, err := pushq.DecodePush(v)
		if err != nil {
			t.Errorf("undecodable push: %v", err)
			return
		}
		e.pushes <- p
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- l.Run(ctx, func(ctx context.Context) error { <-ctx.Done(); return nil })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		_ = sub.Close()
		_ = bus.Close()
		_ = st.Close()
	})
	return e
}

func codeOf(err error) base.ErrCode {
	if bse, ok := kerrors.FromBizStatusError(err); ok {
		return base.ErrCode(bse.BizStatusCode())
	}
	return -1
}

func messageOf(err error) string {
	if bse, ok := kerrors.FromBizStatusError(err); ok {
		return bse.BizMessage()
	}
	return ""
}

func (e *env) register(t *testing.T, name string) (*repoapi.User, string) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.l.Register(ctx, &logicapi.RegisterReq{Username: name, Password: "secret123"}); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	resp, err := e.l.Login(ctx, &logicapi.LoginReq{Username: name, Password: "secret123"})
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	return resp.User, resp.Token
}

func TestRegisterValidation(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, user, pass string
		want             base.ErrCode
	}{
		{"ok ascii", "alice_1", "secret1", base.ErrCode_OK},
		{"ok cjk", "小明同学", "密码密码密码", base.ErrCode_OK},
		{"ok dash", "a-b", "123456", base.ErrCode_OK},
		{"too short", "ab", "secret1", base.ErrCode_INVALID_USERNAME},
		{"too long", strings.Repeat("a", 21), "secret1", base.ErrCode_INVALID_USERNAME},
		{"space", "bob smith", "secret1", base.ErrCode_INVALID_USERNAME},
		{"control", "bob\x01x", "secret1", base.ErrCode_INVALID_USERNAME},
		{"newline", "bob\nx", "secret1", base.ErrCode_INVALID_USERNAME},
		{"emoji", "bob😀x", "secret1", base.ErrCode_INVALID_USERNAME},
		{"invalid utf8", "bo\xffb", "secret1", base.ErrCode_INVALID_USERNAME},
		{"short password", "carol", "12345", base.ErrCode_INVALID_PASSWORD},
		{"long password", "carol2", strings.Repeat("x", 51), base.ErrCode_INVALID_PASSWORD},
		{"duplicate", "alice_1", "secret1", base.ErrCode_USERNAME_TAKEN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.l.Register(context.Background(), &logicapi.RegisterReq{Username: tt.user, Password: tt.pass})
			if tt.want == base.ErrCode_OK {
				if err != nil {
					t.Fatalf("Register(%q) = %v, want ok", tt.user, err)
				}
				return
			}
			if got := codeOf(err); got != tt.want {
				t.Fatalf("Register(%q) code = %v (%v), want %v", tt.user, got, err, tt.want)
			}
		})
	}
}

func TestLoginSameAnswerForUnknownAndWrong(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// 50 CJK runes = 150 bytes: beyond bcrypt's 72-byte limit, still a valid password.
	long := strings.Repeat("密", 50)
	if _, err := e.l.Register(ctx, &logicapi.RegisterReq{Username: "dave", Password: long}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.l.Login(ctx, &logicapi.LoginReq{Username: "dave", Password: long}); err != nil {
		t.Fatalf("login with long password: %v", err)
	}
	_, wrong := e.l.Login(ctx, &logicapi.LoginReq{Username: "dave", Password: strings.Repeat("密", 49) + "x"})
	_, unknown := e.l.Login(ctx, &logicapi.LoginReq{Username: "nobody", Password: "whatever"})
	if codeOf(wrong) != base.ErrCode_INVALID_CREDENTIALS || codeOf(unknown) != base.ErrCode_INVALID_CREDENTIALS {
		t.Fatalf("wrong=%v unknown=%v, want INVALID_CREDENTIALS for both", wrong, unknown)
	}
	if wrong.Error() != unknown.Error() {
		t.Fatalf("messages differ: %q vs %q", wrong, unknown)
	}
}

func TestGuestAndLogoutRevokes(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	g, err := e.l.Guest(ctx, &logicapi.GuestReq{})
	if err != nil {
		t.Fatal(err)
	}
	if !g.User.IsGuest || !strings.HasPrefix(g.User.Username, "guest_") {
		t.Fatalf("guest user = %+v", g.User)
	}
	// A guest cannot log in with a password.
	if _, err := e.l.Login(ctx, &logicapi.LoginReq{Username: g.User.Username, Password: "anything"}); codeOf(err) != base.ErrCode_INVALID_CREDENTIALS {
		t.Fatalf("guest password login err = %v", err)
	}
	a, err := e.l.Auth(ctx, &logicapi.AuthReq{Token: g.Token})
	if err != nil || a.Session.UserId != g.User.Id || !a.Session.IsGuest {
		t.Fatalf("Auth = %+v, %v", a, err)
	}
	if _, err := e.l.Logout(ctx, &logicapi.LogoutReq{Token: g.Token}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.l.Auth(ctx, &logicapi.AuthReq{Token: g.Token}); codeOf(err) != base.ErrCode_UNAUTHORIZED {
		t.Fatalf("Auth after logout err = %v, want UNAUTHORIZED", err)
	}
	if _, err := e.l.Logout(ctx, &logicapi.LogoutReq{Token: "garbage"}); err != nil {
		t.Fatalf("Logout(garbage) = %v, want success", err)
	}
	named, err := e.l.Guest(ctx, &logicapi.GuestReq{GuestName: "visitor"})
	if err != nil || named.User.Username != "visitor" {
		t.Fatalf("named guest = %+v, %v", named, err)
	}
}

func TestSendValidationAndIdempotency(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	u, _ := e.register(t, "sender")
	bad := []struct {
		name string
		req  logicapi.SendReq
		want base.ErrCode
	}{
		{"empty", logicapi.SendReq{ConversationId: "world", Content: "  \n", Type: 1}, base.ErrCode_CONTENT_EMPTY},
		{"too long", logicapi.SendReq{ConversationId: "world", Content: strings.Repeat("x", 4097), Type: 1}, base.ErrCode_CONTENT_TOO_LONG},
		{"bad type", logicapi.SendReq{ConversationId: "world", Content: "hi", Type: 9}, base.ErrCode_INVALID_MESSAGE_TYPE},
		{"long client id", logicapi.SendReq{ConversationId: "world", Content: "hi", Type: 1, ClientMsgId: strings.Repeat("c", 65)}, base.ErrCode_INVALID_CLIENT_MSG_ID},
		{"bad conversation", logicapi.SendReq{ConversationId: "../etc", Content: "hi", Type: 1}, base.ErrCode_INVALID_CONVERSATION},
		{"unknown group", logicapi.SendReq{ConversationId: "group_123", Content: "hi", Type: 1}, base.ErrCode_CONVERSATION_NOT_FOUND},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			req.UserId = u.Id
			if _, err := e.l.Send(ctx, &req); codeOf(err) != tt.want {
				t.Fatalf("Send err = %v, want %v", err, tt.want)
			}
		})
	}
	first, err := e.l.Send(ctx, &logicapi.SendReq{UserId: u.Id, ConversationId: "world", Content: "hello", Type: 1, ClientMsgId: "t-1", OriginConn: "gw/1"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.l.Send(ctx, &logicapi.SendReq{UserId: u.Id, ConversationId: "world", Content: "hello", Type: 1, ClientMsgId: "t-1", OriginConn: "gw/1"})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Message.Id != first.Message.Id || again.Message.Seq != first.Message.Seq {
		t.Fatalf("resend = %+v dup=%v, want same message as %+v", again.Message, again.Duplicate, first.Message)
	}
	if first.Message.Seq != 1 || first.Message.SenderName != "sender" {
		t.Fatalf("first message = %+v", first.Message)
	}
	// Each send is pushed, the resend too (its first push may have been lost with a
	// dead logic; gateways drop pushes they already delivered), then the next one.
	for i, want := range []int64{first.Message.Id, first.Message.Id} {
		select {
		case p := <-e.pushes:
			if p.Message.ID != want || p.OriginConn != "gw/1" {
				t.Fatalf("push %d = %+v, want message %d", i, p, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("push %d missing", i)
		}
	}
	next, err := e.l.Send(ctx, &logicapi.SendReq{UserId: u.Id, ConversationId: "world", Content: "second", Type: 1, ClientMsgId: "t-2"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-e.pushes:
		if p.Message.ID != next.Message.Id {
			t.Fatalf("third push carries %d, want the second message %d", p.Message.ID, next.Message.Id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no push for the second send")
	}
}

func TestHistoryPagingAndUnread(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, _ := e.register(t, "alice")
	b, _ := e.register(t, "bob")
	for i := 1; i <= 7; i++ {
		if _, err := e.l.Send(ctx, &logicapi.SendReq{UserId: a.Id, ConversationId: "world", Content: fmt.Sprint("m", i), Type: 1}); err != nil {
			t.Fatal(err)
		}
	}
	seqs := func(req logicapi.ListMessagesReq) ([]int64, bool, int64) {
		t.Helper()
		req.UserId, req.ConversationId = b.Id, "world"
		resp, err := e.l.ListMessages(ctx, &req)
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, m := range resp.Messages {
			out = append(out, m.Seq)
		}
		return out, resp.HasMore, resp.Total
	}
	tests := []struct {
		name    string
		req     logicapi.ListMessagesReq
		want    string
		hasMore bool
	}{
		{"page 1", logicapi.ListMessagesReq{Page: 1, Size: 3}, "[5 6 7]", true},
		{"page 2", logicapi.ListMessagesReq{Page: 2, Size: 3}, "[2 3 4]", true},
		{"page 3", logicapi.ListMessagesReq{Page: 3, Size: 3}, "[1]", false},
		{"page 4", logicapi.ListMessagesReq{Page: 4, Size: 3}, "[]", false},
		{"default size", logicapi.ListMessagesReq{Page: 1}, "[1 2 3 4 5 6 7]", false},
		{"before 5", logicapi.ListMessagesReq{Page: 1, Size: 3, BeforeSeq: 5}, "[2 3 4]", true},
		{"after 5", logicapi.ListMessagesReq{Page: 1, Size: 3, AfterSeq: 5}, "[6 7]", false},
		{"after 1", logicapi.ListMessagesReq{Page: 1, Size: 3, AfterSeq: 1}, "[2 3 4]", true},
		{"sync from 0", logicapi.ListMessagesReq{Page: 0, Size: 3}, "[1 2 3]", true},
		{"size capped", logicapi.ListMessagesReq{Page: 1, Size: 1000}, "[1 2 3 4 5 6 7]", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, more, total := seqs(tt.req)
			if s := fmt.Sprint(got); s != tt.want {
				t.Fatalf("seqs = %v, want %s", got, tt.want)
			}
			if more != tt.hasMore || total != 7 {
				t.Fatalf("hasMore=%v total=%d, want %v 7", more, total, tt.hasMore)
			}
		})
	}

	unread := func(uid int64) int64 {
		t.Helper()
		resp, err := e.l.ListConversations(ctx, &logicapi.ListConversationsReq{UserId: uid})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Conversations) == 0 || resp.Conversations[0].Conversation.Id != "world" {
			t.Fatalf("conversations = %+v, want world first", resp.Conversations)
		}
		return resp.Conversations[0].UnreadCount
	}
	if got := unread(a.Id); got != 0 {
		t.Fatalf("sender's unread = %d, want 0 (own messages advance the read pointer)", got)
	}
	if got := unread(b.Id); got != 7 {
		t.Fatalf("bob's unread = %d, want 7", got)
	}
	if _, err := e.l.MarkRead(ctx, &logicapi.MarkReadReq{UserId: b.Id, ConversationId: "world", Seq: 4}); err != nil {
		t.Fatal(err)
	}
	if got := unread(b.Id); got != 3 {
		t.Fatalf("bob's unread after reading to 4 = %d, want 3", got)
	}
	if _, err := e.l.MarkRead(ctx, &logicapi.MarkReadReq{UserId: b.Id, ConversationId: "world"}); err != nil {
		t.Fatal(err)
	}
	if got := unread(b.Id); got != 0 {
		t.Fatalf("bob's unread after reading all = %d, want 0", got)
	}
	if _, err := e.l.MarkRead(ctx, &logicapi.MarkReadReq{UserId: b.Id, ConversationId: "single_0123456789abcdef"}); codeOf(err) != base.ErrCode_CONVERSATION_NOT_FOUND {
		t.Fatalf("MarkRead unknown single err = %v", err)
	}
}

func TestNewRequiresDeps(t *testing.T) {
	_, err := logic.New(logic.Default(), logic.Deps{})
	if err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("New without deps err = %v", err)
	}
}

// TestAuthBatch: each token gets what Auth would have answered, in order, from one
// revocation lookup.
func TestAuthBatch(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	alice, aliceTok := e.register(t, "alice")
	bob, bobTok := e.register(t, "bob")
	_, revokedTok := e.register(t, "carol")
	if _, err := e.l.Logout(ctx, &logicapi.LogoutReq{Token: revokedTok}); err != nil {
		t.Fatal(err)
	}
	empty, err := e.l.AuthBatch(ctx, &logicapi.AuthBatchReq{})
	if err != nil || len(empty.Results) != 0 {
		t.Fatalf("AuthBatch(empty) = %+v, %v", empty, err)
	}
	tokens := []string{aliceTok, "garbage", revokedTok, bobTok, aliceTok}
	resp, err := e.l.AuthBatch(ctx, &logicapi.AuthBatchReq{Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Results) != len(tokens) {
		t.Fatalf("%d results for %d tokens", len(resp.Results), len(tokens))
	}
	wantUser := []int64{alice.Id, 0, 0, bob.Id, alice.Id}
	for i, r := range resp.Results {
		single, serr := e.l.Auth(ctx, &logicapi.AuthReq{Token: tokens[i]})
		if wantUser[i] == 0 {
			if r.Session != nil || r.ErrorCode != base.ErrCode_UNAUTHORIZED || codeOf(serr) != r.ErrorCode || messageOf(serr) != r.Message {
				t.Errorf("result %d = %+v; Auth said %v", i, r, serr)
			}
			continue
		}
		if serr != nil || r.ErrorCode != base.ErrCode_OK || r.Session == nil || r.Session.UserId != wantUser[i] ||
			r.Session.Token != tokens[i] || r.Session.TokenId != single.Session.TokenId || r.Session.ExpiresAtMs != single.Session.ExpiresAtMs {
			t.Errorf("result %d = %+v; Auth said %+v, %v", i, r, single, serr)
		}
	}
	if msg := resp.Results[2].Message; msg != "token has been revoked" {
		t.Errorf("revoked token message = %q", msg)
	}
	if _, err := e.l.AuthBatch(ctx, &logicapi.AuthBatchReq{Tokens: make([]string, 1001)}); codeOf(err) != base.ErrCode_BAD_REQUEST {
		t.Errorf("AuthBatch(1001 tokens) err = %v, want BAD_REQUEST", err)
	}
}

// TestConnectBatch: a user's first socket in a batch announces them once, however
// often they repeat in it; the batch is refused when oversized.
func TestConnectBatch(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	alice, _ := e.register(t, "alice")
	bob, _ := e.register(t, "bob")
	carol, _ := e.register(t, "carol")
	if _, err := e.l.AddFriend(ctx, &logicapi.AddFriendReq{UserId: alice.Id, FriendId: bob.Id}); err != nil {
		t.Fatal(err)
	}
	presence := e.gatewayPushes(t, "gw-b", 10, nil)
	if _, err := e.l.Connect(ctx, &logicapi.ConnectReq{UserId: bob.Id, GatewayId: "gw-b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.l.ConnectBatch(ctx, &logicapi.ConnectBatchReq{}); err != nil {
		t.Fatalf("empty ConnectBatch: %v", err)
	}
	uids := []int64{alice.Id, carol.Id, alice.Id}
	if _, err := e.l.ConnectBatch(ctx, &logicapi.ConnectBatchReq{UserIds: uids, GatewayId: "gw-a"}); err != nil {
		t.Fatal(err)
	}
	// Alice has two sockets: the second disconnect is her last. Her presence
	// pushes share one FIFO shard, so bob's gateway sees online then offline,
	// with no second online between them.
	for range 2 {
		if _, err := e.l.Disconnect(ctx, &logicapi.DisconnectReq{UserId: alice.Id, GatewayId: "gw-a"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, wantOnline := range []bool{true, false} {
		select {
		case p := <-presence:
			if p.Kind != pushq.KindPresence || p.Presence.UserID != alice.Id || p.Presence.Online != wantOnline ||
				!slices.Equal(p.Recipients, []int64{bob.Id}) {
				t.Fatalf("push to gw-b = %+v (presence %+v), want alice online=%v for bob", p, p.Presence, wantOnline)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no presence push (online=%v) within 5s", wantOnline)
		}
	}
	if _, err := e.l.ConnectBatch(ctx, &logicapi.ConnectBatchReq{UserIds: make([]int64, 1001), GatewayId: "gw-a"}); codeOf(err) != base.ErrCode_BAD_REQUEST {
		t.Errorf("ConnectBatch(1001) err = %v, want BAD_REQUEST", err)
	}
	if _, err := e.l.ConnectBatch(ctx, &logicapi.ConnectBatchReq{UserIds: []int64{alice.Id}}); codeOf(err) != base.ErrCode_BAD_REQUEST {
		t.Errorf("ConnectBatch without gateway err = %v, want BAD_REQUEST", err)
	}
}

// TestDisconnectBatch: a user's last socket in a batch announces them offline once,
// however often they repeat in it; a user still online elsewhere is not announced;
// the batch is refused when oversized.
func TestDisconnectBatch(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	alice, _ := e.register(t, "alice")
	bob, _ := e.register(t, "bob")
	carol, _ := e.register(t, "carol")
	dave, _ := e.register(t, "dave")
	for _, f := range []int64{alice.Id, carol.Id, dave.Id} {
		if _, err := e.l.AddFriend(ctx, &logicapi.AddFriendReq{UserId: f, FriendId: bob.Id}); err != nil {
			t.Fatal(err)
		}
	}
	presence := e.gatewayPushes(t, "gw-b", 20, nil)
	if _, err := e.l.Connect(ctx, &logicapi.ConnectReq{UserId: bob.Id, GatewayId: "gw-b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.l.Connect(ctx, &logicapi.ConnectReq{UserId: dave.Id, GatewayId: "gw-c"}); err != nil {
		t.Fatal(err)
	}
	// Alice has two sockets on gw-a, carol and dave one each (dave another on gw-c).
	if _, err := e.l.ConnectBatch(ctx, &logicapi.ConnectBatchReq{UserIds: []int64{alice.Id, carol.Id, alice.Id, dave.Id}, GatewayId: "gw-a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.l.DisconnectBatch(ctx, &logicapi.DisconnectBatchReq{}); err != nil {
		t.Fatalf("empty DisconnectBatch: %v", err)
	}
	uids := []int64{alice.Id, carol.Id, dave.Id, alice.Id}
	if _, err := e.l.DisconnectBatch(ctx, &logicapi.DisconnectBatchReq{UserIds: uids, GatewayId: "gw-a"}); err != nil {
		t.Fatal(err)
	}
	// Dave goes offline only with his gw-c socket, after the batch.
	if _, err := e.l.Disconnect(ctx, &logicapi.DisconnectReq{UserId: dave.Id, GatewayId: "gw-c"}); err != nil {
		t.Fatal(err)
	}
	// A user's presence pushes share one FIFO shard: each sees online then offline,
	// exactly once each.
	want := map[int64][]bool{alice.Id: {true, false}, carol.Id: {true, false}, dave.Id: {true, false}}
	got := map[int64][]bool{}
	for range 6 {
		select {
		case p := <-presence:
			if p.Kind != pushq.KindPresence || !slices.Equal(p.Recipients, []int64{bob.Id}) {
				t.Fatalf("push to gw-b = %+v, want a presence push for bob", p)
			}
			got[p.Presence.UserID] = append(got[p.Presence.UserID], p.Presence.Online)
		case <-time.After(5 * time.Second):
			t.Fatalf("presence pushes so far %v; want %v within 5s", got, want)
		}
	}
	select {
	case p := <-presence:
		t.Fatalf("unexpected push %+v (presence %+v) after %v", p, p.Presence, got)
	case <-time.After(100 * time.Millisecond):
	}
	for uid, w := range want {
		if !slices.Equal(got[uid], w) {
			t.Errorf("presence of user %d = %v, want %v", uid, got[uid], w)
		}
	}
	if _, err := e.l.DisconnectBatch(ctx, &logicapi.DisconnectBatchReq{UserIds: make([]int64, 1001), GatewayId: "gw-a"}); codeOf(err) != base.ErrCode_BAD_REQUEST {
		t.Errorf("DisconnectBatch(1001) err = %v, want BAD_REQUEST", err)
	}
	if _, err := e.l.DisconnectBatch(ctx, &logicapi.DisconnectBatchReq{UserIds: []int64{alice.Id}}); codeOf(err) != base.ErrCode_BAD_REQUEST {
		t.Errorf("DisconnectBatch without gateway err = %v, want BAD_REQUEST", err)
	}
}

// shortDisconnects is a repo whose DisconnectBatch answers one flag too few.
type shortDisconnects struct{ direct }

func (s shortDisconnects) DisconnectBatch(ctx context.Context, r *repoapi.DisconnectBatchReq, o ...callopt.Option) (*repoapi.DisconnectBatchResp, error) {
	resp, err := s.direct.DisconnectBatch(ctx, r, o...)
	if err == nil && len(resp.Last) > 0 {
		resp.Last = resp.Last[:len(resp.Last)-1]
	}
	return resp, err
}

// TestDisconnectBatchWrongSize: a repo reply that does not answer every socket
// fails the batch instead of announcing the wrong users.
func TestDisconnectBatchWrongSize(t *testing.T) {
	ids, _ := snowflake.NewNode(1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(t.Context(), store.Config{Driver: "sqlite", DSN: repotest.SQLiteDSN(t)}, ids, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	signer, _ := authtoken.New("0123456789abcdef-test", time.Hour)
	bus := pushq.NewMemory()
	t.Cleanup(func() { _ = bus.Close() })
	l, err := logic.New(logic.Default(), logic.Deps{
		Log: log, Metrics: prometheus.NewRegistry(), Repo: shortDisconnects{direct{repo.New(st, kv.NewMemory(), log)}},
		Task: &fakeTask{}, Bus: bus, Tokens: signer,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.DisconnectBatch(t.Context(), &logicapi.DisconnectBatchReq{UserIds: []int64{1, 2}, GatewayId: "gw-a"})
	if codeOf(err) != base.ErrCode_UNAVAILABLE {
		t.Fatalf("DisconnectBatch with a short repo reply err = %v, want UNAVAILABLE", err)
	}
}

// TestSendBatch: each item gets what Send answers for it, from one AppendBatch, and
// the stored items are pushed as single sends would push them (a resend too), each
// conversation's pushes in seq order.
func TestSendBatch(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	alice, _ := e.register(t, "alice")
	bob, _ := e.register(t, "bob")
	carol, _ := e.register(t, "carol")
	view, err := e.l.AddFriend(ctx, &logicapi.AddFriendReq{UserId: alice.Id, FriendId: bob.Id})
	if err != nil {
		t.Fatal(err)
	}
	single := view.Conversation.Id
	gwB := e.gatewayPushes(t, "gw-b", 100, messagesOnly)
	if _, err := e.l.Connect(ctx, &logicapi.ConnectReq{UserId: bob.Id, GatewayId: "gw-b"}); err != nil {
		t.Fatal(err)
	}
	first, err := e.l.Send(ctx, &logicapi.SendReq{UserId: alice.Id, ConversationId: "world", Content: "hello", Type: 1, ClientMsgId: "t-1", OriginConn: "gw/1"})
	if err != nil {
		t.Fatal(err)
	}
	if p := <-e.pushes; p.Message.ID != first.Message.Id {
		t.Fatalf("push of the first send = %+v", p)
	}

	if empty, err := e.l.SendBatch(ctx, &logicapi.SendBatchReq{}); err != nil || len(empty.Results) != 0 {
		t.Fatalf("SendBatch(empty) = %+v, %v", empty, err)
	}
	items := []*logicapi.SendReq{
		0: {UserId: alice.Id, ConversationId: "world", Content: "w1", Type: 1, ClientMsgId: "t-2", OriginConn: "gw/1"},
		1: {UserId: alice.Id, ConversationId: "world", Content: strings.Repeat("x", 4097), Type: 1, ClientMsgId: "t-3"},
		2: {UserId: carol.Id, ConversationId: single, Content: "let me in", Type: 1, ClientMsgId: "c-1"},
		3: {UserId: alice.Id, ConversationId: "world", Content: "hello", Type: 1, ClientMsgId: "t-1", OriginConn: "gw/1"}, // resend
		4: {UserId: alice.Id, ConversationId: single, Content: "hi bob", Type: 1, ClientMsgId: "t-4", OriginConn: "gw/1"},
		5: {UserId: bob.Id, ConversationId: "group_123", Content: "anyone?", Type: 1},
		6: {UserId: bob.Id, ConversationId: "world", Content: "w2", Type: 1, ClientMsgId: "b-1", OriginConn: "gw-b/7"},
		7: {UserId: alice.Id, ConversationId: "world", Content: "w3", Type: 1, ClientMsgId: "t-5", OriginConn: "gw/1"},
	}
	resp, err := e.l.SendBatch(ctx, &logicapi.SendBatchReq{Items: items})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Results) != len(items) {
		t.Fatalf("%d results for %d items", len(resp.Results), len(items))
	}
	failed := map[int]base.ErrCode{1: base.ErrCode_CONTENT_TOO_LONG, 2: base.ErrCode_NOT_MEMBER, 5: base.ErrCode_CONVERSATION_NOT_FOUND}
	for i, r := range resp.Results {
		if want, ok := failed[i]; ok {
			_, serr := e.l.Send(ctx, items[i])
			if r.Resp != nil || r.ErrorCode != want || codeOf(serr) != r.ErrorCode || messageOf(serr) != r.Message {
				t.Errorf("result %d = %+v; Send said %v", i, r, serr)
			}
			continue
		}
		if r.ErrorCode != base.ErrCode_OK || r.Resp == nil || r.Resp.Message == nil {
			t.Fatalf("result %d = %+v, want a message", i, r)
		}
		m := r.Resp.Message
		if m.ConversationId != items[i].ConversationId || m.SenderId != items[i].UserId || m.Content != items[i].Content ||
			m.ClientMsgId != items[i].ClientMsgId || r.Resp.Duplicate != (i == 3) {
			t.Errorf("result %d = %+v dup=%v, for %+v", i, m, r.Resp.Duplicate, items[i])
		}
	}
	if r := resp.Results[3].Resp; r.Message.Id != first.Message.Id || r.Message.Seq != first.Message.Seq {
		t.Errorf("resend = %+v, want the first message %+v", r.Message, first.Message)
	}
	if m := resp.Results[4].Resp.Message; m.SenderName != "alice" || m.Seq != 1 {
		t.Errorf("1:1 message = %+v, want seq 1 from alice", m)
	}

	// World: the resend and three new messages, in seq order; the 1:1 message goes
	// to bob's gateway. Nothing else.
	wantWorld := map[int64]int{ // message id -> item
		first.Message.Id: 3, resp.Results[0].Resp.Message.Id: 0, resp.Results[6].Resp.Message.Id: 6, resp.Results[7].Resp.Message.Id: 7,
	}
	var lastSeq int64
	for range len(wantWorld) {
		select {
		case p := <-e.pushes:
			i, ok := wantWorld[p.Message.ID]
			if !ok || p.OriginConn != items[i].OriginConn || p.Message.Seq < lastSeq {
				t.Fatalf("world push %+v (message %+v) after seq %d", p, p.Message, lastSeq)
			}
			delete(wantWorld, p.Message.ID)
			lastSeq = p.Message.Seq
		case <-time.After(5 * time.Second):
			t.Fatalf("world pushes missing for %v", wantWorld)
		}
	}
	select {
	case p := <-gwB:
		if p.Message.ID != resp.Results[4].Resp.Message.Id || p.OriginConn != "gw/1" || !slices.Equal(p.Recipients, []int64{bob.Id}) {
			t.Fatalf("push to gw-b = %+v (message %+v), want the 1:1 message for bob", p, p.Message)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no push of the 1:1 message")
	}
	select {
	case p := <-e.pushes:
		t.Fatalf("unexpected world push %+v", p.Message)
	case p := <-gwB:
		t.Fatalf("unexpected push to gw-b %+v", p.Message)
	case <-time.After(100 * time.Millisecond):
	}

	// The stored items answered as Send answers a resend of them now.
	for _, i := range []int{0, 3, 4, 6, 7} {
		again, err := e.l.Send(ctx, items[i])
		if err != nil || !again.Duplicate || again.Message.Id != resp.Results[i].Resp.Message.Id || again.Message.Seq != resp.Results[i].Resp.Message.Seq {
			t.Errorf("Send of item %d again = %+v, %v; batch said %+v", i, again, err, resp.Results[i].Resp)
		}
	}
	if _, err := e.l.SendBatch(ctx, &logicapi.SendBatchReq{Items: make([]*logicapi.SendReq, 1001)}); codeOf(err) != base.ErrCode_BAD_REQUEST {
		t.Errorf("SendBatch(1001) err = %v, want BAD_REQUEST", err)
	}
}

// failingAppends is a repo whose AppendBatch call fails (or answers short).
type failingAppends struct {
	direct
	short bool
}

func (f failingAppends) AppendBatch(ctx context.Context, r *repoapi.AppendBatchReq, o ...callopt.Option) (*repoapi.AppendBatchResp, error) {
	if !f.short {
		return nil, errors.New("connection reset")
	}
	resp, err := f.direct.AppendBatch(ctx, r, o...)
	if err == nil && len(resp.Results) > 0 {
		resp.Results = resp.Results[:len(resp.Results)-1]
	}
	return resp, err
}

// TestSendBatchRepoFailure: a failed AppendBatch call (or a reply that does not
// answer every message) fails the whole batch as Send's failed Append does.
func TestSendBatchRepoFailure(t *testing.T) {
	for _, short := range []bool{false, true} {
		ids, _ := snowflake.NewNode(1)
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		st, err := store.Open(t.Context(), store.Config{Driver: "sqlite", DSN: repotest.SQLiteDSN(t)}, ids, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		signer, _ := authtoken.New("0123456789abcdef-test", time.Hour)
		bus := pushq.NewMemory()
		t.Cleanup(func() { _ = bus.Close() })
		h := repo.New(st, kv.NewMemory(), log)
		u, err := h.CreateUser(t.Context(), &repoapi.CreateUserReq{Username: "alice", PasswordHash: "x"})
		if err != nil {
			t.Fatal(err)
		}
		l, err := logic.New(logic.Default(), logic.Deps{
			Log: log, Metrics: prometheus.NewRegistry(), Repo: failingAppends{direct{h}, short},
			Task: &fakeTask{}, Bus: bus, Tokens: signer,
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = l.SendBatch(t.Context(), &logicapi.SendBatchReq{Items: []*logicapi.SendReq{
			{UserId: u.User.Id, ConversationId: "world", Content: "hi", Type: 1},
			{UserId: u.User.Id, ConversationId: "world", Content: "", Type: 1},
		}})
		if codeOf(err) != base.ErrCode_UNAVAILABLE {
			t.Errorf("SendBatch with a failing repo (short=%v) err = %v, want UNAVAILABLE", short, err)
		}
	}
}

// routesProbe records the route users of each AppendBatch and counts the GetRoutes
// that ask for watch (a presence push asks for other users'); dropRoutes makes
// AppendBatch answer without routes, as when repo's read fails.
type routesProbe struct {
	logic.Repo
	mu         sync.Mutex
	watch      int64
	routeUsers [][]int64
	getRoutes  int
	dropRoutes bool
}

func (p *routesProbe) AppendBatch(ctx context.Context, r *repoapi.AppendBatchReq, o ...callopt.Option) (*repoapi.AppendBatchResp, error) {
	resp, err := p.Repo.AppendBatch(ctx, r, o...)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.routeUsers = append(p.routeUsers, slices.Clone(r.RouteUsers))
	if err == nil && p.dropRoutes {
		resp.Routes = nil
	}
	return resp, err
}

func (p *routesProbe) GetRoutes(ctx context.Context, r *repoapi.GetRoutesReq, o ...callopt.Option) (*repoapi.GetRoutesResp, error) {
	p.mu.Lock()
	if slices.Contains(r.UserIds, p.watch) {
		p.getRoutes++
	}
	p.mu.Unlock()
	return p.Repo.GetRoutes(ctx, r, o...)
}

// TestSendBatchRoutesComeWithTheAppend: once a 1:1 conversation's members are
// cached, SendBatch asks AppendBatch for their routes and the push goes out without
// a GetRoutes; without routes in the answer the fan-out looks them up as before.
func TestSendBatchRoutesComeWithTheAppend(t *testing.T) {
	probe := &routesProbe{}
	e := newEnvWith(t, func(r logic.Repo) logic.Repo { probe.Repo = r; return probe })
	ctx := context.Background()
	alice, _ := e.register(t, "alice")
	bob, _ := e.register(t, "bob")
	view, err := e.l.AddFriend(ctx, &logicapi.AddFriendReq{UserId: alice.Id, FriendId: bob.Id})
	if err != nil {
		t.Fatal(err)
	}
	single := view.Conversation.Id
	probe.mu.Lock()
	probe.watch = bob.Id
	probe.mu.Unlock()
	gwB := e.gatewayPushes(t, "gw-b", 10, messagesOnly)
	if _, err := e.l.Connect(ctx, &logicapi.ConnectReq{UserId: bob.Id, GatewayId: "gw-b"}); err != nil {
		t.Fatal(err)
	}
	send := func(content string) {
		t.Helper()
		resp, err := e.l.SendBatch(ctx, &logicapi.SendBatchReq{Items: []*logicapi.SendReq{
			{UserId: alice.Id, ConversationId: single, Content: content, Type: 1, OriginConn: "gw-a/1"},
		}})
		if err != nil || resp.Results[0].Resp == nil {
			t.Fatalf("SendBatch(%q) = %+v, %v", content, resp, err)
		}
		select {
		case p := <-gwB:
			if p.Message.Content != content || !slices.Equal(p.Recipients, []int64{bob.Id}) {
				t.Fatalf("push for %q = %+v, want it to bob", content, p)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no push for %q reached gw-b", content)
		}
	}
	state := func() ([]int64, int) {
		probe.mu.Lock()
		defer probe.mu.Unlock()
		return probe.routeUsers[len(probe.routeUsers)-1], probe.getRoutes
	}

	send("first") // members not cached yet: the fan-out looks them and their routes up
	if users, gets := state(); len(users) != 0 || gets != 1 {
		t.Fatalf("first send: route users %v, %d GetRoutes; want none and 1", users, gets)
	}
	send("second") // cached now: the append answers with the routes
	users, gets := state()
	if !slices.Equal(slices.Sorted(slices.Values(users)), slices.Sorted(slices.Values([]int64{alice.Id, bob.Id}))) || gets != 1 {
		t.Fatalf("second send: route users %v, %d GetRoutes; want alice and bob, still 1", users, gets)
	}
	probe.mu.Lock()
	probe.dropRoutes = true
	probe.mu.Unlock()
	send("third") // no routes in the answer: looked up as before
	if _, gets := state(); gets != 2 {
		t.Fatalf("third send: %d GetRoutes, want 2", gets)
	}
}
