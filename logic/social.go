package logic

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gochat/gochat/kitex_gen/base"
	"github.com/gochat/gochat/kitex_gen/logicapi"
	"github.com/gochat/gochat/kitex_gen/repoapi"
)

// SingleID is the 1:1 conversation id of two users: the same for both sides,
// URL-safe, and independent of who started it.
func SingleID(a, b int64) string {
	lo, hi := min(a, b), max(a, b)
	var buf [16]byte
	binary.BigEndian.PutUint64(buf[:8], uint64(lo))
	binary.BigEndian.PutUint64(buf[8:], uint64(hi))
	sum := sha256.Sum256(buf[:])
	return "single_" + hex.EncodeToString(sum[:8])
}

// groupConvID is the conversation id of a group.
func groupConvID(groupID int64) string { return groupPrefix + strconv.FormatInt(groupID, 10) }

// maxListIDs bounds id lists in requests (group members to add, etc.).
const maxListIDs = 500

// GetUserByName finds an account by its exact username.
func (l *Logic) GetUserByName(ctx context.Context, req *logicapi.GetUserByNameReq) (*logicapi.GetUserResp, error) {
	if req.Username == "" || len(req.Username) > 200 {
		return nil, bizErr(base.ErrCode_USER_NOT_FOUND, "user not found")
	}
	resp, err := l.repo.GetUserByName(ctx, &repoapi.GetUserByNameReq{Username: req.Username})
	if isCode(err, base.ErrCode_NOT_FOUND) {
		return nil, bizErr(base.ErrCode_USER_NOT_FOUND, "user not found")
	}
	if err != nil {
		return nil, l.passthrough("get user by name", err)
	}
	return &logicapi.GetUserResp{User: resp.User}, nil
}

// users loads users by id into a map.
func (l *Logic) users(ctx context.Context, ids []int64) (map[int64]*repoapi.User, error) {
	out := make(map[int64]*repoapi.User, len(ids))
	for chunk := range slices.Chunk(ids, 1000) {
		resp, err := l.repo.GetUsers(ctx, &repoapi.GetUsersReq{Ids: chunk})
		if err != nil {
			return nil, l.passthrough("get users", err)
		}
		for _, u := range resp.Users {
			out[u.Id] = u
		}
	}
	return out, nil
}

// online reports which of ids have at least one socket somewhere.
func (l *Logic) online(ctx context.Context, ids []int64) (map[int64][]string, error) {
	out := map[int64][]string{}
	for chunk := range slices.Chunk(ids, 1000) {
		resp, err := l.repo.GetRoutes(ctx, &repoapi.GetRoutesReq{UserIds: chunk})
		if err != nil {
			return nil, l.passthrough("get routes", err)
		}
		for uid, gws := range resp.Routes {
			live := gws[:0:0]
			for _, gw := range gws {
				if l.gateways == nil || l.gateways.Alive(gw) {
					live = append(live, gw)
				}
			}
			if len(live) > 0 {
				out[uid] = live
			}
		}
	}
	return out, nil
}

// OnlineStatus maps the caller's friends and 1:1 peers to whether they are online.
func (l *Logic) OnlineStatus(ctx context.Context, req *logicapi.OnlineStatusReq) (*logicapi.OnlineStatusResp, error) {
	peers, err := l.repo.ListPeers(ctx, &repoapi.ListPeersReq{UserId: req.UserId})
	if err != nil {
		return nil, l.passthrough("list peers", err)
	}
	routes, err := l.online(ctx, peers.UserIds)
	if err != nil {
		return nil, err
	}
	out := make(map[int64]bool, len(peers.UserIds))
	for _, id := range peers.UserIds {
		out[id] = len(routes[id]) > 0
	}
	return &logicapi.OnlineStatusResp{Online: out}, nil
}

// ListFriends returns the caller's friends with their online flag.
func (l *Logic) ListFriends(ctx context.Context, req *logicapi.ListFriendsReq) (*logicapi.ListFriendsResp, error) {
	resp, err := l.repo.ListFriends(ctx, &repoapi.ListFriendsReq{UserId: req.UserId})
	if err != nil {
		return nil, l.passthrough("list friends", err)
	}
	ids := make([]int64, len(resp.Friends))
	for i, f := range resp.Friends {
		ids[i] = f.Id
	}
	routes, err := l.online(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]*logicapi.Friend, len(resp.Friends))
	for i, f := range resp.Friends {
		out[i] = &logicapi.Friend{User: f, Online: len(routes[f.Id]) > 0}
	}
	return &logicapi.ListFriendsResp{Friends: out}, nil
}

// AddFriend makes two users friends at once, both ways, and opens their 1:1 conversation.
func (l *Logic) AddFriend(ctx context.Context, req *logicapi.AddFriendReq) (*logicapi.ConversationView, error) {
	switch {
	case req.IsGuest:
		return nil, bizErr(base.ErrCode_GUEST_NOT_ALLOWED, "guests cannot add friends")
	case req.FriendId == req.UserId:
		return nil, bizErr(base.ErrCode_BAD_REQUEST, "you cannot add yourself as a friend")
	case req.FriendId <= 0:
		return nil, bizErr(base.ErrCode_USER_NOT_FOUND, "user not found")
	}
	resp, err := l.repo.AddFriend(ctx, &repoapi.AddFriendReq{UserId: req.UserId, FriendId: req.FriendId, ConversationId: SingleID(req.UserId, req.FriendId)})
	switch {
	case isCode(err, base.ErrCode_NOT_FOUND):
		return nil, bizErr(base.ErrCode_USER_NOT_FOUND, "user not found")
	case isCode(err, base.ErrCode_CONFLICT):
		return nil, bizErr(base.ErrCode_ALREADY_FRIENDS, "you are already friends")
	case err != nil:
		return nil, l.passthrough("add friend", err)
	}
	return l.singleView(ctx, resp.Conversation, req.UserId, req.FriendId)
}

// singleView is a 1:1 conversation as the caller sees it.
func (l *Logic) singleView(ctx context.Context, c *repoapi.Conversation, me, peer int64) (*logicapi.ConversationView, error) {
	us, err := l.users(ctx, []int64{peer})
	if err != nil {
		return nil, err
	}
	m, err := l.repo.GetMember(ctx, &repoapi.GetMemberReq{ConversationId: c.Id, UserId: me})
	if err != nil {
		return nil, l.passthrough("get member", err)
	}
	var read int64
	if m.Found {
		read = m.Member.ReadSeq
	}
	return &logicapi.ConversationView{Conversation: c, Peer: us[peer], UnreadCount: max(0, c.LastSeq-read)}, nil
}

// OpenConversation opens (or returns) the 1:1 conversation with anyone. Guests only
// answer conversations others start.
func (l *Logic) OpenConversation(ctx context.Context, req *logicapi.OpenConversationReq) (*logicapi.OpenConversationResp, error) {
	switch {
	case req.IsGuest:
		return nil, bizErr(base.ErrCode_GUEST_NOT_ALLOWED, "guests cannot start conversations")
	case req.TargetUserId == req.UserId:
		return nil, bizErr(base.ErrCode_BAD_REQUEST, "you cannot open a conversation with yourself")
	case req.TargetUserId <= 0:
		return nil, bizErr(base.ErrCode_USER_NOT_FOUND, "user not found")
	}
	resp, err := l.repo.EnsureSingle(ctx, &repoapi.EnsureSingleReq{ConversationId: SingleID(req.UserId, req.TargetUserId), UserA: req.UserId, UserB: req.TargetUserId})
	if isCode(err, base.ErrCode_NOT_FOUND) {
		return nil, bizErr(base.ErrCode_USER_NOT_FOUND, "user not found")
	}
	if err != nil {
		return nil, l.passthrough("ensure single", err)
	}
	v, err := l.singleView(ctx, resp.Conversation, req.UserId, req.TargetUserId)
	if err != nil {
		return nil, err
	}
	return &logicapi.OpenConversationResp{Conversation: v, Created: resp.Created}, nil
}

func validGroupName(s string) bool {
	n := utf8.RuneCountInString(strings.TrimSpace(s))
	return utf8.ValidString(s) && n >= 1 && n <= 50 && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// CreateGroup creates a group owned by the caller; unknown member ids are skipped.
func (l *Logic) CreateGroup(ctx context.Context, req *logicapi.CreateGroupReq) (*logicapi.GroupInfo, error) {
	switch {
	case req.IsGuest:
		return nil, bizErr(base.ErrCode_GUEST_NOT_ALLOWED, "guests cannot create groups")
	case !validGroupName(req.Name):
		return nil, bizErr(base.ErrCode_BAD_REQUEST, "group name must be 1-50 characters")
	case len(req.MemberIds) > maxListIDs:
		return nil, bizErr(base.ErrCode_BAD_REQUEST, "at most 500 members at once")
	}
	resp, err := l.repo.CreateGroup(ctx, &repoapi.CreateGroupReq{Name: strings.TrimSpace(req.Name), OwnerId: req.UserId, MemberIds: req.MemberIds})
	if err != nil {
		return nil, l.passthrough("create group", err)
	}
	return l.groupInfo(ctx, resp.Conversation)
}

// groupInfo loads a group's members with their accounts.
func (l *Logic) groupInfo(ctx context.Context, c *repoapi.Conversation) (*logicapi.GroupInfo, error) {
	var members []*repoapi.Member
	var after int64
	for {
		resp, err := l.repo.ListMembers(ctx, &repoapi.ListMembersReq{ConversationId: c.Id, AfterUserId: after, Limit: 1000})
		if err != nil {
			return nil, l.passthrough("list members", err)
		}
		members = append(members, resp.Members...)
		if len(resp.Members) < 1000 {
			break
		}
		after = resp.Members[len(resp.Members)-1].UserId
	}
	ids := make([]int64, len(members))
	for i, m := range members {
		ids[i] = m.UserId
	}
	us, err := l.users(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := &logicapi.GroupInfo{Conversation: c, Members: make([]*logicapi.GroupMember, 0, len(members))}
	for _, m := range members {
		if u, ok := us[m.UserId]; ok {
			out.Members = append(out.Members, &logicapi.GroupMember{User: u, Role: m.Role})
		}
	}
	return out, nil
}

// group loads a group and the caller's membership. Non-members get 403, unknown
// groups 404.
func (l *Logic) group(ctx context.Context, userID, groupID int64) (*repoapi.Conversation, *repoapi.Member, error) {
	if groupID <= 0 {
		return nil, nil, bizErr(base.ErrCode_NOT_FOUND, "group not found")
	}
	id := groupConvID(groupID)
	c, err := l.repo.GetConversation(ctx, &repoapi.GetConversationReq{ConversationId: id})
	if isCode(err, base.ErrCode_NOT_FOUND) {
		return nil, nil, bizErr(base.ErrCode_NOT_FOUND, "group not found")
	}
	if err != nil {
		return nil, nil, l.passthrough("get group", err)
	}
	m, err := l.repo.GetMember(ctx, &repoapi.GetMemberReq{ConversationId: id, UserId: userID})
	if err != nil {
		return nil, nil, l.passthrough("get member", err)
	}
	if !m.Found {
		return c.Conversation, nil, bizErr(base.ErrCode_NOT_MEMBER, "you are not a member of this group")
	}
	return c.Conversation, m.Member, nil
}

// GetGroup returns a group with its members; members only.
func (l *Logic) GetGroup(ctx context.Context, req *logicapi.GetGroupReq) (*logicapi.GroupInfo, error) {
	c, _, err := l.group(ctx, req.UserId, req.GroupId)
	if err != nil {
		return nil, err
	}
	return l.groupInfo(ctx, c)
}

func isManager(m *repoapi.Member) bool { return m.Role == "owner" || m.Role == "admin" }

// AddGroupMembers adds users to a group; owner and admins only. Unknown ids and
// existing members are skipped.
func (l *Logic) AddGroupMembers(ctx context.Context, req *logicapi.AddGroupMembersReq) (*logicapi.GroupInfo, error) {
	if len(req.MemberIds) > maxListIDs {
		return nil, bizErr(base.ErrCode_BAD_REQUEST, "at most 500 members at once")
	}
	c, me, err := l.group(ctx, req.UserId, req.GroupId)
	if err != nil {
		return nil, err
	}
	if !isManager(me) {
		return nil, bizErr(base.ErrCode_FORBIDDEN, "only the owner or an admin can add members")
	}
	resp, err := l.repo.AddMembers(ctx, &repoapi.AddMembersReq{ConversationId: c.Id, UserIds: req.MemberIds})
	l.fanout.groups.forget(c.Id) // whatever the outcome: the change may have landed
	if err != nil {
		return nil, l.passthrough("add members", err)
	}
	return l.groupInfo(ctx, resp.Conversation)
}

// RemoveGroupMember removes a member (owner or admin; an admin cannot remove the
// owner or another admin) or lets the caller leave.
func (l *Logic) RemoveGroupMember(ctx context.Context, req *logicapi.RemoveGroupMemberReq) (*logicapi.RemoveGroupMemberResp, error) {
	c, me, err := l.group(ctx, req.UserId, req.GroupId)
	if err != nil {
		return nil, err
	}
	if req.TargetUserId != req.UserId {
		if !isManager(me) {
			return nil, bizErr(base.ErrCode_FORBIDDEN, "only the owner or an admin can remove members")
		}
		target, err := l.repo.GetMember(ctx, &repoapi.GetMemberReq{ConversationId: c.Id, UserId: req.TargetUserId})
		if err != nil {
			return nil, l.passthrough("get member", err)
		}
		if !target.Found {
			return nil, bizErr(base.ErrCode_NOT_FOUND, "that user is not a member of this group")
		}
		if me.Role == "admin" && isManager(target.Member) {
			return nil, bizErr(base.ErrCode_FORBIDDEN, "an admin cannot remove the owner or another admin")
		}
	}
	_, err = l.repo.RemoveMember(ctx, &repoapi.RemoveMemberReq{ConversationId: c.Id, UserId: req.TargetUserId})
	l.fanout.groups.forget(c.Id) // whatever the outcome: the change may have landed
	if err != nil {
		return nil, l.passthrough("remove member", err)
	}
	return &logicapi.RemoveGroupMemberResp{}, nil
}

// Connect records one more socket of a user on a gateway; the user's first socket
// anywhere tells their friends and 1:1 peers that they are online.
func (l *Logic) Connect(ctx context.Context, req *logicapi.ConnectReq) (*logicapi.ConnectResp, error) {
	resp, err := l.repo.Connect(ctx, &repoapi.ConnectReq{UserId: req.UserId, GatewayId: req.GatewayId})
	if err != nil {
		return nil, l.passthrough("connect", err)
	}
	if resp.First {
		l.fanout.enqueue(presenceJob(req.UserId, true))
	}
	return &logicapi.ConnectResp{}, nil
}

// ConnectBatch is Connect for many sockets of one gateway (a user may repeat), in
// one repo call: every socket that is its user's first anywhere announces the user,
// just as Connect does.
func (l *Logic) ConnectBatch(ctx context.Context, req *logicapi.ConnectBatchReq) (*logicapi.ConnectBatchResp, error) {
	if len(req.UserIds) > maxBatch {
		return nil, bizErr(base.ErrCode_BAD_REQUEST, "at most 1000 sockets at once")
	}
	if len(req.UserIds) == 0 {
		return &logicapi.ConnectBatchResp{}, nil
	}
	resp, err := l.repo.ConnectBatch(ctx, &repoapi.ConnectBatchReq{UserIds: req.UserIds, GatewayId: req.GatewayId})
	if err != nil {
		return nil, l.passthrough("connect batch", err)
	}
	if err := l.announce("connect batch", req.UserIds, resp.First, true); err != nil {
		return nil, err
	}
	return &logicapi.ConnectBatchResp{}, nil
}

// announce queues a presence change for each user whose flag repo set (the first
// socket anywhere opened, or the last closed), once repo answered every entry.
func (l *Logic) announce(op string, users []int64, flags []bool, online bool) error {
	if len(flags) != len(users) {
		l.log.Error("repo answered a "+op+" of the wrong size", "want", len(users), "got", len(flags))
		return bizErr(base.ErrCode_UNAVAILABLE, "service temporarily unavailable")
	}
	for i, changed := range flags {
		if changed {
			l.fanout.enqueue(presenceJob(users[i], online))
		}
	}
	return nil
}

// Disconnect records one socket fewer; the user's last socket closing tells their
// friends and 1:1 peers that they went offline.
func (l *Logic) Disconnect(ctx context.Context, req *logicapi.DisconnectReq) (*logicapi.DisconnectResp, error) {
	resp, err := l.repo.Disconnect(ctx, &repoapi.DisconnectReq{UserId: req.UserId, GatewayId: req.GatewayId})
	if err != nil {
		return nil, l.passthrough("disconnect", err)
	}
	if resp.Last {
		l.fanout.enqueue(presenceJob(req.UserId, false))
	}
	return &logicapi.DisconnectResp{}, nil
}

// DisconnectBatch is Disconnect for many sockets of one gateway (a user may repeat),
// in one repo call: every socket that was its user's last anywhere announces that
// the user went offline, just as Disconnect does.
func (l *Logic) DisconnectBatch(ctx context.Context, req *logicapi.DisconnectBatchReq) (*logicapi.DisconnectBatchResp, error) {
	if len(req.UserIds) > maxBatch {
		return nil, bizErr(base.ErrCode_BAD_REQUEST, "at most 1000 sockets at once")
	}
	if len(req.UserIds) == 0 {
		return &logicapi.DisconnectBatchResp{}, nil
	}
	resp, err := l.repo.DisconnectBatch(ctx, &repoapi.DisconnectBatchReq{UserIds: req.UserIds, GatewayId: req.GatewayId})
	if err != nil {
		return nil, l.passthrough("disconnect batch", err)
	}
	if err := l.announce("disconnect batch", req.UserIds, resp.Last, false); err != nil {
		return nil, err
	}
	return &logicapi.DisconnectBatchResp{}, nil
}

// RefreshRoutes keeps a gateway's routes alive and, given its socket counts, exact.
func (l *Logic) RefreshRoutes(ctx context.Context, req *logicapi.RefreshRoutesReq) (*logicapi.RefreshRoutesResp, error) {
	if len(req.Counts) > 0 && len(req.Counts) != len(req.UserIds) {
		return nil, bizErr(base.ErrCode_BAD_REQUEST, "counts must match user_ids")
	}
	for start := 0; start < len(req.UserIds); start += 1000 {
		end := min(start+1000, len(req.UserIds))
		r := &repoapi.RefreshRoutesReq{GatewayId: req.GatewayId, UserIds: req.UserIds[start:end]}
		if len(req.Counts) > 0 {
			r.Counts = req.Counts[start:end]
		}
		if _, err := l.repo.RefreshRoutes(ctx, r); err != nil {
			return nil, l.passthrough("refresh routes", err)
		}
	}
	return &logicapi.RefreshRoutesResp{}, nil
}
