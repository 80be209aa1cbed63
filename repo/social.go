package repo

import (
	"context"

	"github.com/cloudwego/kitex/pkg/kerrors"

	"github.com/gochat/gochat/kitex_gen/base"
	"github.com/gochat/gochat/kitex_gen/repoapi"
	"github.com/gochat/gochat/repo/store"
)

// maxListIDs bounds every id list in a request, and ListMembers' limit.
const maxListIDs = 1000

func badRequest(msg string) error {
	return kerrors.NewBizStatusError(int32(base.ErrCode_BAD_REQUEST), msg)
}

func memberToWire(m store.Member) *repoapi.Member {
	var joined int64
	if !m.JoinedAt.IsZero() {
		joined = m.JoinedAt.UnixMilli()
	}
	return &repoapi.Member{UserId: m.UserID, Role: m.Role, ReadSeq: m.ReadSeq, JoinedAtMs: joined}
}

// AddFriend makes two users friends both ways and ensures their single
// conversation; CONFLICT when they already are, NOT_FOUND for an unknown user,
// BAD_REQUEST for oneself.
func (h *Handler) AddFriend(ctx context.Context, req *repoapi.AddFriendReq) (*repoapi.AddFriendResp, error) {
	c, err := h.store.AddFriend(ctx, req.UserId, req.FriendId, req.ConversationId)
	if err != nil {
		return nil, h.toWire("add friend", err)
	}
	return &repoapi.AddFriendResp{Conversation: conversationToWire(c)}, nil
}

// ListFriends returns a user's friends ordered by username.
func (h *Handler) ListFriends(ctx context.Context, req *repoapi.ListFriendsReq) (*repoapi.ListFriendsResp, error) {
	us, err := h.store.Friends(ctx, req.UserId)
	if err != nil {
		return nil, h.toWire("list friends", err)
	}
	out := make([]*repoapi.User, len(us))
	for i, u := range us {
		out[i] = userToWire(u)
	}
	return &repoapi.ListFriendsResp{Friends: out}, nil
}

// EnsureSingle ensures the single conversation of two users exists with both as members.
func (h *Handler) EnsureSingle(ctx context.Context, req *repoapi.EnsureSingleReq) (*repoapi.EnsureSingleResp, error) {
	c, created, err := h.store.EnsureSingle(ctx, req.ConversationId, req.UserA, req.UserB)
	if err != nil {
		return nil, h.toWire("ensure single", err)
	}
	return &repoapi.EnsureSingleResp{Conversation: conversationToWire(c), Created: created}, nil
}

// CreateGroup creates a group with the caller as owner; unknown member ids are skipped.
func (h *Handler) CreateGroup(ctx context.Context, req *repoapi.CreateGroupReq) (*repoapi.CreateGroupResp, error) {
	if len(req.MemberIds) > maxListIDs {
		return nil, badRequest("too many member ids")
	}
	c, err := h.store.CreateGroup(ctx, req.Name, req.OwnerId, req.MemberIds)
	if err != nil {
		return nil, h.toWire("create group", err)
	}
	return &repoapi.CreateGroupResp{Conversation: conversationToWire(c)}, nil
}

// GetMember returns a user's membership of a conversation; member is set only
// when found. Every existing user is a member of world.
func (h *Handler) GetMember(ctx context.Context, req *repoapi.GetMemberReq) (*repoapi.GetMemberResp, error) {
	m, found, err := h.store.Member(ctx, req.ConversationId, req.UserId)
	if err != nil {
		return nil, h.toWire("get member", err)
	}
	resp := &repoapi.GetMemberResp{Found: found}
	if found {
		resp.Member = memberToWire(m)
	}
	return resp, nil
}

// ListMembers pages through a conversation's members by user id.
func (h *Handler) ListMembers(ctx context.Context, req *repoapi.ListMembersReq) (*repoapi.ListMembersResp, error) {
	if req.Limit < 1 || req.Limit > maxListIDs {
		return nil, badRequest("limit must be 1..1000")
	}
	if req.AfterUserId < 0 {
		return nil, badRequest("after_user_id must not be negative")
	}
	ms, err := h.store.Members(ctx, req.ConversationId, req.AfterUserId, int(req.Limit))
	if err != nil {
		return nil, h.toWire("list members", err)
	}
	out := make([]*repoapi.Member, len(ms))
	for i, m := range ms {
		out[i] = memberToWire(m)
	}
	return &repoapi.ListMembersResp{Members: out}, nil
}

// AddMembers adds the existing users among user_ids to a group.
func (h *Handler) AddMembers(ctx context.Context, req *repoapi.AddMembersReq) (*repoapi.AddMembersResp, error) {
	if len(req.UserIds) > maxListIDs {
		return nil, badRequest("too many user ids")
	}
	added, c, err := h.store.AddMembers(ctx, req.ConversationId, req.UserIds)
	if err != nil {
		return nil, h.toWire("add members", err)
	}
	if added == nil {
		added = []int64{}
	}
	return &repoapi.AddMembersResp{Added: added, Conversation: conversationToWire(c)}, nil
}

// RemoveMember removes a member from a group, passing ownership on when the owner leaves.
func (h *Handler) RemoveMember(ctx context.Context, req *repoapi.RemoveMemberReq) (*repoapi.RemoveMemberResp, error) {
	removed, c, err := h.store.RemoveMember(ctx, req.ConversationId, req.UserId)
	if err != nil {
		return nil, h.toWire("remove member", err)
	}
	return &repoapi.RemoveMemberResp{Removed: removed, Conversation: conversationToWire(c)}, nil
}

// ListPeersBatch is ListPeers for many users in one query.
func (h *Handler) ListPeersBatch(ctx context.Context, req *repoapi.ListPeersBatchReq) (*repoapi.ListPeersBatchResp, error) {
	if len(req.UserIds) > maxListIDs {
		return nil, badRequest("too many user ids")
	}
	peers, err := h.store.PeersMany(ctx, req.UserIds)
	if err != nil {
		return nil, h.toWire("list peers batch", err)
	}
	return &repoapi.ListPeersBatchResp{Peers: peers}, nil
}

// ListPeers returns who sees a user's presence: friends and 1:1 peers.
func (h *Handler) ListPeers(ctx context.Context, req *repoapi.ListPeersReq) (*repoapi.ListPeersResp, error) {
	ids, err := h.store.Peers(ctx, req.UserId)
	if err != nil {
		return nil, h.toWire("list peers", err)
	}
	if ids == nil {
		ids = []int64{}
	}
	return &repoapi.ListPeersResp{UserIds: ids}, nil
}
