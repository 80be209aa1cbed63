package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bytedance/sonic"
	"github.com/cloudwego/kitex/pkg/kerrors"

	"github.com/gochat/gochat/gateway/internal/wire"
	"github.com/gochat/gochat/gateway/internal/wsnet"
	"github.com/gochat/gochat/kitex_gen/base"
	"github.com/gochat/gochat/kitex_gen/logicapi"
	"github.com/gochat/gochat/kitex_gen/repoapi"
	"github.com/gochat/gochat/logic/pushq"
)

// wsHandler is the Gateway seen as the WebSocket server's handler.
type wsHandler Gateway

var _ wsnet.Handler = (*wsHandler)(nil)

// session is what an accepted socket carries.
type session struct {
	userID int64
	guest  bool
	origin string // "<gatewayID>/<connID>", set at open: pushes carrying it skip this socket
}

func rejectJSON(status int, code, msg string) *wsnet.Reject {
	b, _ := json.Marshal(envelope{Success: false, Message: msg, Code: code})
	return &wsnet.Reject{Status: status, Body: b}
}

// Authorize checks the Origin and the token before the 101: a bad token is a 401
// without an upgrade.
func (h *wsHandler) Authorize(ctx context.Context, r *wsnet.Request) (any, *wsnet.Reject) {
	g := (*Gateway)(h)
	if o := r.Header.Get("Origin"); o != "" && !g.originAllowed(o) {
		return nil, rejectJSON(http.StatusForbidden, "ORIGIN_NOT_ALLOWED", "origin not allowed")
	}
	tok := r.Query.Get("token")
	if _, err := g.tokens.Verify(tok); err != nil {
		return nil, rejectJSON(http.StatusUnauthorized, errUnauthorized.code, errUnauthorized.msg)
	}
	cctx, cancel := g.callCtx(ctx)
	defer cancel()
	res, err := g.auth.Do(cctx, tok)
	switch {
	case err != nil:
	case res == nil:
		err = errors.New("logic answered an auth with no result")
	case res.ErrorCode != base.ErrCode_OK:
		// The token's own failure, as the single Auth would have returned it.
		err = kerrors.NewBizStatusError(int32(res.ErrorCode), res.Message)
	case res.Session == nil:
		err = errors.New("logic answered an auth without a session")
	}
	if err != nil {
		ae := g.classify("ws auth", err)
		return nil, rejectJSON(ae.status, ae.code, ae.msg)
	}
	return &session{userID: res.Session.UserId, guest: res.Session.IsGuest}, nil
}

// OnOpen registers the socket and greets it.
func (h *wsHandler) OnOpen(c *wsnet.Conn) {
	g := (*Gateway)(h)
	s := c.Data().(*session)
	s.origin = g.cfg.ID + "/" + strconv.FormatUint(c.ID(), 10)
	g.sockets.Add(s.userID, c)
	g.write(c, "connected", wire.Connected{
		UserID: wire.ID(s.userID), ConnectionID: s.origin, ServerTime: time.Now().UTC().Format(wire.TimeLayout),
	})
	// The route makes pushes for this user come here; the first socket anywhere
	// announces the user to friends and 1:1 peers.
	ctx, cancel := g.callCtx(context.Background())
	defer cancel()
	if _, err := g.connect.Do(ctx, s.userID); err != nil {
		// A failed batch call is logged once by connectBatch; under overload a
		// warning per socket would add thousands of lines a second.
		g.log.Debug("registering socket route failed; the periodic refresh retries", "uid", s.userID, "err", err)
	}
}

// OnClose unregisters the socket. It waits for the disconnect's batch call, at
// most one RPC timeout, so a gateway shutting down has told logic about its sockets
// before it stops (ws.Shutdown waits for every OnClose).
func (h *wsHandler) OnClose(c *wsnet.Conn, _ int, _ string) {
	g := (*Gateway)(h)
	s := c.Data().(*session)
	g.sockets.Remove(s.userID, c.ID())
	// The last socket anywhere announces that the user went offline.
	ctx, cancel := g.callCtx(context.Background())
	defer cancel()
	if _, err := g.disconnect.Do(ctx, s.userID); err != nil {
		// The gateway stopping (errBatcherClosed) or a failed batch call, logged
		// once by disconnectBatch: the route expires by itself either way.
		g.log.Debug("unregistering socket route failed; it expires by itself", "uid", s.userID, "err", err)
	}
}

func (g *Gateway) write(c *wsnet.Conn, typ string, data any) {
	g.m.out[typ].Inc()
	// A reply is written from the caller's goroutine (usually the socket's own, which
	// handles the frame being answered) rather than a drain goroutine started for it:
	// Flush never waits, it hands a full socket to a goroutine of its own. Queueing
	// only fails when the socket is closed or was just closed for being too slow;
	// either way the client recovers by seq after reconnecting.
	if flush, _ := c.SendDeferred(wire.Encode(typ, data)); flush {
		c.Flush()
	}
}

func (g *Gateway) writeError(c *wsnet.Conn, code, msg, tempID string) {
	g.write(c, "error", wire.Error{Code: code, Message: msg, TempMessageID: tempID})
}

// OnText handles one client frame. Frames of one socket are handled in order.
func (h *wsHandler) OnText(c *wsnet.Conn, msg []byte) {
	g := (*Gateway)(h)
	s := c.Data().(*session)
	var f wire.InFrame
	if err := sonic.ConfigStd.Unmarshal(msg, &f); err != nil {
		g.m.in["invalid"].Inc()
		g.writeError(c, "BAD_FRAME", `frame must be a JSON object {"type": "...", "data": {...}}`, "")
		return
	}
	in, ok := g.m.in[f.Type]
	if !ok || f.Type == "invalid" { // "invalid" labels undecodable frames, not a type
		in = g.m.in["unknown"]
	}
	in.Inc()
	switch f.Type {
	case "ping":
		g.write(c, "pong", nil)
	case "send-message":
		g.onSend(c, s, f.Data)
	case "sync":
		g.onSync(c, s, f.Data)
	case "read":
		g.onRead(c, s, f.Data)
	default:
		g.writeError(c, "UNKNOWN_TYPE", "unknown frame type "+strconv.Quote(truncate(f.Type, 40)), "")
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func (g *Gateway) onSend(c *wsnet.Conn, s *session, raw json.RawMessage) {
	start := time.Now()
	var d wire.SendMessage
	if len(raw) == 0 || sonic.ConfigStd.Unmarshal(raw, &d) != nil {
		g.writeError(c, "BAD_FRAME", "send-message data must be an object with conversationId, content, messageType and tempMessageId", "")
		g.m.sendErr.Observe(time.Since(start).Seconds())
		return
	}
	tempID := d.TempID()
	typeRaw := d.MessageType
	if len(typeRaw) == 0 {
		typeRaw = d.Type
	}
	typ, ok := wire.ParseType(typeRaw)
	switch {
	case !ok:
		g.writeError(c, base.ErrCode_INVALID_MESSAGE_TYPE.String(), "messageType must be text, image or file", tempID)
	case d.Content == nil:
		g.writeError(c, base.ErrCode_CONTENT_EMPTY.String(), "content is required", tempID)
	case strings.TrimSpace(d.ConversationID) == "":
		g.writeError(c, base.ErrCode_INVALID_CONVERSATION.String(), "conversationId is required", tempID)
	default:
		ctx, cancel := g.callCtx(context.Background())
		m, err := sendOutcome(g.send.Do(ctx, &logicapi.SendReq{
			UserId: s.userID, ConversationId: d.ConversationID, Content: *d.Content, Type: typ,
			ClientMsgId: wire.IdempotencyKey(tempID), OriginConn: s.origin,
		}))
		cancel()
		if err != nil {
			ae := g.classify("send", err)
			g.writeError(c, ae.code, ae.msg, tempID)
			break
		}
		g.write(c, "message-ack", wire.Ack{
			TempMessageID: tempID, ClientMsgID: tempID, MessageID: wire.ID(m.Id), ConversationID: m.ConversationId,
			SeqID: m.Seq, SendTime: wire.Time(m.CreatedAtMs),
		})
		g.m.sendOK.Observe(time.Since(start).Seconds())
		return
	}
	g.m.sendErr.Observe(time.Since(start).Seconds())
}

// sendOutcome turns the send batcher's answer into what the single logic.Send
// returns: the stored message, or an error (the batch call's own, or the biz status
// error this message's Send would have failed with).
func sendOutcome(res *logicapi.SendOutcome, err error) (*repoapi.Message, error) {
	switch {
	case err != nil:
		return nil, err
	case res == nil:
		return nil, errors.New("logic answered a send with no result")
	case res.ErrorCode != base.ErrCode_OK:
		return nil, kerrors.NewBizStatusError(int32(res.ErrorCode), res.Message)
	case res.Resp == nil || res.Resp.Message == nil:
		return nil, errors.New("logic answered a send without a message")
	}
	return res.Resp.Message, nil
}

// flushChunk is how many sockets one goroutine of a fanWriter writes to.
const flushChunk = 256

// flushInline is how many sockets a fanWriter's last chunk may hold for done to
// write them itself rather than start a goroutine: a 1:1 push has one or two.
const flushInline = 2

// fanWriter writes one frame to many sockets (a push to a room or to a group's
// members): add only queues (SendDeferred), and the writes run on one goroutine
// per flushChunk sockets that needed a writer, not one per socket. While those
// goroutines are still writing, the next message's walk finds their sockets'
// writers pending and adds to their queues, so under a flood one write(2) carries
// several messages. A last chunk of at most flushInline sockets is written by done
// on the caller's goroutine: a write that finds no room is handed to a goroutine of
// its own by Flush, so done never waits for a peer. Not safe for concurrent use.
type fanWriter[S deferredSocket] struct {
	frame  []byte
	skip   uint64 // the id of the socket that sent the message, which gets no copy
	users  int    // recipients named by the push, 0 for the whole room: sizes chunk
	queued int
	chunk  []S // sockets whose Flush is left to this writer
}

// deferredSocket is what a fanWriter needs of a socket (*wsnet.Conn).
type deferredSocket interface {
	ID() uint64
	SendDeferred(frame []byte) (flush bool, err error)
	Flush()
}

func (w *fanWriter[S]) add(c S) {
	if c.ID() == w.skip {
		return
	}
	flush, err := c.SendDeferred(w.frame)
	if err != nil {
		return
	}
	w.queued++
	if !flush {
		return
	}
	if w.chunk == nil {
		// A push to one user has a socket or two: a chunk of flushChunk pointers
		// for it was 17% of the bytes the all-mode process allocated under 1:1 load.
		size := flushChunk
		if w.users > 0 {
			size = min(size, 2*w.users)
		}
		w.chunk = make([]S, 0, size)
	}
	w.chunk = append(w.chunk, c)
	if len(w.chunk) == flushChunk {
		go flushAll(w.chunk)
		w.chunk = nil
	}
}

// done starts the writes still pending and returns how many sockets got the frame.
func (w *fanWriter[S]) done() int {
	switch n := len(w.chunk); {
	case n > flushInline:
		go flushAll(w.chunk)
	case n > 0:
		flushAll(w.chunk)
	}
	w.chunk = nil
	return w.queued
}

func flushAll[S deferredSocket](conns []S) {
	for _, c := range conns {
		c.Flush()
	}
}

func (g *Gateway) onSync(c *wsnet.Conn, s *session, raw json.RawMessage) {
	var d wire.Sync
	if len(raw) == 0 || sonic.ConfigStd.Unmarshal(raw, &d) != nil || d.AfterSeq < 0 || d.Limit < 0 {
		g.writeError(c, "BAD_FRAME", "sync data must be {conversationId, afterSeq >= 0, limit?}", "")
		return
	}
	ctx, cancel := g.callCtx(context.Background())
	defer cancel()
	resp, err := g.logic.ListMessages(ctx, &logicapi.ListMessagesReq{
		UserId: s.userID, ConversationId: d.ConversationID, Page: 0, Size: min(d.Limit, 100), AfterSeq: d.AfterSeq,
	})
	if err != nil {
		ae := g.classify("sync", err)
		g.writeError(c, ae.code, ae.msg, "")
		return
	}
	out := make([]wire.Message, len(resp.Messages))
	for i, m := range resp.Messages {
		out[i] = wire.MessageFrom(m)
	}
	g.write(c, "sync-result", wire.SyncResult{ConversationID: d.ConversationID, Messages: out, HasMore: resp.HasMore})
}

func (g *Gateway) onRead(c *wsnet.Conn, s *session, raw json.RawMessage) {
	var d wire.Read
	if len(raw) == 0 || sonic.ConfigStd.Unmarshal(raw, &d) != nil || d.SeqID < 0 {
		g.writeError(c, "BAD_FRAME", "read data must be {conversationId, seqId >= 0}", "")
		return
	}
	ctx, cancel := g.callCtx(context.Background())
	defer cancel()
	if _, err := g.logic.MarkRead(ctx, &logicapi.MarkReadReq{UserId: s.userID, ConversationId: d.ConversationID, Seq: d.SeqID}); err != nil {
		ae := g.classify("read", err)
		g.writeError(c, ae.code, ae.msg, "")
	}
}

// onPush delivers one record from the bus. A message is encoded once and written to
// every target socket except the one that sent it: all sockets here for the world
// room (broadcast topic), the listed recipients' sockets otherwise (this gateway's
// own topic). A presence change becomes friend-online for the listed recipients.
func (g *Gateway) onPush(value []byte) {
	p, err := pushq.DecodePush(value)
	if err != nil {
		g.log.Error("undecodable push dropped", "err", err)
		return
	}
	if p.Kind == pushq.KindPresence {
		frame := wire.Encode("friend-online", wire.FriendOnline{UserID: wire.ID(p.Presence.UserID), Online: p.Presence.Online})
		var n float64
		for _, uid := range p.Recipients {
			g.sockets.User(uid, func(c *wsnet.Conn) { _ = c.Send(frame); n++ })
		}
		g.m.out["friend-online"].Add(n)
		return
	}
	recipients, deliver := g.recent.fresh(p)
	if !deliver {
		g.m.duplicates.Inc()
		return
	}
	var skip uint64
	if id, ok := strings.CutPrefix(p.OriginConn, g.cfg.ID+"/"); ok {
		skip, _ = strconv.ParseUint(id, 10, 64)
	}
	frame := wire.Encode("new-message", wire.NewMessage{ConversationID: p.Message.ConversationID, Message: wire.MessageFromPush(p.Message)})
	w := fanWriter[*wsnet.Conn]{frame: frame, skip: skip, users: len(recipients)}
	if len(p.Recipients) == 0 {
		g.sockets.Each(w.add) // the world room (design §6)
	} else {
		for _, uid := range recipients {
			g.sockets.User(uid, w.add)
		}
	}
	g.m.out["new-message"].Add(float64(w.done()))
	if p.Message.CreatedAtMs > 0 {
		g.m.pushSeconds.Observe(time.Since(time.UnixMilli(p.Message.CreatedAtMs)).Seconds())
	}
}
