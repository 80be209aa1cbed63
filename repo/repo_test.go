package repo_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bwmarrin/snowflake"
	"github.com/cloudwego/kitex/pkg/kerrors"

	"github.com/gochat/gochat/kitex_gen/base"
	"github.com/gochat/gochat/kitex_gen/repoapi"
	"github.com/gochat/gochat/repo"
	"github.com/gochat/gochat/repo/kv"
	"github.com/gochat/gochat/repo/repotest"
	"github.com/gochat/gochat/repo/store"
)

// The handler over a real SQLite store and the in-process kv: what the wire
// sees, status codes included. The store and kv contracts are tested in
// their own packages on every backend.

func newHandler(t *testing.T) (*repo.Handler, *store.Store) {
	t.Helper()
	return newHandlerWith(t, kv.NewMemory())
}

// newHandlerWith is newHandler over the volatile state vs.
func newHandlerWith(t *testing.T, vs repo.KV) (*repo.Handler, *store.Store) {
	t.Helper()
	node, err := snowflake.NewNode(1)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.Context(), store.Config{Driver: store.DriverSQLite, DSN: repotest.SQLiteDSN(t)}, node, nil)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("close store: %v", err)
		}
	})
	return repo.New(st, vs, slog.New(slog.DiscardHandler)), st
}

func createUser(t *testing.T, h *repo.Handler, name string) int64 {
	t.Helper()
	resp, err := h.CreateUser(t.Context(), &repoapi.CreateUserReq{Username: name, PasswordHash: "h"})
	if err != nil {
		t.Fatalf("CreateUser(%s): %v", name, err)
	}
	return resp.User.Id
}

// errCase is one call that must fail with a given code.
type errCase struct {
	name string
	call func(ctx context.Context) error
	want base.ErrCode
}

func runErrCases(t *testing.T, cases []errCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.call(t.Context())
			be, ok := kerrors.FromBizStatusError(err)
			if !ok || be.BizStatusCode() != int32(c.want) {
				t.Fatalf("err = %v, want biz status %s", err, c.want)
			}
		})
	}
}

// errOf drops a response and keeps the error.
func errOf[T any](_ T, err error) error { return err }

func TestFriends(t *testing.T) {
	h, _ := newHandler(t)
	ctx := t.Context()
	alice, bob, carol := createUser(t, h, "alice"), createUser(t, h, "bob"), createUser(t, h, "carol")

	added, err := h.AddFriend(ctx, &repoapi.AddFriendReq{UserId: alice, FriendId: bob, ConversationId: "single_ab"})
	if err != nil {
		t.Fatalf("AddFriend: %v", err)
	}
	if c := added.Conversation; c.Id != "single_ab" || c.Type != "single" || c.MemberCount != 2 {
		t.Errorf("AddFriend conversation = %+v", c)
	}
	friends, err := h.ListFriends(ctx, &repoapi.ListFriendsReq{UserId: bob})
	if err != nil || len(friends.Friends) != 1 || friends.Friends[0].Id != alice || friends.Friends[0].Username != "alice" {
		t.Errorf("ListFriends(bob) = %+v, %v; want alice", friends, err)
	}

	single, err := h.EnsureSingle(ctx, &repoapi.EnsureSingleReq{ConversationId: "single_ac", UserA: carol, UserB: alice})
	if err != nil || !single.Created || single.Conversation.MemberCount != 2 {
		t.Errorf("EnsureSingle = %+v, %v; want created", single, err)
	}
	again, err := h.EnsureSingle(ctx, &repoapi.EnsureSingleReq{ConversationId: "single_ac", UserA: alice, UserB: carol})
	if err != nil || again.Created || again.Conversation.Id != "single_ac" {
		t.Errorf("EnsureSingle again = %+v, %v; want the existing one", again, err)
	}

	peers, err := h.ListPeers(ctx, &repoapi.ListPeersReq{UserId: alice})
	if want := []int64{bob, carol}; err != nil || !slices.Equal(peers.UserIds, slices.Sorted(slices.Values(want))) {
		t.Errorf("ListPeers(alice) = %+v, %v; want %v", peers, err, want)
	}
	if peers, err := h.ListPeers(ctx, &repoapi.ListPeersReq{UserId: 424242}); err != nil || peers.UserIds == nil || len(peers.UserIds) != 0 {
		t.Errorf("ListPeers(nobody) = %+v, %v; want an empty list", peers, err)
	}

	convs, err := h.ListUserConversations(ctx, &repoapi.ListUserConversationsReq{UserId: alice})
	if err != nil {
		t.Fatalf("ListUserConversations: %v", err)
	}
	gotPeers := map[string]int64{}
	for _, uc := range convs.Conversations {
		gotPeers[uc.Conversation.Id] = uc.PeerId
	}
	if want := map[string]int64{"world": 0, "single_ab": bob, "single_ac": carol}; !maps.Equal(gotPeers, want) {
		t.Errorf("ListUserConversations(alice) peers = %v, want %v", gotPeers, want)
	}

	runErrCases(t, []errCase{
		{"add friend again", func(ctx context.Context) error {
			return errOf(h.AddFriend(ctx, &repoapi.AddFriendReq{UserId: bob, FriendId: alice, ConversationId: "single_ab"}))
		}, base.ErrCode_CONFLICT},
		{"add self", func(ctx context.Context) error {
			return errOf(h.AddFriend(ctx, &repoapi.AddFriendReq{UserId: bob, FriendId: bob, ConversationId: "single_bb"}))
		}, base.ErrCode_BAD_REQUEST},
		{"add unknown user", func(ctx context.Context) error {
			return errOf(h.AddFriend(ctx, &repoapi.AddFriendReq{UserId: bob, FriendId: 424242, ConversationId: "single_bx"}))
		}, base.ErrCode_NOT_FOUND},
		{"add without conversation id", func(ctx context.Context) error {
			return errOf(h.AddFriend(ctx, &repoapi.AddFriendReq{UserId: bob, FriendId: carol}))
		}, base.ErrCode_BAD_REQUEST},
		{"ensure single with unknown user", func(ctx context.Context) error {
			return errOf(h.EnsureSingle(ctx, &repoapi.EnsureSingleReq{ConversationId: "single_bx", UserA: bob, UserB: 424242}))
		}, base.ErrCode_NOT_FOUND},
		{"ensure single with oneself", func(ctx context.Context) error {
			return errOf(h.EnsureSingle(ctx, &repoapi.EnsureSingleReq{ConversationId: "single_bb", UserA: bob, UserB: bob}))
		}, base.ErrCode_BAD_REQUEST},
		{"cancelled request", func(ctx context.Context) error {
			ctx, cancel := context.WithCancel(ctx)
			cancel()
			return errOf(h.ListFriends(ctx, &repoapi.ListFriendsReq{UserId: alice}))
		}, base.ErrCode_UNAVAILABLE},
	})
}

func TestGroups(t *testing.T) {
	h, _ := newHandler(t)
	ctx := t.Context()
	owner, x, y, z := createUser(t, h, "owner"), createUser(t, h, "x"), createUser(t, h, "y"), createUser(t, h, "z")

	created, err := h.CreateGroup(ctx, &repoapi.CreateGroupReq{Name: "team", OwnerId: owner, MemberIds: []int64{x, 424242, x}})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	g := created.Conversation
	if !strings.HasPrefix(g.Id, "group_") || g.Type != "group" || g.Name != "team" || g.OwnerId != owner || g.MemberCount != 2 {
		t.Errorf("CreateGroup = %+v", g)
	}

	m, err := h.GetMember(ctx, &repoapi.GetMemberReq{ConversationId: g.Id, UserId: owner})
	if err != nil || !m.Found || m.Member.Role != "owner" || m.Member.UserId != owner || m.Member.JoinedAtMs == 0 {
		t.Errorf("GetMember(owner) = %+v, %v; want found owner", m, err)
	}
	if m, err := h.GetMember(ctx, &repoapi.GetMemberReq{ConversationId: g.Id, UserId: y}); err != nil || m.Found || m.Member != nil {
		t.Errorf("GetMember(non-member) = %+v, %v; want not found", m, err)
	}
	if m, err := h.GetMember(ctx, &repoapi.GetMemberReq{ConversationId: "world", UserId: y}); err != nil || !m.Found || m.Member.Role != "member" {
		t.Errorf("GetMember(world) = %+v, %v; want every user found", m, err)
	}

	addResp, err := h.AddMembers(ctx, &repoapi.AddMembersReq{ConversationId: g.Id, UserIds: []int64{y, x, z}})
	if err != nil || !slices.Equal(addResp.Added, []int64{y, z}) || addResp.Conversation.MemberCount != 4 {
		t.Errorf("AddMembers = %+v, %v; want y and z added, 4 members", addResp, err)
	}
	if addResp, err := h.AddMembers(ctx, &repoapi.AddMembersReq{ConversationId: g.Id, UserIds: []int64{y}}); err != nil || addResp.Added == nil || len(addResp.Added) != 0 {
		t.Errorf("AddMembers(existing) = %+v, %v; want none added", addResp, err)
	}

	var listed []int64
	for after := int64(0); ; {
		page, err := h.ListMembers(ctx, &repoapi.ListMembersReq{ConversationId: g.Id, AfterUserId: after, Limit: 3})
		if err != nil {
			t.Fatalf("ListMembers: %v", err)
		}
		for _, m := range page.Members {
			listed = append(listed, m.UserId)
		}
		if len(page.Members) < 3 {
			break
		}
		after = page.Members[len(page.Members)-1].UserId
	}
	if want := slices.Sorted(slices.Values([]int64{owner, x, y, z})); !slices.Equal(listed, want) {
		t.Errorf("ListMembers paged = %v, want %v", listed, want)
	}

	removed, err := h.RemoveMember(ctx, &repoapi.RemoveMemberReq{ConversationId: g.Id, UserId: owner})
	if err != nil || !removed.Removed || removed.Conversation.MemberCount != 3 || removed.Conversation.OwnerId != x {
		t.Errorf("RemoveMember(owner) = %+v, %v; want removed, x the new owner (joined first)", removed, err)
	}
	if again, err := h.RemoveMember(ctx, &repoapi.RemoveMemberReq{ConversationId: g.Id, UserId: owner}); err != nil || again.Removed {
		t.Errorf("RemoveMember(owner) again = %+v, %v; want removed = false", again, err)
	}

	if _, err := h.EnsureSingle(ctx, &repoapi.EnsureSingleReq{ConversationId: "single_xy", UserA: x, UserB: y}); err != nil {
		t.Fatal(err)
	}
	tooMany := make([]int64, 1001)
	runErrCases(t, []errCase{
		{"create with unknown owner", func(ctx context.Context) error {
			return errOf(h.CreateGroup(ctx, &repoapi.CreateGroupReq{Name: "g", OwnerId: 424242}))
		}, base.ErrCode_NOT_FOUND},
		{"create without name", func(ctx context.Context) error {
			return errOf(h.CreateGroup(ctx, &repoapi.CreateGroupReq{OwnerId: owner}))
		}, base.ErrCode_BAD_REQUEST},
		{"create with too many members", func(ctx context.Context) error {
			return errOf(h.CreateGroup(ctx, &repoapi.CreateGroupReq{Name: "g", OwnerId: owner, MemberIds: tooMany}))
		}, base.ErrCode_BAD_REQUEST},
		{"list with limit 0", func(ctx context.Context) error {
			return errOf(h.ListMembers(ctx, &repoapi.ListMembersReq{ConversationId: g.Id}))
		}, base.ErrCode_BAD_REQUEST},
		{"list with limit 1001", func(ctx context.Context) error {
			return errOf(h.ListMembers(ctx, &repoapi.ListMembersReq{ConversationId: g.Id, Limit: 1001}))
		}, base.ErrCode_BAD_REQUEST},
		{"list after a negative id", func(ctx context.Context) error {
			return errOf(h.ListMembers(ctx, &repoapi.ListMembersReq{ConversationId: g.Id, AfterUserId: -1, Limit: 10}))
		}, base.ErrCode_BAD_REQUEST},
		{"add to a single conversation", func(ctx context.Context) error {
			return errOf(h.AddMembers(ctx, &repoapi.AddMembersReq{ConversationId: "single_xy", UserIds: []int64{z}}))
		}, base.ErrCode_BAD_REQUEST},
		{"add to a missing group", func(ctx context.Context) error {
			return errOf(h.AddMembers(ctx, &repoapi.AddMembersReq{ConversationId: "group_1", UserIds: []int64{z}}))
		}, base.ErrCode_NOT_FOUND},
		{"add too many", func(ctx context.Context) error {
			return errOf(h.AddMembers(ctx, &repoapi.AddMembersReq{ConversationId: g.Id, UserIds: tooMany}))
		}, base.ErrCode_BAD_REQUEST},
		{"remove from world", func(ctx context.Context) error {
			return errOf(h.RemoveMember(ctx, &repoapi.RemoveMemberReq{ConversationId: "world", UserId: z}))
		}, base.ErrCode_BAD_REQUEST},
		{"remove from a missing group", func(ctx context.Context) error {
			return errOf(h.RemoveMember(ctx, &repoapi.RemoveMemberReq{ConversationId: "group_1", UserId: z}))
		}, base.ErrCode_NOT_FOUND},
	})
}

func TestRoutes(t *testing.T) {
	h, _ := newHandler(t)
	ctx := t.Context()
	connect := func(uid int64, gw string) bool {
		t.Helper()
		resp, err := h.Connect(ctx, &repoapi.ConnectReq{UserId: uid, GatewayId: gw})
		if err != nil {
			t.Fatalf("Connect(%d, %s): %v", uid, gw, err)
		}
		return resp.First
	}
	disconnect := func(uid int64, gw string) bool {
		t.Helper()
		resp, err := h.Disconnect(ctx, &repoapi.DisconnectReq{UserId: uid, GatewayId: gw})
		if err != nil {
			t.Fatalf("Disconnect(%d, %s): %v", uid, gw, err)
		}
		return resp.Last
	}

	if !connect(1, "gw-a") || connect(1, "gw-b") || !connect(2, "gw-a") {
		t.Fatal("first flags wrong: want true, false, true")
	}
	if _, err := h.RefreshRoutes(ctx, &repoapi.RefreshRoutesReq{GatewayId: "gw-c", UserIds: []int64{3}}); err != nil {
		t.Fatalf("RefreshRoutes: %v", err)
	}
	routes, err := h.GetRoutes(ctx, &repoapi.GetRoutesReq{UserIds: []int64{1, 2, 3, 4}})
	want := map[int64][]string{1: {"gw-a", "gw-b"}, 2: {"gw-a"}, 3: {"gw-c"}}
	if err != nil || !maps.EqualFunc(routes.Routes, want, slices.Equal) {
		t.Errorf("GetRoutes = %+v, %v; want %v", routes, err, want)
	}
	if disconnect(1, "gw-a") || !disconnect(1, "gw-b") {
		t.Error("last flags wrong: want false, true")
	}

	tooMany := make([]int64, 1001)
	runErrCases(t, []errCase{
		{"connect without gateway", func(ctx context.Context) error {
			return errOf(h.Connect(ctx, &repoapi.ConnectReq{UserId: 1}))
		}, base.ErrCode_BAD_REQUEST},
		{"connect user 0", func(ctx context.Context) error {
			return errOf(h.Connect(ctx, &repoapi.ConnectReq{GatewayId: "gw"}))
		}, base.ErrCode_BAD_REQUEST},
		{"disconnect without gateway", func(ctx context.Context) error {
			return errOf(h.Disconnect(ctx, &repoapi.DisconnectReq{UserId: 1}))
		}, base.ErrCode_BAD_REQUEST},
		{"refresh without gateway", func(ctx context.Context) error {
			return errOf(h.RefreshRoutes(ctx, &repoapi.RefreshRoutesReq{UserIds: []int64{1}}))
		}, base.ErrCode_BAD_REQUEST},
		{"refresh too many", func(ctx context.Context) error {
			return errOf(h.RefreshRoutes(ctx, &repoapi.RefreshRoutesReq{GatewayId: "gw", UserIds: tooMany}))
		}, base.ErrCode_BAD_REQUEST},
		{"get too many", func(ctx context.Context) error {
			return errOf(h.GetRoutes(ctx, &repoapi.GetRoutesReq{UserIds: tooMany}))
		}, base.ErrCode_BAD_REQUEST},
		{"connect batch too many", func(ctx context.Context) error {
			return errOf(h.ConnectBatch(ctx, &repoapi.ConnectBatchReq{GatewayId: "gw", UserIds: tooMany}))
		}, base.ErrCode_BAD_REQUEST},
		{"connect batch user 0", func(ctx context.Context) error {
			return errOf(h.ConnectBatch(ctx, &repoapi.ConnectBatchReq{GatewayId: "gw", UserIds: []int64{5, 0}}))
		}, base.ErrCode_BAD_REQUEST},
		{"connect batch without gateway", func(ctx context.Context) error {
			return errOf(h.ConnectBatch(ctx, &repoapi.ConnectBatchReq{UserIds: []int64{5}}))
		}, base.ErrCode_BAD_REQUEST},
		{"disconnect batch too many", func(ctx context.Context) error {
			return errOf(h.DisconnectBatch(ctx, &repoapi.DisconnectBatchReq{GatewayId: "gw", UserIds: tooMany}))
		}, base.ErrCode_BAD_REQUEST},
		{"disconnect batch user 0", func(ctx context.Context) error {
			return errOf(h.DisconnectBatch(ctx, &repoapi.DisconnectBatchReq{GatewayId: "gw", UserIds: []int64{5, 0}}))
		}, base.ErrCode_BAD_REQUEST},
		{"disconnect batch without gateway", func(ctx context.Context) error {
			return errOf(h.DisconnectBatch(ctx, &repoapi.DisconnectBatchReq{UserIds: []int64{5}}))
		}, base.ErrCode_BAD_REQUEST},
	})
}

// TestBatches: the batch calls answer what the single calls would have, in
// order, and refuse oversized batches.
func TestBatches(t *testing.T) {
	h, _ := newHandler(t)
	ctx := t.Context()
	if _, err := h.Connect(ctx, &repoapi.ConnectReq{UserId: 2, GatewayId: "gw-b"}); err != nil {
		t.Fatal(err)
	}
	cb, err := h.ConnectBatch(ctx, &repoapi.ConnectBatchReq{GatewayId: "gw-a", UserIds: []int64{1, 2, 1, 3}})
	if want := []bool{true, false, false, true}; err != nil || !slices.Equal(cb.First, want) {
		t.Fatalf("ConnectBatch = %+v, %v; want first %v", cb, err, want)
	}
	routes, err := h.GetRoutes(ctx, &repoapi.GetRoutesReq{UserIds: []int64{1, 2, 3}})
	want := map[int64][]string{1: {"gw-a"}, 2: {"gw-a", "gw-b"}, 3: {"gw-a"}}
	if err != nil || !maps.EqualFunc(routes.Routes, want, slices.Equal) {
		t.Errorf("GetRoutes = %+v, %v; want %v", routes, err, want)
	}
	if cb, err := h.ConnectBatch(ctx, &repoapi.ConnectBatchReq{GatewayId: "gw-a"}); err != nil || len(cb.First) != 0 {
		t.Errorf("empty ConnectBatch = %+v, %v; want no flags", cb, err)
	}

	// Disconnects in order: user 1's second socket is its last, user 2 stays on gw-b.
	db, err := h.DisconnectBatch(ctx, &repoapi.DisconnectBatchReq{GatewayId: "gw-a", UserIds: []int64{1, 2, 3, 1}})
	if want := []bool{false, false, true, true}; err != nil || !slices.Equal(db.Last, want) {
		t.Fatalf("DisconnectBatch = %+v, %v; want last %v", db, err, want)
	}
	routes, err = h.GetRoutes(ctx, &repoapi.GetRoutesReq{UserIds: []int64{1, 2, 3}})
	want = map[int64][]string{2: {"gw-b"}}
	if err != nil || !maps.EqualFunc(routes.Routes, want, slices.Equal) {
		t.Errorf("GetRoutes after DisconnectBatch = %+v, %v; want %v", routes, err, want)
	}
	if db, err := h.DisconnectBatch(ctx, &repoapi.DisconnectBatchReq{GatewayId: "gw-a"}); err != nil || len(db.Last) != 0 {
		t.Errorf("empty DisconnectBatch = %+v, %v; want no flags", db, err)
	}

	if _, err := h.RevokeToken(ctx, &repoapi.RevokeTokenReq{TokenId: "t2", ExpiresAtMs: time.Now().Add(time.Hour).UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	rv, err := h.IsRevokedBatch(ctx, &repoapi.IsRevokedBatchReq{TokenIds: []string{"t1", "t2", "t3"}})
	if want := []bool{false, true, false}; err != nil || !slices.Equal(rv.Revoked, want) {
		t.Fatalf("IsRevokedBatch = %+v, %v; want %v", rv, err, want)
	}
	if rv, err := h.IsRevokedBatch(ctx, &repoapi.IsRevokedBatchReq{}); err != nil || len(rv.Revoked) != 0 {
		t.Errorf("empty IsRevokedBatch = %+v, %v; want no flags", rv, err)
	}
	runErrCases(t, []errCase{
		{"is revoked batch too many", func(ctx context.Context) error {
			return errOf(h.IsRevokedBatch(ctx, &repoapi.IsRevokedBatchReq{TokenIds: make([]string, 1001)}))
		}, base.ErrCode_BAD_REQUEST},
		{"list peers batch too many", func(ctx context.Context) error {
			return errOf(h.ListPeersBatch(ctx, &repoapi.ListPeersBatchReq{UserIds: make([]int64, 1001)}))
		}, base.ErrCode_BAD_REQUEST},
	})
	// Users without peers are absent (the store's own tests cover who is a peer).
	if lp, err := h.ListPeersBatch(ctx, &repoapi.ListPeersBatchReq{UserIds: []int64{1, 2}}); err != nil || len(lp.Peers) != 0 {
		t.Errorf("ListPeersBatch of users without peers = %+v, %v; want none", lp, err)
	}
}

// TestInternalErrors: a failure the caller cannot act on is INTERNAL, without
// details.
func TestInternalErrors(t *testing.T) {
	h, st := newHandler(t)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	runErrCases(t, []errCase{
		{"list friends on a closed store", func(ctx context.Context) error {
			return errOf(h.ListFriends(ctx, &repoapi.ListFriendsReq{UserId: 1}))
		}, base.ErrCode_INTERNAL},
		{"get member on a closed store", func(ctx context.Context) error {
			return errOf(h.GetMember(ctx, &repoapi.GetMemberReq{ConversationId: "world", UserId: 1}))
		}, base.ErrCode_INTERNAL},
	})
	_, err := h.ListPeers(t.Context(), &repoapi.ListPeersReq{UserId: 1})
	if be, ok := kerrors.FromBizStatusError(err); !ok || strings.Contains(be.BizMessage(), "store") {
		t.Errorf("internal error = %v; want a biz status without internals", err)
	}
	// In a batch the failure is the message's own outcome.
	ab, err := h.AppendBatch(t.Context(), &repoapi.AppendBatchReq{Messages: []*repoapi.Message{
		{ConversationId: "world", SenderId: 1, SenderName: "x", Type: 1, Content: "hi"},
	}})
	if err != nil || len(ab.Results) != 1 || ab.Results[0].ErrorCode != base.ErrCode_INTERNAL ||
		ab.Results[0].Message != "internal error" || ab.Results[0].Resp != nil {
		t.Errorf("AppendBatch on a closed store = %+v, %v; want an INTERNAL outcome", ab, err)
	}
}

// TestAppendBatch: every message gets what its single Append would have answered,
// in order; the batch's messages join one group commit and each conversation's
// seqs stay gap-free across it.
func TestAppendBatch(t *testing.T) {
	h, _ := newHandler(t)
	ctx := t.Context()
	alice, bob := createUser(t, h, "alice"), createUser(t, h, "bob")
	if _, err := h.AddFriend(ctx, &repoapi.AddFriendReq{UserId: alice, FriendId: bob, ConversationId: "single_ab"}); err != nil {
		t.Fatal(err)
	}
	pre, err := h.Append(ctx, &repoapi.AppendReq{Message: &repoapi.Message{
		ConversationId: "world", SenderId: alice, SenderName: "alice", Type: 1, Content: "before", ClientMsgId: "pre",
	}})
	if err != nil {
		t.Fatal(err)
	}
	msg := func(conv string, sender int64, content, cid string) *repoapi.Message {
		return &repoapi.Message{ConversationId: conv, SenderId: sender, SenderName: "x", Type: 1, Content: content, ClientMsgId: cid}
	}
	msgs := []*repoapi.Message{
		0: msg("world", alice, "w1", "a1"),
		1: msg("single_ab", alice, "s1", "a2"),
		2: msg("world", bob, "w2", ""),
		3: nil,
		4: msg("single_zz", alice, "nowhere", "a3"),
		5: msg("world", alice, "w1 again", "a1"), // repeats item 0's client message id
		6: msg("world", alice, "resent", "pre"),  // already stored
		7: msg("single_ab", bob, "s2", "b1"),
		8: msg("world", bob, "w3", "b2"),
		9: msg("", bob, "no conversation", "b3"),
	}
	resp, err := h.AppendBatch(ctx, &repoapi.AppendBatchReq{Messages: msgs})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Results) != len(msgs) {
		t.Fatalf("%d results for %d messages", len(resp.Results), len(msgs))
	}
	failed := map[int]base.ErrCode{3: base.ErrCode_BAD_REQUEST, 4: base.ErrCode_NOT_FOUND, 9: base.ErrCode_BAD_REQUEST}
	seqs := map[string][]int64{}
	for i, r := range resp.Results {
		if want, ok := failed[i]; ok {
			if r.Resp != nil || r.ErrorCode != want || r.Message == "" {
				t.Errorf("result %d = %+v, want %s", i, r, want)
			}
			if msgs[i] != nil {
				// The code and message the single Append answers.
				_, serr := h.Append(ctx, &repoapi.AppendReq{Message: msgs[i]})
				if be, ok := kerrors.FromBizStatusError(serr); !ok || be.BizStatusCode() != int32(r.ErrorCode) || be.BizMessage() != r.Message {
					t.Errorf("result %d = %+v; single Append said %v", i, r, serr)
				}
			}
			continue
		}
		if r.ErrorCode != base.ErrCode_OK || r.Resp == nil || r.Resp.Message == nil {
			t.Fatalf("result %d = %+v, want a stored message", i, r)
		}
		m := r.Resp.Message
		if m.ConversationId != msgs[i].ConversationId || m.SenderId != msgs[i].SenderId || m.ClientMsgId != msgs[i].ClientMsgId {
			t.Errorf("result %d answers %+v, not %+v", i, m, msgs[i])
		}
		if !r.Resp.Duplicate {
			seqs[m.ConversationId] = append(seqs[m.ConversationId], m.Seq)
		}
	}
	// Items 0 and 5 share a client message id: one stored it, the other is its
	// duplicate (which one depends on the order they joined the commit).
	r0, r5 := resp.Results[0].Resp, resp.Results[5].Resp
	if r0.Duplicate == r5.Duplicate || r0.Message.Id != r5.Message.Id || r0.Message.Seq != r5.Message.Seq {
		t.Errorf("repeated client message id: %+v / %+v, want one stored message and its duplicate", r0, r5)
	}
	if r := resp.Results[6].Resp; !r.Duplicate || r.Message.Id != pre.Message.Id || r.Message.Content != "before" {
		t.Errorf("resend of a stored message = %+v, want the stored one as a duplicate", r)
	}
	want := map[string][]int64{"world": {2, 3, 4}, "single_ab": {1, 2}}
	for conv, got := range seqs {
		slices.Sort(got)
		if !slices.Equal(got, want[conv]) {
			t.Errorf("seqs of %s = %v, want %v", conv, got, want[conv])
		}
	}
	if len(seqs) != len(want) {
		t.Errorf("stored in %v, want %v", seqs, want)
	}
	stored, err := h.ListMessages(ctx, &repoapi.ListMessagesReq{ConversationId: "world", FromSeq: 1, ToSeq: 10})
	if err != nil || len(stored.Messages) != 4 {
		t.Errorf("world after the batch = %+v, %v; want 4 messages", stored, err)
	}

	if empty, err := h.AppendBatch(ctx, &repoapi.AppendBatchReq{}); err != nil || len(empty.Results) != 0 || empty.Routes != nil {
		t.Errorf("empty AppendBatch = %+v, %v", empty, err)
	}
	if resp.Routes != nil {
		t.Errorf("AppendBatch without route users answered routes %v", resp.Routes)
	}

	// With route users, the answer carries their routes as GetRoutes has them.
	if _, err := h.Connect(ctx, &repoapi.ConnectReq{UserId: bob, GatewayId: "gw-b"}); err != nil {
		t.Fatal(err)
	}
	routed, err := h.AppendBatch(ctx, &repoapi.AppendBatchReq{
		Messages:   []*repoapi.Message{msg("single_ab", alice, "routed", "a9")},
		RouteUsers: []int64{alice, bob},
	})
	if err != nil || len(routed.Results) != 1 || routed.Results[0].Resp == nil {
		t.Fatalf("AppendBatch with route users = %+v, %v", routed, err)
	}
	if len(routed.Routes) != 1 || !slices.Equal(routed.Routes[bob], []string{"gw-b"}) {
		t.Errorf("routes in the answer = %v, want only bob on gw-b (alice has no socket)", routed.Routes)
	}
	runErrCases(t, []errCase{
		{"append batch too many", func(ctx context.Context) error {
			return errOf(h.AppendBatch(ctx, &repoapi.AppendBatchReq{Messages: make([]*repoapi.Message, 1001)}))
		}, base.ErrCode_BAD_REQUEST},
	})
}

// stuckRoutes is volatile state whose route reads hang until their context ends, as
// against a Redis that stopped answering.
type stuckRoutes struct {
	*kv.Memory
	reads atomic.Int32
}

func (s *stuckRoutes) Routes(ctx context.Context, _ []int64) (map[int64][]string, error) {
	s.reads.Add(1)
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestAppendBatchRoutesDoNotHoldTheAck: an append whose route read hangs is answered
// within the read's bound, stored and without routes, and the next appends skip the
// read for a while instead of waiting again.
func TestAppendBatchRoutesDoNotHoldTheAck(t *testing.T) {
	vs := &stuckRoutes{Memory: kv.NewMemory()}
	h, _ := newHandlerWith(t, vs)
	alice := createUser(t, h, "alice")
	// Without the read's own bound an append would wait for this deadline.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for i := range 3 {
		start := time.Now()
		resp, err := h.AppendBatch(ctx, &repoapi.AppendBatchReq{
			Messages:   []*repoapi.Message{{ConversationId: "world", SenderId: alice, SenderName: "alice", Type: 1, Content: "hi", ClientMsgId: fmt.Sprint("c", i)}},
			RouteUsers: []int64{alice},
		})
		if err != nil || len(resp.Results) != 1 || resp.Results[0].Resp == nil || resp.Routes != nil {
			t.Fatalf("append %d = %+v, %v; want it stored, without routes", i, resp, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("append %d answered after %v", i, d)
		}
	}
	if n := vs.reads.Load(); n != 1 {
		t.Fatalf("%d route reads for 3 appends in a row, want 1 (then paused)", n)
	}
}
