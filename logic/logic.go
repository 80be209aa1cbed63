// Package logic holds GoChat's business rules behind the LogicService Kitex API:
// accounts and tokens, conversations and membership, and the send pipeline
// (validate → repo.Append, durable → return for the ack → fan out through the bus).
package logic

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cloudwego/kitex/client/callopt"
	"github.com/cloudwego/kitex/pkg/kerrors"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/gochat/gochat/kitex_gen/base"
	"github.com/gochat/gochat/kitex_gen/logicapi"
	"github.com/gochat/gochat/kitex_gen/repoapi"
	"github.com/gochat/gochat/kitex_gen/taskapi"
	"github.com/gochat/gochat/logic/authtoken"
)

// ServiceName is the Kitex service name logic registers under.
const ServiceName = "gochat.logic"

// Repo is the part of the repo service logic calls; the generated reposervice.Client satisfies it.
type Repo interface {
	CreateUser(ctx context.Context, req *repoapi.CreateUserReq, opts ...callopt.Option) (*repoapi.CreateUserResp, error)
	GetUserByName(ctx context.Context, req *repoapi.GetUserByNameReq, opts ...callopt.Option) (*repoapi.GetUserByNameResp, error)
	GetUsers(ctx context.Context, req *repoapi.GetUsersReq, opts ...callopt.Option) (*repoapi.GetUsersResp, error)
	Append(ctx context.Context, req *repoapi.AppendReq, opts ...callopt.Option) (*repoapi.AppendResp, error)
	AppendBatch(ctx context.Context, req *repoapi.AppendBatchReq, opts ...callopt.Option) (*repoapi.AppendBatchResp, error)
	ListMessages(ctx context.Context, req *repoapi.ListMessagesReq, opts ...callopt.Option) (*repoapi.ListMessagesResp, error)
	GetConversation(ctx context.Context, req *repoapi.GetConversationReq, opts ...callopt.Option) (*repoapi.GetConversationResp, error)
	ListUserConversations(ctx context.Context, req *repoapi.ListUserConversationsReq, opts ...callopt.Option) (*repoapi.ListUserConversationsResp, error)
	SetReadSeq(ctx context.Context, req *repoapi.SetReadSeqReq, opts ...callopt.Option) (*repoapi.SetReadSeqResp, error)
	RevokeToken(ctx context.Context, req *repoapi.RevokeTokenReq, opts ...callopt.Option) (*repoapi.RevokeTokenResp, error)
	IsRevoked(ctx context.Context, req *repoapi.IsRevokedReq, opts ...callopt.Option) (*repoapi.IsRevokedResp, error)
	IsRevokedBatch(ctx context.Context, req *repoapi.IsRevokedBatchReq, opts ...callopt.Option) (*repoapi.IsRevokedBatchResp, error)
	Ping(ctx context.Context, req *repoapi.PingReq, opts ...callopt.Option) (*repoapi.PingResp, error)
	AddFriend(ctx context.Context, req *repoapi.AddFriendReq, opts ...callopt.Option) (*repoapi.AddFriendResp, error)
	ListFriends(ctx context.Context, req *repoapi.ListFriendsReq, opts ...callopt.Option) (*repoapi.ListFriendsResp, error)
	EnsureSingle(ctx context.Context, req *repoapi.EnsureSingleReq, opts ...callopt.Option) (*repoapi.EnsureSingleResp, error)
	CreateGroup(ctx context.Context, req *repoapi.CreateGroupReq, opts ...callopt.Option) (*repoapi.CreateGroupResp, error)
	GetMember(ctx context.Context, req *repoapi.GetMemberReq, opts ...callopt.Option) (*repoapi.GetMemberResp, error)
	ListMembers(ctx context.Context, req *repoapi.ListMembersReq, opts ...callopt.Option) (*repoapi.ListMembersResp, error)
	AddMembers(ctx context.Context, req *repoapi.AddMembersReq, opts ...callopt.Option) (*repoapi.AddMembersResp, error)
	RemoveMember(ctx context.Context, req *repoapi.RemoveMemberReq, opts ...callopt.Option) (*repoapi.RemoveMemberResp, error)
	ListPeers(ctx context.Context, req *repoapi.ListPeersReq, opts ...callopt.Option) (*repoapi.ListPeersResp, error)
	ListPeersBatch(ctx context.Context, req *repoapi.ListPeersBatchReq, opts ...callopt.Option) (*repoapi.ListPeersBatchResp, error)
	Connect(ctx context.Context, req *repoapi.ConnectReq, opts ...callopt.Option) (*repoapi.ConnectResp, error)
	ConnectBatch(ctx context.Context, req *repoapi.ConnectBatchReq, opts ...callopt.Option) (*repoapi.ConnectBatchResp, error)
	Disconnect(ctx context.Context, req *repoapi.DisconnectReq, opts ...callopt.Option) (*repoapi.DisconnectResp, error)
	DisconnectBatch(ctx context.Context, req *repoapi.DisconnectBatchReq, opts ...callopt.Option) (*repoapi.DisconnectBatchResp, error)
	RefreshRoutes(ctx context.Context, req *repoapi.RefreshRoutesReq, opts ...callopt.Option) (*repoapi.RefreshRoutesResp, error)
	GetRoutes(ctx context.Context, req *repoapi.GetRoutesReq, opts ...callopt.Option) (*repoapi.GetRoutesResp, error)
}

// Task is where pushes go that logic could not publish; the generated taskservice.Client satisfies it.
type Task interface {
	DeferPush(ctx context.Context, req *taskapi.DeferPushReq, opts ...callopt.Option) (*taskapi.DeferPushResp, error)
}

// Publisher puts a record on the bus; *pushq.Memory and *pushq.Kafka satisfy it.
type Publisher interface {
	Publish(ctx context.Context, topic string, key, value []byte) error
}

// Deps are logic's collaborators.
type Deps struct {
	Log     *slog.Logger
	Metrics prometheus.Registerer
	Repo    Repo
	Task    Task
	Bus     Publisher
	Tokens  *authtoken.Signer
	// Gateways says which gateways are alive; routes naming a dead one are skipped.
	// Nil means every gateway in a route is taken as alive.
	Gateways GatewaySet
}

// GatewaySet reports live gateways (registered in etcd with a short lease).
type GatewaySet interface {
	Alive(id string) bool
}

// Logic implements the LogicService Kitex API.
type Logic struct {
	cfg      Config
	log      *slog.Logger
	repo     Repo
	tokens   *authtoken.Signer
	gateways GatewaySet
	fanout   *fanout
	names    *nameCache

	// dummyHash is compared against when a login names an unknown user, so that
	// "no such user" and "wrong password" take the same time.
	dummyHash []byte

	sendSeconds prometheus.Histogram
}

var _ logicapi.LogicService = (*Logic)(nil)

// New validates the configuration and builds logic. It does no I/O and starts nothing.
func New(cfg Config, d Deps) (*Logic, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Log == nil || d.Metrics == nil || d.Repo == nil || d.Task == nil || d.Bus == nil || d.Tokens == nil {
		return nil, errors.New("logic: every dependency is required")
	}
	log := d.Log.With("component", "logic")
	dummy, err := bcrypt.GenerateFromPassword([]byte("not-a-real-password"), cfg.BcryptCost)
	if err != nil {
		return nil, fmt.Errorf("logic: dummy hash: %w", err)
	}
	l := &Logic{
		cfg:       cfg,
		log:       log,
		repo:      d.Repo,
		tokens:    d.Tokens,
		gateways:  d.Gateways,
		names:     newNameCache(cfg.UserCacheSize),
		dummyHash: dummy,
		sendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gochat_logic_send_seconds",
			Help:    "Time logic spends on one send: validation and the durable append.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	l.fanout, err = newFanout(cfg, d.Repo, d.Bus, d.Task, d.Gateways, log, d.Metrics)
	if err != nil {
		return nil, err
	}
	if err := d.Metrics.Register(l.sendSeconds); err != nil {
		return nil, fmt.Errorf("logic: register metrics: %w", err)
	}
	return l, nil
}

// Run runs the publisher goroutines and serve (the Kitex server) until ctx is done.
// When serve has returned (in-flight sends drained), queued pushes are published
// for up to ShutdownDrain before Run returns.
func (l *Logic) Run(ctx context.Context, serve func(context.Context) error) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		l.fanout.run()
	}()
	err := serve(ctx)
	l.fanout.close(l.cfg.ShutdownDrain)
	wg.Wait()
	return err
}

func bizErr(code base.ErrCode, msg string) error {
	return kerrors.NewBizStatusError(int32(code), msg)
}

// passthrough returns err unchanged when it already is a biz status error (repo's
// codes mean the same thing to logic's caller); other errors are logged once here.
func (l *Logic) passthrough(op string, err error) error {
	if _, ok := kerrors.FromBizStatusError(err); ok {
		return err
	}
	l.log.Error("dependency call failed", "op", op, "err", err)
	return bizErr(base.ErrCode_UNAVAILABLE, "service temporarily unavailable")
}

func isCode(err error, code base.ErrCode) bool {
	bse, ok := kerrors.FromBizStatusError(err)
	return ok && bse.BizStatusCode() == int32(code)
}

// bcryptInput keeps long (multi-byte) passwords inside bcrypt's 72-byte limit
// without truncating them: anything longer is pre-hashed.
func bcryptInput(password string) []byte {
	if len(password) <= 72 {
		return []byte(password)
	}
	sum := sha256.Sum256([]byte(password))
	return []byte(hex.EncodeToString(sum[:]))
}

// Register creates an account.
func (l *Logic) Register(ctx context.Context, req *logicapi.RegisterReq) (*logicapi.RegisterResp, error) {
	if !validUsername(req.Username) {
		return nil, bizErr(base.ErrCode_INVALID_USERNAME, "username must be 3-20 characters: letters, digits, _, - or CJK")
	}
	if !validPassword(req.Password) {
		return nil, bizErr(base.ErrCode_INVALID_PASSWORD, "password must be 6-50 characters")
	}
	hash, err := bcrypt.GenerateFromPassword(bcryptInput(req.Password), l.cfg.BcryptCost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	resp, err := l.repo.CreateUser(ctx, &repoapi.CreateUserReq{Username: req.Username, PasswordHash: string(hash)})
	if err != nil {
		return nil, l.passthrough("create user", err)
	}
	l.names.put(resp.User.Id, resp.User.Username)
	return &logicapi.RegisterResp{User: resp.User}, nil
}

// Login checks a password and issues a token. Unknown user and wrong password give
// the same answer.
func (l *Logic) Login(ctx context.Context, req *logicapi.LoginReq) (*logicapi.LoginResp, error) {
	bad := bizErr(base.ErrCode_INVALID_CREDENTIALS, "invalid username or password")
	if req.Username == "" || req.Password == "" || len(req.Username) > 200 || len(req.Password) > 400 {
		return nil, bad
	}
	resp, err := l.repo.GetUserByName(ctx, &repoapi.GetUserByNameReq{Username: req.Username})
	switch {
	case isCode(err, base.ErrCode_NOT_FOUND):
		_ = bcrypt.CompareHashAndPassword(l.dummyHash, bcryptInput(req.Password))
		return nil, bad
	case err != nil:
		return nil, l.passthrough("get user by name", err)
	}
	if resp.User.IsGuest || resp.PasswordHash == "" {
		_ = bcrypt.CompareHashAndPassword(l.dummyHash, bcryptInput(req.Password))
		return nil, bad
	}
	if bcrypt.CompareHashAndPassword([]byte(resp.PasswordHash), bcryptInput(req.Password)) != nil {
		return nil, bad
	}
	return l.issue(resp.User)
}

func (l *Logic) issue(u *repoapi.User) (*logicapi.LoginResp, error) {
	tok, _, err := l.tokens.Issue(u.Id, u.IsGuest)
	if err != nil {
		return nil, err
	}
	l.names.put(u.Id, u.Username)
	return &logicapi.LoginResp{Token: tok, User: u}, nil
}

// Guest creates a guest account (with a generated unique name when none is given) and logs it in.
func (l *Logic) Guest(ctx context.Context, req *logicapi.GuestReq) (*logicapi.LoginResp, error) {
	name := strings.TrimSpace(req.GuestName)
	if name != "" {
		if !validUsername(name) {
			return nil, bizErr(base.ErrCode_INVALID_USERNAME, "guest name must be 3-20 characters: letters, digits, _, - or CJK")
		}
		resp, err := l.repo.CreateUser(ctx, &repoapi.CreateUserReq{Username: name, IsGuest: true})
		if err != nil {
			return nil, l.passthrough("create guest", err)
		}
		return l.issue(resp.User)
	}
	// Generated names collide with probability ~2^-40 per pair; retry a few times anyway.
	for range 5 {
		var b [5]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("guest name: %w", err)
		}
		resp, err := l.repo.CreateUser(ctx, &repoapi.CreateUserReq{Username: "guest_" + hex.EncodeToString(b[:]), IsGuest: true})
		if isCode(err, base.ErrCode_USERNAME_TAKEN) {
			continue
		}
		if err != nil {
			return nil, l.passthrough("create guest", err)
		}
		return l.issue(resp.User)
	}
	return nil, bizErr(base.ErrCode_INTERNAL, "could not pick a guest name")
}

// Logout revokes the token when it is valid; it never fails for a bad token.
func (l *Logic) Logout(ctx context.Context, req *logicapi.LogoutReq) (*logicapi.LogoutResp, error) {
	c, err := l.tokens.Verify(req.Token)
	if err != nil {
		return &logicapi.LogoutResp{}, nil
	}
	if _, err := l.repo.RevokeToken(ctx, &repoapi.RevokeTokenReq{TokenId: c.TokenID, ExpiresAtMs: c.ExpiresAt.UnixMilli()}); err != nil {
		return nil, l.passthrough("revoke token", err)
	}
	return &logicapi.LogoutResp{}, nil
}

// Auth verifies a token and checks it was not revoked.
func (l *Logic) Auth(ctx context.Context, req *logicapi.AuthReq) (*logicapi.AuthResp, error) {
	c, err := l.tokens.Verify(req.Token)
	if err != nil {
		return nil, bizErr(base.ErrCode_UNAUTHORIZED, "invalid or expired token")
	}
	rv, err := l.repo.IsRevoked(ctx, &repoapi.IsRevokedReq{TokenId: c.TokenID})
	if err != nil {
		return nil, l.passthrough("is revoked", err)
	}
	if rv.Revoked {
		return nil, bizErr(base.ErrCode_UNAUTHORIZED, "token has been revoked")
	}
	return &logicapi.AuthResp{Session: &logicapi.Session{
		Token: req.Token, UserId: c.UserID, IsGuest: c.IsGuest, TokenId: c.TokenID, ExpiresAtMs: c.ExpiresAt.UnixMilli(),
	}}, nil
}

// maxBatch bounds AuthBatch's tokens, ConnectBatch's and DisconnectBatch's sockets
// and SendBatch's messages: each batch is one repo call, and repo takes at most 1000
// ids (messages) per request.
const maxBatch = 1000

// AuthBatch is Auth for many tokens: each signature is checked here and the valid
// ones' revocations are looked up in one repo call. A token's failure is its own
// result (the code and message Auth would have failed with); only a failed repo
// call fails the batch.
func (l *Logic) AuthBatch(ctx context.Context, req *logicapi.AuthBatchReq) (*logicapi.AuthBatchResp, error) {
	if len(req.Tokens) > maxBatch {
		return nil, bizErr(base.ErrCode_BAD_REQUEST, "at most 1000 tokens at once")
	}
	results := make([]*logicapi.AuthOutcome, len(req.Tokens))
	claims := make([]authtoken.Claims, len(req.Tokens))
	valid := make([]int, 0, len(req.Tokens)) // indexes of the tokens that verified
	ids := make([]string, 0, len(req.Tokens))
	for i, tok := range req.Tokens {
		c, err := l.tokens.Verify(tok)
		if err != nil {
			results[i] = &logicapi.AuthOutcome{ErrorCode: base.ErrCode_UNAUTHORIZED, Message: "invalid or expired token"}
			continue
		}
		claims[i] = c
		valid = append(valid, i)
		ids = append(ids, c.TokenID)
	}
	if len(ids) > 0 {
		rv, err := l.repo.IsRevokedBatch(ctx, &repoapi.IsRevokedBatchReq{TokenIds: ids})
		if err != nil {
			return nil, l.passthrough("is revoked batch", err)
		}
		if len(rv.Revoked) != len(ids) {
			l.log.Error("repo answered a revocation batch of the wrong size", "want", len(ids), "got", len(rv.Revoked))
			return nil, bizErr(base.ErrCode_UNAVAILABLE, "service temporarily unavailable")
		}
		for k, i := range valid {
			if rv.Revoked[k] {
				results[i] = &logicapi.AuthOutcome{ErrorCode: base.ErrCode_UNAUTHORIZED, Message: "token has been revoked"}
				continue
			}
			c := claims[i]
			results[i] = &logicapi.AuthOutcome{Session: &logicapi.Session{
				Token: req.Tokens[i], UserId: c.UserID, IsGuest: c.IsGuest, TokenId: c.TokenID, ExpiresAtMs: c.ExpiresAt.UnixMilli(),
			}}
		}
	}
	return &logicapi.AuthBatchResp{Results: results}, nil
}

// Ping succeeds when repo (and through it the store) answers.
func (l *Logic) Ping(ctx context.Context, req *repoapi.PingReq) (*repoapi.PingResp, error) {
	if _, err := l.repo.Ping(ctx, req); err != nil {
		return nil, l.passthrough("ping repo", err)
	}
	return &repoapi.PingResp{}, nil
}

// GetUser returns one user.
func (l *Logic) GetUser(ctx context.Context, req *logicapi.GetUserReq) (*logicapi.GetUserResp, error) {
	resp, err := l.repo.GetUsers(ctx, &repoapi.GetUsersReq{Ids: []int64{req.UserId}})
	if err != nil {
		return nil, l.passthrough("get users", err)
	}
	if len(resp.Users) == 0 {
		return nil, bizErr(base.ErrCode_USER_NOT_FOUND, "user not found")
	}
	return &logicapi.GetUserResp{User: resp.Users[0]}, nil
}

// nameCache maps user ids to usernames, which never change. Bounded: when full it
// starts over, which costs a few lookups and nothing else.
type nameCache struct {
	max int
	mu  sync.RWMutex // guards m
	m   map[int64]string
}

func newNameCache(max int) *nameCache { return &nameCache{max: max, m: make(map[int64]string)} }

func (c *nameCache) get(id int64) (string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s, ok := c.m[id]
	return s, ok
}

func (c *nameCache) put(id int64, name string) {
	if c.max == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[id] = name
}

// senderName returns the username of id, from the cache or repo.
func (l *Logic) senderName(ctx context.Context, id int64) (string, error) {
	if s, ok := l.names.get(id); ok {
		return s, nil
	}
	resp, err := l.GetUser(ctx, &logicapi.GetUserReq{UserId: id})
	if err != nil {
		return "", err
	}
	l.names.put(id, resp.User.Username)
	return resp.User.Username, nil
}

// sinceSeconds is a small helper for histograms.
func sinceSeconds(t time.Time) float64 { return time.Since(t).Seconds() }
