// Package repo is the storage service: every read and write of the database and of the
// volatile state (Redis or in-process) goes through its Kitex API. The packages under it
// do the work: store (gorm: MySQL or SQLite) and kv (go-redis or in-process).
package repo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cloudwego/kitex/pkg/kerrors"

	"github.com/gochat/gochat/kitex_gen/base"
	"github.com/gochat/gochat/kitex_gen/repoapi"
	"github.com/gochat/gochat/repo/kv"
	"github.com/gochat/gochat/repo/store"
)

// ServiceName is the Kitex service name repo registers under.
const ServiceName = "gochat.repo"

// Store is the durable store; *store.Store satisfies it.
type Store interface {
	CreateUser(ctx context.Context, username, passwordHash string, isGuest bool) (store.User, error)
	UserByName(ctx context.Context, username string) (store.User, error)
	UsersByID(ctx context.Context, ids []int64) ([]store.User, error)
	Append(ctx context.Context, m store.Message) (store.Message, bool, error)
	AppendMany(ctx context.Context, ms []store.Message) []store.Appended
	Messages(ctx context.Context, convID string, fromSeq, toSeq int64) ([]store.Message, error)
	Conversation(ctx context.Context, id string) (store.Conversation, error)
	ReadSeq(ctx context.Context, convID string, userID int64) (int64, error)
	UserConversations(ctx context.Context, userID int64) ([]store.UserConversation, error)
	SetReadSeq(ctx context.Context, convID string, userID, seq int64) (int64, error)

	AddFriend(ctx context.Context, userID, friendID int64, singleConvID string) (store.Conversation, error)
	Friends(ctx context.Context, userID int64) ([]store.User, error)
	EnsureSingle(ctx context.Context, convID string, a, b int64) (conv store.Conversation, created bool, err error)
	CreateGroup(ctx context.Context, name string, ownerID int64, memberIDs []int64) (store.Conversation, error)
	Member(ctx context.Context, convID string, userID int64) (store.Member, bool, error)
	Members(ctx context.Context, convID string, afterUserID int64, limit int) ([]store.Member, error)
	AddMembers(ctx context.Context, convID string, userIDs []int64) (added []int64, conv store.Conversation, err error)
	RemoveMember(ctx context.Context, convID string, userID int64) (removed bool, conv store.Conversation, err error)
	Peers(ctx context.Context, userID int64) ([]int64, error)
	PeersMany(ctx context.Context, userIDs []int64) (map[int64][]int64, error)
}

// KV is the volatile state; *kv.Memory and *kv.Redis satisfy it.
type KV interface {
	Revoke(ctx context.Context, tokenID string, until time.Time) error
	IsRevoked(ctx context.Context, tokenID string) (bool, error)
	IsRevokedMany(ctx context.Context, tokenIDs []string) ([]bool, error)

	Connect(ctx context.Context, userID int64, gatewayID string) (first bool, err error)
	ConnectMany(ctx context.Context, userIDs []int64, gatewayID string) (first []bool, err error)
	Disconnect(ctx context.Context, userID int64, gatewayID string) (last bool, err error)
	DisconnectMany(ctx context.Context, userIDs []int64, gatewayID string) (last []bool, err error)
	Refresh(ctx context.Context, gatewayID string, userIDs []int64) error
	Sync(ctx context.Context, gatewayID string, userIDs []int64, counts []int32) error
	JobCursor(ctx context.Context, id string) (int64, bool, error)
	SaveJobCursor(ctx context.Context, id string, cursor int64, done bool) error
	Routes(ctx context.Context, userIDs []int64) (map[int64][]string, error)
}

// Handler implements the RepoService Kitex API.
type Handler struct {
	store Store
	kv    KV
	log   *slog.Logger
	// routesOffUntil (UnixNano) pauses AppendBatch's route reads after one failed:
	// an ack must not wait on a volatile store that is down.
	routesOffUntil atomic.Int64
}

// Route reads for an append's answer are bounded by routesInAnswerTimeout and,
// after a failure, skipped for routesInAnswerPause: the caller looks routes up off
// the ack's path instead, so an unhealthy Redis slows pushes, not acks.
const (
	routesInAnswerTimeout = 50 * time.Millisecond
	routesInAnswerPause   = time.Second
)

var _ repoapi.RepoService = (*Handler)(nil)

// New returns the Kitex handler over the given store and volatile state.
func New(s Store, kv KV, log *slog.Logger) *Handler {
	return &Handler{store: s, kv: kv, log: log.With("component", "repo")}
}

// toWire maps store errors to biz status errors; anything unexpected is logged once here
// and reaches the caller as an internal error without details.
func (h *Handler) toWire(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return kerrors.NewBizStatusError(int32(base.ErrCode_NOT_FOUND), "not found")
	case errors.Is(err, store.ErrInvalid), errors.Is(err, kv.ErrInvalid):
		return kerrors.NewBizStatusError(int32(base.ErrCode_BAD_REQUEST), "invalid argument")
	case errors.Is(err, store.ErrAlreadyFriends):
		return kerrors.NewBizStatusError(int32(base.ErrCode_CONFLICT), "already friends")
	case errors.Is(err, store.ErrUsernameTaken):
		return kerrors.NewBizStatusError(int32(base.ErrCode_USERNAME_TAKEN), "username already taken")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return kerrors.NewBizStatusError(int32(base.ErrCode_UNAVAILABLE), "request cancelled")
	default:
		h.log.Error("repo operation failed", "op", op, "err", err)
		return kerrors.NewBizStatusError(int32(base.ErrCode_INTERNAL), "internal error")
	}
}

func userToWire(u store.User) *repoapi.User {
	return &repoapi.User{Id: u.ID, Username: u.Username, Avatar: u.Avatar, IsGuest: u.IsGuest, CreatedAtMs: u.CreatedAt.UnixMilli()}
}

func messageToWire(m store.Message) *repoapi.Message {
	return &repoapi.Message{
		Id: m.ID, ConversationId: m.ConversationID, Seq: m.Seq, SenderId: m.SenderID, SenderName: m.SenderName,
		Type: m.Type, Content: m.Content, ClientMsgId: m.ClientMsgID, CreatedAtMs: m.CreatedAt.UnixMilli(),
	}
}

func conversationToWire(c store.Conversation) *repoapi.Conversation {
	var at int64
	if !c.LastMessageAt.IsZero() {
		at = c.LastMessageAt.UnixMilli()
	}
	return &repoapi.Conversation{
		Id: c.ID, Type: c.Type, Name: c.Name, Avatar: c.Avatar, OwnerId: c.OwnerID, MemberCount: c.MemberCount,
		LastSeq: c.LastSeq, LastMessageId: c.LastMessageID, LastMessagePreview: c.LastMessagePreview, LastMessageAtMs: at,
	}
}

// CreateUser stores a new account.
func (h *Handler) CreateUser(ctx context.Context, req *repoapi.CreateUserReq) (*repoapi.CreateUserResp, error) {
	u, err := h.store.CreateUser(ctx, req.Username, req.PasswordHash, req.IsGuest)
	if err != nil {
		return nil, h.toWire("create user", err)
	}
	return &repoapi.CreateUserResp{User: userToWire(u)}, nil
}

// GetUserByName returns the account and its password hash.
func (h *Handler) GetUserByName(ctx context.Context, req *repoapi.GetUserByNameReq) (*repoapi.GetUserByNameResp, error) {
	u, err := h.store.UserByName(ctx, req.Username)
	if err != nil {
		return nil, h.toWire("get user by name", err)
	}
	return &repoapi.GetUserByNameResp{User: userToWire(u), PasswordHash: u.PasswordHash}, nil
}

// GetUsers returns the users that exist among the given ids.
func (h *Handler) GetUsers(ctx context.Context, req *repoapi.GetUsersReq) (*repoapi.GetUsersResp, error) {
	if len(req.Ids) > 1000 {
		return nil, kerrors.NewBizStatusError(int32(base.ErrCode_BAD_REQUEST), "too many ids")
	}
	us, err := h.store.UsersByID(ctx, req.Ids)
	if err != nil {
		return nil, h.toWire("get users", err)
	}
	out := make([]*repoapi.User, len(us))
	for i, u := range us {
		out[i] = userToWire(u)
	}
	return &repoapi.GetUsersResp{Users: out}, nil
}

// Append stores a message durably (group commit), assigning id and seq.
func (h *Handler) Append(ctx context.Context, req *repoapi.AppendReq) (*repoapi.AppendResp, error) {
	m := req.Message
	if m == nil {
		return nil, kerrors.NewBizStatusError(int32(base.ErrCode_BAD_REQUEST), "message required")
	}
	stored, dup, err := h.store.Append(ctx, messageFromWire(m))
	if err != nil {
		return nil, h.toWire("append", err)
	}
	return &repoapi.AppendResp{Message: messageToWire(stored), Duplicate: dup}, nil
}

// AppendBatch is Append for many messages: they join the store's group commit
// together (one transaction, or a few when the batch outgrows the store's batch
// size) through one Store.AppendMany call. A message's failure is its own outcome,
// with the code and message the single Append would have answered; the batch as a
// whole fails only when oversized.
func (h *Handler) AppendBatch(ctx context.Context, req *repoapi.AppendBatchReq) (*repoapi.AppendBatchResp, error) {
	if len(req.Messages) > maxListIDs {
		return nil, badRequest("at most 1000 messages at once")
	}
	results := make([]*repoapi.AppendOutcome, len(req.Messages))
	ms := make([]store.Message, 0, len(req.Messages))
	idx := make([]int, 0, len(req.Messages)) // results index of ms[k]
	for i, m := range req.Messages {
		if m == nil {
			results[i] = &repoapi.AppendOutcome{ErrorCode: base.ErrCode_BAD_REQUEST, Message: "message required"}
			continue
		}
		ms = append(ms, messageFromWire(m))
		idx = append(idx, i)
	}
	for k, r := range h.store.AppendMany(ctx, ms) {
		if r.Err != nil {
			results[idx[k]] = appendOutcome(nil, h.toWire("append", r.Err))
			continue
		}
		results[idx[k]] = &repoapi.AppendOutcome{Resp: &repoapi.AppendResp{Message: messageToWire(r.Msg), Duplicate: r.Duplicate}}
	}
	resp := &repoapi.AppendBatchResp{Results: results}
	// After the commit, as the push's own GetRoutes would read them: a recipient
	// whose route appears later syncs on connect and finds the message stored.
	if n := len(req.RouteUsers); n > 0 && n <= maxListIDs && time.Now().UnixNano() >= h.routesOffUntil.Load() {
		rctx, cancel := context.WithTimeout(ctx, routesInAnswerTimeout)
		routes, err := h.kv.Routes(rctx, req.RouteUsers)
		cancel()
		if err == nil {
			resp.Routes = routes
		} else {
			// The caller looks the routes up itself and reports a failure there (the
			// fan-out's drop log); the appends stand.
			h.routesOffUntil.Store(time.Now().Add(routesInAnswerPause).UnixNano())
			h.log.Debug("append batch: routes for the answer unavailable", "users", n, "err", err)
		}
	}
	return resp, nil
}

// messageFromWire is what Append stores of a wire message.
func messageFromWire(m *repoapi.Message) store.Message {
	return store.Message{
		ConversationID: m.ConversationId, SenderID: m.SenderId, SenderName: m.SenderName,
		Type: m.Type, Content: m.Content, ClientMsgID: m.ClientMsgId,
	}
}

// appendOutcome turns Append's answer into a batch outcome. Append's errors went
// through toWire (which logged anything unexpected), so they are biz status errors.
func appendOutcome(resp *repoapi.AppendResp, err error) *repoapi.AppendOutcome {
	if err == nil {
		return &repoapi.AppendOutcome{Resp: resp}
	}
	if bse, ok := kerrors.FromBizStatusError(err); ok && bse.BizStatusCode() != int32(base.ErrCode_OK) {
		return &repoapi.AppendOutcome{ErrorCode: base.ErrCode(bse.BizStatusCode()), Message: bse.BizMessage()}
	}
	return &repoapi.AppendOutcome{ErrorCode: base.ErrCode_INTERNAL, Message: "internal error"}
}

// ListMessages returns a seq range of one conversation, ascending.
func (h *Handler) ListMessages(ctx context.Context, req *repoapi.ListMessagesReq) (*repoapi.ListMessagesResp, error) {
	ms, err := h.store.Messages(ctx, req.ConversationId, req.FromSeq, req.ToSeq)
	if err != nil {
		return nil, h.toWire("list messages", err)
	}
	out := make([]*repoapi.Message, len(ms))
	for i, m := range ms {
		out[i] = messageToWire(m)
	}
	return &repoapi.ListMessagesResp{Messages: out}, nil
}

// GetConversation returns one conversation and, when user_id is set, that user's read pointer.
func (h *Handler) GetConversation(ctx context.Context, req *repoapi.GetConversationReq) (*repoapi.GetConversationResp, error) {
	c, err := h.store.Conversation(ctx, req.ConversationId)
	if err != nil {
		return nil, h.toWire("get conversation", err)
	}
	resp := &repoapi.GetConversationResp{Conversation: conversationToWire(c)}
	if req.UserId != 0 {
		if resp.ReadSeq, err = h.store.ReadSeq(ctx, req.ConversationId, req.UserId); err != nil {
			return nil, h.toWire("get read seq", err)
		}
	}
	return resp, nil
}

// ListUserConversations returns every conversation the user belongs to (world
// included); single conversations carry the other member in peer_id.
func (h *Handler) ListUserConversations(ctx context.Context, req *repoapi.ListUserConversationsReq) (*repoapi.ListUserConversationsResp, error) {
	ucs, err := h.store.UserConversations(ctx, req.UserId)
	if err != nil {
		return nil, h.toWire("list user conversations", err)
	}
	out := make([]*repoapi.UserConversation, len(ucs))
	for i, uc := range ucs {
		out[i] = &repoapi.UserConversation{Conversation: conversationToWire(uc.Conversation), ReadSeq: uc.ReadSeq, PeerId: uc.PeerID}
	}
	return &repoapi.ListUserConversationsResp{Conversations: out}, nil
}

// SetReadSeq moves a read pointer forward.
func (h *Handler) SetReadSeq(ctx context.Context, req *repoapi.SetReadSeqReq) (*repoapi.SetReadSeqResp, error) {
	seq, err := h.store.SetReadSeq(ctx, req.ConversationId, req.UserId, req.Seq)
	if err != nil {
		return nil, h.toWire("set read seq", err)
	}
	return &repoapi.SetReadSeqResp{ReadSeq: seq}, nil
}

// RevokeToken records a token id as revoked until its expiry.
func (h *Handler) RevokeToken(ctx context.Context, req *repoapi.RevokeTokenReq) (*repoapi.RevokeTokenResp, error) {
	if req.TokenId == "" {
		return nil, kerrors.NewBizStatusError(int32(base.ErrCode_BAD_REQUEST), "token id required")
	}
	if err := h.kv.Revoke(ctx, req.TokenId, time.UnixMilli(req.ExpiresAtMs)); err != nil {
		return nil, h.toWire("revoke token", fmt.Errorf("revoke: %w", err))
	}
	return &repoapi.RevokeTokenResp{}, nil
}

// IsRevoked reports whether a token id was revoked.
func (h *Handler) IsRevoked(ctx context.Context, req *repoapi.IsRevokedReq) (*repoapi.IsRevokedResp, error) {
	revoked, err := h.kv.IsRevoked(ctx, req.TokenId)
	if err != nil {
		return nil, h.toWire("is revoked", err)
	}
	return &repoapi.IsRevokedResp{Revoked: revoked}, nil
}

// IsRevokedBatch reports for each token id whether it was revoked, in one lookup.
func (h *Handler) IsRevokedBatch(ctx context.Context, req *repoapi.IsRevokedBatchReq) (*repoapi.IsRevokedBatchResp, error) {
	if len(req.TokenIds) > maxListIDs {
		return nil, badRequest("too many token ids")
	}
	revoked, err := h.kv.IsRevokedMany(ctx, req.TokenIds)
	if err != nil {
		return nil, h.toWire("is revoked batch", err)
	}
	return &repoapi.IsRevokedBatchResp{Revoked: revoked}, nil
}

// Pinger is implemented by the store and by the volatile state.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Ping checks the store and the volatile state.
func (h *Handler) Ping(ctx context.Context, _ *repoapi.PingReq) (*repoapi.PingResp, error) {
	for name, p := range map[string]any{"store": h.store, "kv": h.kv} {
		if pp, ok := p.(Pinger); ok {
			if err := pp.Ping(ctx); err != nil {
				h.log.Warn("ping failed", "dep", name, "err", err)
				return nil, kerrors.NewBizStatusError(int32(base.ErrCode_UNAVAILABLE), name+" unavailable")
			}
		}
	}
	return &repoapi.PingResp{}, nil
}
