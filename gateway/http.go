package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/common/adaptor"
	"github.com/cloudwego/kitex/pkg/kerrors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gochat/gochat/gateway/internal/wire"
	"github.com/gochat/gochat/kitex_gen/base"
	"github.com/gochat/gochat/kitex_gen/logicapi"
	"github.com/gochat/gochat/kitex_gen/repoapi"
)

// envelope is contract.md's response wrapper.
type envelope struct {
	Success    bool        `json:"success"`
	Message    string      `json:"message"`
	Data       any         `json:"data,omitempty"`
	Code       string      `json:"code,omitempty"`
	Pagination *pagination `json:"pagination,omitempty"`
}

type pagination struct {
	Page    int32 `json:"page"`
	Size    int32 `json:"size"`
	Total   int64 `json:"total"`
	HasMore bool  `json:"hasMore"`
}

// apiError is a refusal with its HTTP status and contract code.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(msg string) *apiError { return &apiError{http.StatusBadRequest, "BAD_REQUEST", msg} }

var errUnauthorized = &apiError{http.StatusUnauthorized, base.ErrCode_UNAUTHORIZED.String(), "missing, invalid or expired token"}

// statusOf maps the shared error codes (idl/base.thrift) to HTTP statuses.
func statusOf(code base.ErrCode) int {
	switch {
	case code >= 1 && code <= 9:
		return http.StatusBadRequest
	case code >= 10 && code <= 19:
		return http.StatusUnauthorized
	case code >= 20 && code <= 29:
		return http.StatusForbidden
	case code >= 30 && code <= 39:
		return http.StatusNotFound
	case code >= 40 && code <= 49:
		return http.StatusConflict
	case code == base.ErrCode_RATE_LIMITED:
		return http.StatusTooManyRequests
	case code == base.ErrCode_UNAVAILABLE:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// classify turns any error from logic into what the client sees. Transport errors
// (logic unreachable, timeout) become 503 without details; they are logged once here.
func (g *Gateway) classify(op string, err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	if bse, ok := kerrors.FromBizStatusError(err); ok {
		code := base.ErrCode(bse.BizStatusCode())
		st := statusOf(code)
		msg := bse.BizMessage()
		if st >= 500 {
			msg = "service temporarily unavailable"
			if st == http.StatusInternalServerError {
				msg = "internal error"
			}
		}
		return &apiError{st, code.String(), msg}
	}
	g.log.Error("logic call failed", "op", op, "err", err)
	return &apiError{http.StatusServiceUnavailable, base.ErrCode_UNAVAILABLE.String(), "service temporarily unavailable"}
}

func (g *Gateway) reply(c *app.RequestContext, status int, env envelope) {
	g.m.httpReqs.WithLabelValues(strconv.Itoa(status)).Inc()
	c.JSON(status, env)
}

func (g *Gateway) ok(c *app.RequestContext, status int, data any) {
	g.reply(c, status, envelope{Success: true, Message: "ok", Data: data})
}

func (g *Gateway) fail(c *app.RequestContext, op string, err error) {
	ae := g.classify(op, err)
	if ae.status == http.StatusRequestEntityTooLarge {
		c.Response.Header.Set("Connection", "close")
	}
	g.reply(c, ae.status, envelope{Success: false, Message: ae.msg, Code: ae.code})
	c.Abort()
}

// decode reads a JSON object body into v. An empty body is allowed when optional.
func (g *Gateway) decode(c *app.RequestContext, v any, optional bool) *apiError {
	if cl := c.Request.Header.ContentLength(); cl > g.cfg.MaxBody {
		return &apiError{http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", "request body is larger than 64 KiB"}
	}
	body := c.Request.Body()
	if len(body) > g.cfg.MaxBody {
		return &apiError{http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", "request body is larger than 64 KiB"}
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		if optional {
			return nil
		}
		return badRequest("request body is required (JSON object)")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return badRequest("field " + strconv.Quote(te.Field) + " has the wrong type: expected " + te.Type.String())
		}
		return badRequest("malformed JSON body")
	}
	return nil
}

type sessionKey struct{}

// authenticate checks the bearer token: locally first (signature, expiry), then with
// logic for revocation.
func (g *Gateway) authenticate(ctx context.Context, c *app.RequestContext) (*logicapi.Session, error) {
	h := strings.TrimSpace(string(c.Request.Header.Peek("Authorization")))
	scheme, tok, ok := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return nil, errUnauthorized
	}
	if _, err := g.tokens.Verify(tok); err != nil {
		return nil, errUnauthorized
	}
	cctx, cancel := g.callCtx(ctx)
	defer cancel()
	resp, err := g.logic.Auth(cctx, &logicapi.AuthReq{Token: tok})
	if err != nil {
		return nil, err
	}
	return resp.Session, nil
}

// authed wraps a handler that needs a session.
func (g *Gateway) authed(op string, fn func(ctx context.Context, c *app.RequestContext, s *logicapi.Session) error) app.HandlerFunc {
	return func(ctx context.Context, c *app.RequestContext) {
		s, err := g.authenticate(ctx, c)
		if err != nil {
			g.fail(c, "auth", err)
			return
		}
		cctx, cancel := g.callCtx(ctx)
		defer cancel()
		if err := fn(cctx, c, s); err != nil {
			g.fail(c, op, err)
		}
	}
}

// public wraps a handler that needs no session.
func (g *Gateway) public(op string, fn func(ctx context.Context, c *app.RequestContext) error) app.HandlerFunc {
	return func(ctx context.Context, c *app.RequestContext) {
		cctx, cancel := g.callCtx(ctx)
		defer cancel()
		if err := fn(cctx, c); err != nil {
			g.fail(c, op, err)
		}
	}
}

func (g *Gateway) originAllowed(origin string) bool {
	for _, o := range g.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

// cors answers preflights and echoes an allowed Origin exactly (contract.md §1: the
// page and the API may be on different host spellings).
func (g *Gateway) cors(_ context.Context, c *app.RequestContext) {
	origin := string(c.Request.Header.Peek("Origin"))
	if origin != "" && g.originAllowed(origin) {
		c.Response.Header.Set("Access-Control-Allow-Origin", origin)
		c.Response.Header.Set("Access-Control-Allow-Credentials", "true")
		c.Response.Header.Add("Vary", "Origin")
	}
	if string(c.Method()) == http.MethodOptions {
		c.Response.Header.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		c.Response.Header.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
		c.Response.Header.Set("Access-Control-Max-Age", "600")
		c.AbortWithStatus(http.StatusNoContent)
		return
	}
	c.Next(context.Background())
}

func (g *Gateway) routes(h *server.Hertz, gatherer prometheus.Gatherer) {
	h.Use(func(ctx context.Context, c *app.RequestContext) {
		g.cors(ctx, c)
	})
	// Preflights for any path are answered by cors, which runs before routing
	// decides (NoRoute/NoMethod chains include the global middleware).
	h.NoRoute(func(_ context.Context, c *app.RequestContext) {
		g.reply(c, http.StatusNotFound, envelope{Message: "no such endpoint", Code: "NOT_FOUND"})
	})
	h.NoMethod(func(_ context.Context, c *app.RequestContext) {
		g.reply(c, http.StatusMethodNotAllowed, envelope{Message: "method not allowed", Code: "METHOD_NOT_ALLOWED"})
	})

	for _, p := range []string{"/healthz", "/api/healthz"} {
		h.GET(p, func(_ context.Context, c *app.RequestContext) {
			g.ok(c, http.StatusOK, map[string]string{"status": "ok"})
		})
	}
	for _, p := range []string{"/readyz", "/api/readyz"} {
		h.GET(p, g.readyz)
	}
	if gatherer != nil {
		h.GET("/metrics", adaptor.HertzHandler(promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})))
	}
	// A plain GET on the WebSocket path (no Upgrade header) reaches Hertz.
	h.GET(g.cfg.WSPath, func(_ context.Context, c *app.RequestContext) {
		g.reply(c, http.StatusUpgradeRequired, envelope{Message: "this endpoint speaks WebSocket only", Code: "UPGRADE_REQUIRED"})
	})

	api := h.Group("/api")
	api.POST("/auth/register", g.public("register", g.register))
	api.POST("/auth/login", g.public("login", g.login))
	api.POST("/auth/guest", g.public("guest", g.guest))
	api.POST("/auth/logout", g.logout)
	api.GET("/users/info", g.authed("user info", g.userInfo))
	api.GET("/user/info", g.authed("user info", g.userInfo))
	api.GET("/conversations", g.authed("list conversations", g.listConversations))
	api.GET("/conversations/:id/messages", g.authed("list messages", g.listMessages))
	api.PUT("/conversations/:id/read", g.authed("mark read", g.markRead))
	api.POST("/messages", g.authed("send", g.sendHTTP))
	api.GET("/users/status/online", g.authed("online status", g.onlineStatus))
	api.GET("/users/:username", g.authed("find user", g.findUser))
	api.GET("/friends", g.authed("list friends", g.listFriends))
	api.POST("/friends", g.authed("add friend", g.addFriend))
	api.POST("/conversations", g.authed("open conversation", g.openConversation))
	api.POST("/groups", g.authed("create group", g.createGroup))
	api.GET("/groups/:groupId", g.authed("get group", g.getGroup))
	api.POST("/groups/:groupId/members", g.authed("add group members", g.addGroupMembers))
	api.DELETE("/groups/:groupId/members/:userId", g.authed("remove group member", g.removeGroupMember))
}

func (g *Gateway) readyz(ctx context.Context, c *app.RequestContext) {
	if g.draining.Load() {
		g.reply(c, http.StatusServiceUnavailable, envelope{Message: "shutting down", Code: "UNAVAILABLE"})
		return
	}
	cctx, cancel := g.callCtx(ctx)
	defer cancel()
	if _, err := g.logic.Ping(cctx, &repoapi.PingReq{}); err != nil {
		g.log.Warn("readiness check failed", "err", err)
		g.reply(c, http.StatusServiceUnavailable, envelope{Message: "dependencies unavailable", Code: "UNAVAILABLE"})
		return
	}
	g.ok(c, http.StatusOK, map[string]string{"status": "ready"})
}

type credentials struct {
	Username *string `json:"username"`
	Password *string `json:"password"`
}

func (cr credentials) validate() *apiError {
	if cr.Username == nil || cr.Password == nil {
		return badRequest("username and password are required")
	}
	return nil
}

func (g *Gateway) register(ctx context.Context, c *app.RequestContext) error {
	var req credentials
	if err := g.decode(c, &req, false); err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	resp, err := g.logic.Register(ctx, &logicapi.RegisterReq{Username: *req.Username, Password: *req.Password})
	if err != nil {
		return err
	}
	g.ok(c, http.StatusCreated, map[string]any{"user": wire.UserFrom(resp.User)})
	return nil
}

func (g *Gateway) login(ctx context.Context, c *app.RequestContext) error {
	var req credentials
	if err := g.decode(c, &req, false); err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	resp, err := g.logic.Login(ctx, &logicapi.LoginReq{Username: *req.Username, Password: *req.Password})
	if err != nil {
		return err
	}
	g.ok(c, http.StatusOK, map[string]any{"token": resp.Token, "user": wire.UserFrom(resp.User)})
	return nil
}

func (g *Gateway) guest(ctx context.Context, c *app.RequestContext) error {
	var req struct {
		GuestName *string `json:"guestName"`
	}
	if err := g.decode(c, &req, true); err != nil {
		return err
	}
	name := ""
	if req.GuestName != nil {
		name = *req.GuestName
	}
	resp, err := g.logic.Guest(ctx, &logicapi.GuestReq{GuestName: name})
	if err != nil {
		return err
	}
	g.ok(c, http.StatusOK, map[string]any{"token": resp.Token, "user": wire.UserFrom(resp.User)})
	return nil
}

// logout always answers 2xx (contract.md §1: a 401 here loops the client forever).
// A valid token is revoked; if that fails the client is still told it is logged out,
// and the failure is logged.
func (g *Gateway) logout(ctx context.Context, c *app.RequestContext) {
	h := strings.TrimSpace(string(c.Request.Header.Peek("Authorization")))
	if scheme, tok, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
		if _, err := g.tokens.Verify(strings.TrimSpace(tok)); err == nil {
			cctx, cancel := g.callCtx(ctx)
			defer cancel()
			if _, err := g.logic.Logout(cctx, &logicapi.LogoutReq{Token: strings.TrimSpace(tok)}); err != nil {
				g.log.Error("token revocation at logout failed", "err", err)
			}
		}
	}
	g.ok(c, http.StatusOK, map[string]any{})
}

func (g *Gateway) userInfo(ctx context.Context, c *app.RequestContext, s *logicapi.Session) error {
	resp, err := g.logic.GetUser(ctx, &logicapi.GetUserReq{UserId: s.UserId})
	if err != nil {
		return err
	}
	g.ok(c, http.StatusOK, wire.UserFrom(resp.User))
	return nil
}

func (g *Gateway) listConversations(ctx context.Context, c *app.RequestContext, s *logicapi.Session) error {
	resp, err := g.logic.ListConversations(ctx, &logicapi.ListConversationsReq{UserId: s.UserId})
	if err != nil {
		return err
	}
	out := make([]wire.Conversation, 0, len(resp.Conversations))
	for _, v := range resp.Conversations {
		if v.Conversation.Type == "world" {
			// Users online on this gateway: exact on one node; the cluster-wide count
			// comes with presence.
			v.OnlineCount = int32(g.sockets.Users())
		}
		out = append(out, wire.ConversationFrom(v))
	}
	g.ok(c, http.StatusOK, out)
	return nil
}

// queryInt parses an optional non-negative integer query parameter.
func queryInt(c *app.RequestContext, name string, def int64) (int64, *apiError) {
	v, ok := c.GetQuery(name)
	if !ok || v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, badRequest(name + " must be a non-negative integer")
	}
	return n, nil
}

func (g *Gateway) listMessages(ctx context.Context, c *app.RequestContext, s *logicapi.Session) error {
	page, err := queryInt(c, "page", 1)
	if err != nil {
		return err
	}
	size, err := queryInt(c, "size", 50)
	if err != nil {
		return err
	}
	before, err := queryInt(c, "beforeSeq", 0)
	if err != nil {
		return err
	}
	after, err := queryInt(c, "afterSeq", 0)
	if err != nil {
		return err
	}
	if page < 1 || size < 1 {
		return badRequest("page and size must be at least 1")
	}
	// afterSeq given without page is a cursor even when 0: everything from seq 1.
	_, hasAfter := c.GetQuery("afterSeq")
	_, hasPage := c.GetQuery("page")
	wirePage := page
	if hasAfter && !hasPage {
		page = 0
	}
	size = min(size, 100)
	page = min(page, 1<<30)
	resp, rerr := g.logic.ListMessages(ctx, &logicapi.ListMessagesReq{
		UserId: s.UserId, ConversationId: c.Param("id"), Page: int32(page), Size: int32(size), BeforeSeq: before, AfterSeq: after,
	})
	if rerr != nil {
		return rerr
	}
	out := make([]wire.Message, len(resp.Messages))
	for i, m := range resp.Messages {
		out[i] = wire.MessageFrom(m)
	}
	g.reply(c, http.StatusOK, envelope{Success: true, Message: "ok", Data: out,
		Pagination: &pagination{Page: int32(wirePage), Size: int32(size), Total: resp.Total, HasMore: resp.HasMore}})
	return nil
}

func (g *Gateway) markRead(ctx context.Context, c *app.RequestContext, s *logicapi.Session) error {
	var req struct {
		SeqID int64 `json:"seqId"`
	}
	if err := g.decode(c, &req, true); err != nil {
		return err
	}
	resp, err := g.logic.MarkRead(ctx, &logicapi.MarkReadReq{UserId: s.UserId, ConversationId: c.Param("id"), Seq: req.SeqID})
	if err != nil {
		return err
	}
	g.ok(c, http.StatusOK, map[string]any{"conversationId": c.Param("id"), "readSeq": resp.ReadSeq})
	return nil
}

// sendHTTP is POST /messages: the same pipeline and idempotency as the WebSocket.
func (g *Gateway) sendHTTP(ctx context.Context, c *app.RequestContext, s *logicapi.Session) error {
	var req struct {
		ConversationID string          `json:"conversationId"`
		Content        *string         `json:"content"`
		Type           json.RawMessage `json:"type"`
		ClientMsgID    wire.Flex       `json:"clientMsgId"`
	}
	if err := g.decode(c, &req, false); err != nil {
		return err
	}
	typ, ok := wire.ParseType(req.Type)
	if !ok {
		return &apiError{http.StatusBadRequest, base.ErrCode_INVALID_MESSAGE_TYPE.String(), "type must be text, image or file"}
	}
	if req.Content == nil {
		return &apiError{http.StatusBadRequest, base.ErrCode_CONTENT_EMPTY.String(), "content is required"}
	}
	resp, err := g.logic.Send(ctx, &logicapi.SendReq{
		UserId: s.UserId, ConversationId: req.ConversationID, Content: *req.Content, Type: typ,
		ClientMsgId: wire.IdempotencyKey(string(req.ClientMsgID)),
	})
	if err != nil {
		return err
	}
	status := http.StatusCreated
	if resp.Duplicate {
		status = http.StatusOK
	}
	g.ok(c, status, wire.MessageFrom(resp.Message))
	return nil
}

// parseID reads a snowflake id given as a JSON string or number.
func parseID(v wire.Flex, field string) (int64, *apiError) {
	id, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || id <= 0 {
		return 0, badRequest(field + " must be a user id")
	}
	return id, nil
}

// memberIDs reads a list of user ids to add to a group. Unknown ids are skipped
// (contract.md §3), and so are entries that are not ids at all: the client may send
// whatever it has. Only the list's length is refused.
func memberIDs(vs []wire.Flex, field string) ([]int64, *apiError) {
	if len(vs) > 500 {
		return nil, badRequest(field + " lists at most 500 ids")
	}
	ids := make([]int64, 0, len(vs))
	for _, v := range vs {
		if id, err := strconv.ParseInt(string(v), 10, 64); err == nil && id > 0 {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// pathID reads a numeric id from the path; anything else is a 404 (no such resource).
func pathID(c *app.RequestContext, name string) (int64, *apiError) {
	id, err := strconv.ParseInt(c.Param(name), 10, 64)
	if err != nil || id <= 0 {
		return 0, &apiError{http.StatusNotFound, base.ErrCode_NOT_FOUND.String(), "not found"}
	}
	return id, nil
}

func (g *Gateway) findUser(ctx context.Context, c *app.RequestContext, _ *logicapi.Session) error {
	resp, err := g.logic.GetUserByName(ctx, &logicapi.GetUserByNameReq{Username: c.Param("username")})
	if err != nil {
		return err
	}
	g.ok(c, http.StatusOK, wire.UserFrom(resp.User))
	return nil
}

func (g *Gateway) onlineStatus(ctx context.Context, c *app.RequestContext, s *logicapi.Session) error {
	resp, err := g.logic.OnlineStatus(ctx, &logicapi.OnlineStatusReq{UserId: s.UserId})
	if err != nil {
		return err
	}
	out := make(map[string]bool, len(resp.Online))
	for id, on := range resp.Online {
		out[wire.ID(id)] = on
	}
	g.ok(c, http.StatusOK, out)
	return nil
}

type friendView struct {
	UserID   string `json:"userId"`
	Username string `json:"username"`
	Avatar   string `json:"avatar"`
	Online   bool   `json:"online"`
}

func (g *Gateway) listFriends(ctx context.Context, c *app.RequestContext, s *logicapi.Session) error {
	resp, err := g.logic.ListFriends(ctx, &logicapi.ListFriendsReq{UserId: s.UserId})
	if err != nil {
		return err
	}
	out := make([]friendView, len(resp.Friends))
	for i, f := range resp.Friends {
		out[i] = friendView{UserID: wire.ID(f.User.Id), Username: f.User.Username, Avatar: f.User.Avatar, Online: f.Online}
	}
	g.ok(c, http.StatusOK, out)
	return nil
}

func (g *Gateway) addFriend(ctx context.Context, c *app.RequestContext, s *logicapi.Session) error {
	var req struct {
		FriendID wire.Flex `json:"friendId"`
	}
	if err := g.decode(c, &req, false); err != nil {
		return err
	}
	if s.IsGuest {
		// Guests are refused whatever they send.
		return &apiError{http.StatusForbidden, base.ErrCode_GUEST_NOT_ALLOWED.String(), "guests cannot add friends"}
	}
	id, aerr := parseID(req.FriendID, "friendId")
	if aerr != nil {
		return aerr
	}
	v, err := g.logic.AddFriend(ctx, &logicapi.AddFriendReq{UserId: s.UserId, IsGuest: s.IsGuest, FriendId: id})
	if err != nil {
		return err
	}
	g.ok(c, http.StatusCreated, map[string]any{"conversation": wire.ConversationFrom(v)})
	return nil
}

func (g *Gateway) openConversation(ctx context.Context, c *app.RequestContext, s *logicapi.Session) error {
	var req struct {
		TargetUserID wire.Flex `json:"targetUserId"`
	}
	if err := g.decode(c, &req, false); err != nil {
		return err
	}
	id, aerr := parseID(req.TargetUserID, "targetUserId")
	if aerr != nil {
		return aerr
	}
	resp, err := g.logic.OpenConversation(ctx, &logicapi.OpenConversationReq{UserId: s.UserId, IsGuest: s.IsGuest, TargetUserId: id})
	if err != nil {
		return err
	}
	status := http.StatusOK
	if resp.Created {
		status = http.StatusCreated
	}
	g.ok(c, status, wire.ConversationFrom(resp.Conversation))
	return nil
}

func (g *Gateway) createGroup(ctx context.Context, c *app.RequestContext, s *logicapi.Session) error {
	var req struct {
		GroupName string      `json:"groupName"`
		Members   []wire.Flex `json:"members"`
	}
	if err := g.decode(c, &req, false); err != nil {
		return err
	}
	if s.IsGuest {
		return &apiError{http.StatusForbidden, base.ErrCode_GUEST_NOT_ALLOWED.String(), "guests cannot create groups"}
	}
	ids, aerr := memberIDs(req.Members, "members")
	if aerr != nil {
		return aerr
	}
	info, err := g.logic.CreateGroup(ctx, &logicapi.CreateGroupReq{UserId: s.UserId, IsGuest: s.IsGuest, Name: req.GroupName, MemberIds: ids})
	if err != nil {
		return err
	}
	g.ok(c, http.StatusCreated, map[string]any{
		"group":        wire.GroupFrom(info),
		"conversation": map[string]string{"conversationId": info.Conversation.Id, "type": "group"},
	})
	return nil
}

func (g *Gateway) getGroup(ctx context.Context, c *app.RequestContext, s *logicapi.Session) error {
	id, aerr := pathID(c, "groupId")
	if aerr != nil {
		return aerr
	}
	info, err := g.logic.GetGroup(ctx, &logicapi.GetGroupReq{UserId: s.UserId, GroupId: id})
	if err != nil {
		return err
	}
	g.ok(c, http.StatusOK, wire.GroupFrom(info))
	return nil
}

func (g *Gateway) addGroupMembers(ctx context.Context, c *app.RequestContext, s *logicapi.Session) error {
	id, aerr := pathID(c, "groupId")
	if aerr != nil {
		return aerr
	}
	var req struct {
		MemberIDs []wire.Flex `json:"memberIds"`
	}
	if err := g.decode(c, &req, false); err != nil {
		return err
	}
	ids, aerr := memberIDs(req.MemberIDs, "memberIds")
	if aerr != nil {
		return aerr
	}
	info, err := g.logic.AddGroupMembers(ctx, &logicapi.AddGroupMembersReq{UserId: s.UserId, GroupId: id, MemberIds: ids})
	if err != nil {
		return err
	}
	g.ok(c, http.StatusOK, wire.GroupFrom(info))
	return nil
}

func (g *Gateway) removeGroupMember(ctx context.Context, c *app.RequestContext, s *logicapi.Session) error {
	id, aerr := pathID(c, "groupId")
	if aerr != nil {
		return aerr
	}
	target, aerr := pathID(c, "userId")
	if aerr != nil {
		return aerr
	}
	if _, err := g.logic.RemoveGroupMember(ctx, &logicapi.RemoveGroupMemberReq{UserId: s.UserId, GroupId: id, TargetUserId: target}); err != nil {
		return err
	}
	g.ok(c, http.StatusOK, map[string]any{})
	return nil
}
