package logic

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/kitex/pkg/kerrors"

	"github.com/gochat/gochat/kitex_gen/base"
	"github.com/gochat/gochat/kitex_gen/logicapi"
	"github.com/gochat/gochat/kitex_gen/repoapi"
)

// Paging limits of contract.md §3.
const (
	defaultPageSize = 50
	maxPageSize     = 100
)

// visibleConversation loads a conversation the user may read and post in, and the
// user's read pointer. World is everyone's; other conversations are members only.
func (l *Logic) visibleConversation(ctx context.Context, userID int64, convID string) (*repoapi.Conversation, int64, error) {
	if !validConversationID(convID) {
		return nil, 0, bizErr(base.ErrCode_INVALID_CONVERSATION, "invalid conversation id")
	}
	resp, err := l.repo.GetConversation(ctx, &repoapi.GetConversationReq{ConversationId: convID, UserId: userID})
	if isCode(err, base.ErrCode_NOT_FOUND) {
		return nil, 0, bizErr(base.ErrCode_CONVERSATION_NOT_FOUND, "conversation not found")
	}
	if err != nil {
		return nil, 0, l.passthrough("get conversation", err)
	}
	if convID != WorldID {
		if err := l.checkMember(ctx, userID, convID); err != nil {
			return nil, 0, err
		}
	}
	return resp.Conversation, resp.ReadSeq, nil
}

// checkMember refuses users who are not members of a (non-world) conversation. The
// two members of a 1:1 conversation never change, so once the fan-out has learnt them
// the check needs no repo call; nor does a member of a group whose member list the
// fan-out read less than logic.member_cache_ttl ago (groupcache.go). A user missing
// from a cached list is asked about: they may have joined since.
func (l *Logic) checkMember(ctx context.Context, userID int64, convID string) error {
	if l.knownMember(convID, userID) {
		return nil
	}
	m, err := l.repo.GetMember(ctx, &repoapi.GetMemberReq{ConversationId: convID, UserId: userID})
	if err != nil {
		return l.passthrough("get member", err)
	}
	if !m.Found {
		return bizErr(base.ErrCode_NOT_MEMBER, "you are not a member of this conversation")
	}
	return nil
}

// knownMember reports whether the fan-out's caches say userID is a member of convID.
func (l *Logic) knownMember(convID string, userID int64) bool {
	if ids, ok := l.fanout.singles.get(convID); ok {
		return slices.Contains(ids, userID)
	}
	if ids, ok := l.fanout.groups.get(convID); ok {
		_, found := slices.BinarySearch(ids, userID)
		return found
	}
	return false
}

// ListConversations returns the user's conversations: world first, then by last message time.
func (l *Logic) ListConversations(ctx context.Context, req *logicapi.ListConversationsReq) (*logicapi.ListConversationsResp, error) {
	resp, err := l.repo.ListUserConversations(ctx, &repoapi.ListUserConversationsReq{UserId: req.UserId})
	if err != nil {
		return nil, l.passthrough("list user conversations", err)
	}
	var peerIDs []int64
	for _, uc := range resp.Conversations {
		if uc.PeerId != 0 {
			peerIDs = append(peerIDs, uc.PeerId)
		}
	}
	peers, err := l.users(ctx, peerIDs)
	if err != nil {
		return nil, err
	}
	out := make([]*logicapi.ConversationView, 0, len(resp.Conversations))
	for _, uc := range resp.Conversations {
		if uc.Conversation.Type == "single" && peers[uc.PeerId] == nil {
			continue // the other side is gone; nothing to show
		}
		out = append(out, &logicapi.ConversationView{
			Conversation: uc.Conversation,
			UnreadCount:  max(0, uc.Conversation.LastSeq-uc.ReadSeq),
			Peer:         peers[uc.PeerId],
		})
	}
	slices.SortStableFunc(out, func(a, b *logicapi.ConversationView) int {
		aw, bw := a.Conversation.Type == "world", b.Conversation.Type == "world"
		switch {
		case aw != bw:
			if aw {
				return -1
			}
			return 1
		default:
			return cmp.Or(
				cmp.Compare(b.Conversation.LastMessageAtMs, a.Conversation.LastMessageAtMs),
				strings.Compare(a.Conversation.Id, b.Conversation.Id),
			)
		}
	})
	return &logicapi.ListConversationsResp{Conversations: out}, nil
}

// seqWindow turns the paging request into an inclusive seq range. Seqs are gap-free
// from 1 to lastSeq, so a page is pure arithmetic.
func seqWindow(req *logicapi.ListMessagesReq, lastSeq int64) (lo, hi int64, hasMore bool) {
	size := int64(req.Size)
	if size <= 0 {
		size = defaultPageSize
	}
	size = min(size, maxPageSize)
	switch {
	case req.AfterSeq > 0 || req.Page == 0:
		lo, hi = req.AfterSeq+1, min(lastSeq, req.AfterSeq+size)
		return lo, hi, hi < lastSeq
	case req.BeforeSeq > 0:
		hi = min(req.BeforeSeq-1, lastSeq)
	default:
		page := int64(max(req.Page, 1))
		hi = lastSeq - (page-1)*size
	}
	if hi < 1 {
		return 1, 0, false
	}
	lo = max(1, hi-size+1)
	return lo, hi, lo > 1
}

// ListMessages returns one page of history, oldest→newest within the page.
func (l *Logic) ListMessages(ctx context.Context, req *logicapi.ListMessagesReq) (*logicapi.ListMessagesResp, error) {
	if req.Page < 0 || req.Size < 0 || req.BeforeSeq < 0 || req.AfterSeq < 0 {
		return nil, bizErr(base.ErrCode_BAD_REQUEST, "page, size, beforeSeq and afterSeq must not be negative")
	}
	conv, _, err := l.visibleConversation(ctx, req.UserId, req.ConversationId)
	if err != nil {
		return nil, err
	}
	last := conv.LastSeq
	lo, hi, hasMore := seqWindow(req, last)
	resp := &logicapi.ListMessagesResp{Total: last, HasMore: hasMore, Messages: []*repoapi.Message{}}
	if lo > hi {
		return resp, nil
	}
	ms, err := l.repo.ListMessages(ctx, &repoapi.ListMessagesReq{ConversationId: req.ConversationId, FromSeq: lo, ToSeq: hi})
	if err != nil {
		return nil, l.passthrough("list messages", err)
	}
	resp.Messages = ms.Messages
	return resp, nil
}

// MarkRead moves the caller's read pointer (0 = to the latest message).
func (l *Logic) MarkRead(ctx context.Context, req *logicapi.MarkReadReq) (*logicapi.MarkReadResp, error) {
	if req.Seq < 0 {
		return nil, bizErr(base.ErrCode_BAD_REQUEST, "seqId must not be negative")
	}
	if _, _, err := l.visibleConversation(ctx, req.UserId, req.ConversationId); err != nil {
		return nil, err
	}
	resp, err := l.repo.SetReadSeq(ctx, &repoapi.SetReadSeqReq{ConversationId: req.ConversationId, UserId: req.UserId, Seq: req.Seq})
	if err != nil {
		return nil, l.passthrough("set read seq", err)
	}
	return &logicapi.MarkReadResp{ReadSeq: resp.ReadSeq}, nil
}

// Message types as stored (contract.md §2).
const (
	typeText int8 = 1
	typeFile int8 = 3
)

// maxClientMsgID bounds the idempotency key (the column is varchar(64)).
const maxClientMsgID = 64

// Send is the send pipeline: check, store durably (repo de-duplicates on the client
// message id and assigns the seq), then queue the fan-out and return for the ack.
func (l *Logic) Send(ctx context.Context, req *logicapi.SendReq) (*logicapi.SendResp, error) {
	start := time.Now()
	m, err := l.prepareSend(ctx, req)
	if err != nil {
		return nil, err
	}
	convs := []string{m.ConversationId}
	l.fanout.appends.begin(convs)
	defer l.fanout.appends.end(convs)
	resp, err := l.repo.Append(ctx, &repoapi.AppendReq{Message: m})
	if err != nil {
		return nil, l.passthrough("append", err)
	}
	return l.finishSend(start, req, resp), nil
}

// prepareSend is Send's check: the message's own rules, the sender's membership and
// name. It returns the message to append, or the error Send fails with.
func (l *Logic) prepareSend(ctx context.Context, req *logicapi.SendReq) (*repoapi.Message, error) {
	if err := l.checkMessage(req); err != nil {
		return nil, err
	}
	if req.ConversationId != WorldID {
		// Membership implies the conversation exists. Only a refused sender pays for
		// telling "no such conversation" (404) from "not a member" (403).
		if err := l.checkMember(ctx, req.UserId, req.ConversationId); err != nil {
			if isCode(err, base.ErrCode_NOT_MEMBER) {
				if _, _, verr := l.visibleConversation(ctx, req.UserId, req.ConversationId); isCode(verr, base.ErrCode_CONVERSATION_NOT_FOUND) {
					return nil, verr
				}
			}
			return nil, err
		}
	}
	name, err := l.senderName(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	return toAppend(req, name), nil
}

// prepareCached is prepareSend without calling repo: decided is false when the
// membership or the name is not cached, and prepareSend must run.
func (l *Logic) prepareCached(req *logicapi.SendReq) (m *repoapi.Message, decided bool, err error) {
	if err := l.checkMessage(req); err != nil {
		return nil, true, err
	}
	if req.ConversationId != WorldID && !l.knownMember(req.ConversationId, req.UserId) {
		return nil, false, nil
	}
	name, ok := l.names.get(req.UserId)
	if !ok {
		return nil, false, nil
	}
	return toAppend(req, name), true, nil
}

// checkMessage is Send's check of the message's own rules.
func (l *Logic) checkMessage(req *logicapi.SendReq) error {
	switch {
	case req.Type < typeText || req.Type > typeFile:
		return bizErr(base.ErrCode_INVALID_MESSAGE_TYPE, "type must be text, image or file")
	case strings.TrimSpace(req.Content) == "":
		return bizErr(base.ErrCode_CONTENT_EMPTY, "message content is empty")
	case len(req.Content) > l.cfg.MaxContent:
		return bizErr(base.ErrCode_CONTENT_TOO_LONG, "message content is too long")
	case len(req.ClientMsgId) > maxClientMsgID:
		return bizErr(base.ErrCode_INVALID_CLIENT_MSG_ID, "client message id is longer than 64 bytes")
	case !validConversationID(req.ConversationId):
		return bizErr(base.ErrCode_INVALID_CONVERSATION, "invalid conversation id")
	}
	return nil
}

// toAppend is the message to append for a checked send.
func toAppend(req *logicapi.SendReq, name string) *repoapi.Message {
	return &repoapi.Message{
		ConversationId: req.ConversationId, SenderId: req.UserId, SenderName: name,
		Type: req.Type, Content: req.Content, ClientMsgId: req.ClientMsgId,
	}
}

// finishSend follows a stored message (start: when the send began): it queues the
// fan-out and returns the ack.
func (l *Logic) finishSend(start time.Time, req *logicapi.SendReq, resp *repoapi.AppendResp) *logicapi.SendResp {
	jobs := []pushJob{l.finishJob(start, req, resp)}
	l.fanout.appends.queued(jobs)
	l.fanout.enqueue(jobs[0])
	return &logicapi.SendResp{Message: resp.Message, Duplicate: resp.Duplicate}
}

// finishJob records a stored send's time and returns its push, for the caller to
// queue. A duplicate is pushed again too: the first attempt may have been stored by
// a logic that died before publishing. Gateways drop a delivery they already made
// (same message, same recipient), so a resend still reaches each user once; its
// push leaves out the sender, whose sockets the first push serves (pushJob.dup).
func (l *Logic) finishJob(start time.Time, req *logicapi.SendReq, resp *repoapi.AppendResp) pushJob {
	l.sendSeconds.Observe(sinceSeconds(start))
	j := messageJob(resp.Message, req.OriginConn)
	j.dup = resp.Duplicate
	return j
}

// prepareWorkers bounds how many of a SendBatch's items are checked at once (a check
// may call repo for membership or the sender's name).
const prepareWorkers = 16

// SendBatch is Send for many messages (a gateway's send backlog): each item is checked
// as Send checks it, and the accepted ones are stored in one repo.AppendBatch, then
// fanned out as Send does. An item's failure is its own outcome, with the code and
// message Send would have failed with; a failed AppendBatch call fails the batch.
func (l *Logic) SendBatch(ctx context.Context, req *logicapi.SendBatchReq) (*logicapi.SendBatchResp, error) {
	start := time.Now()
	if len(req.Items) > maxBatch {
		return nil, bizErr(base.ErrCode_BAD_REQUEST, "at most 1000 messages at once")
	}
	results := make([]*logicapi.SendOutcome, len(req.Items))
	msgs := make([]*repoapi.Message, len(req.Items))
	// Items whose sender's membership and name are cached are checked here; only
	// the rest, which call repo, go to parallel workers (a goroutine per worker per
	// batch was most of a batch's check, and each waited its turn to run).
	var uncached []int
	for i, item := range req.Items {
		if item == nil {
			results[i] = &logicapi.SendOutcome{ErrorCode: base.ErrCode_BAD_REQUEST, Message: "message required"}
			continue
		}
		m, decided, err := l.prepareCached(item)
		switch {
		case !decided:
			uncached = append(uncached, i)
		case err != nil:
			results[i] = l.sendFailure("prepare send", err)
		default:
			msgs[i] = m
		}
	}
	var next atomic.Int64
	prepare := func() {
		for {
			k := int(next.Add(1) - 1)
			if k >= len(uncached) {
				return
			}
			i := uncached[k]
			m, err := l.prepareSend(ctx, req.Items[i])
			if err != nil {
				results[i] = l.sendFailure("prepare send", err)
				continue
			}
			msgs[i] = m
		}
	}
	// This goroutine is one of the workers: one uncached item needs no other.
	var wg sync.WaitGroup
	for range min(prepareWorkers, len(uncached)) - 1 {
		wg.Go(prepare)
	}
	prepare()
	wg.Wait()

	accepted := make([]int, 0, len(req.Items)) // indexes of the items to append
	batch := make([]*repoapi.Message, 0, len(req.Items))
	for i, m := range msgs {
		if m != nil {
			accepted = append(accepted, i)
			batch = append(batch, m)
		}
	}
	if len(batch) == 0 {
		return &logicapi.SendBatchResp{Results: results}, nil
	}
	// The members of 1:1 conversations are known from the fan-out's cache: repo
	// answers with their routes, and those pushes skip the fan-out's GetRoutes.
	known, routeUsers := l.fanout.knownRecipients(batch)
	convs := make([]string, 0, len(batch))
	for _, m := range batch {
		convs = append(convs, m.ConversationId)
	}
	slices.Sort(convs)
	convs = slices.Compact(convs)
	l.fanout.appends.begin(convs)
	defer l.fanout.appends.end(convs) // after the pushes are queued, below
	resp, err := l.repo.AppendBatch(ctx, &repoapi.AppendBatchReq{Messages: batch, RouteUsers: routeUsers})
	if err != nil {
		return nil, l.passthrough("append batch", err)
	}
	if len(resp.Results) != len(batch) {
		l.log.Error("repo answered an append batch of the wrong size", "want", len(batch), "got", len(resp.Results))
		return nil, bizErr(base.ErrCode_UNAVAILABLE, "service temporarily unavailable")
	}
	stored := make([]int, 0, len(accepted)) // indexes of the items stored (or found stored)
	appended := make([]*repoapi.AppendResp, len(req.Items))
	members := make([][]int64, len(req.Items)) // by item: members whose routes the answer carries
	for k, i := range accepted {
		switch r := resp.Results[k]; {
		case r == nil || (r.ErrorCode == base.ErrCode_OK && (r.Resp == nil || r.Resp.Message == nil)):
			l.log.Error("repo answered an append without a message", "conversation", batch[k].ConversationId)
			results[i] = &logicapi.SendOutcome{ErrorCode: base.ErrCode_UNAVAILABLE, Message: "service temporarily unavailable"}
		case r.ErrorCode != base.ErrCode_OK:
			// What Send's passthrough returns for repo's biz error: the error itself.
			results[i] = &logicapi.SendOutcome{ErrorCode: r.ErrorCode, Message: r.Message}
		default:
			stored = append(stored, i)
			appended[i] = r.Resp
			if resp.Routes != nil {
				members[i] = known[k]
			}
		}
	}
	// The batch's appends returned together, but a conversation's items need not be
	// in seq order in the batch: queue their pushes by seq, as single sends returning
	// one by one would have, and a message's first store before its duplicates (the
	// first push's origin is the socket the gateways skip).
	slices.SortStableFunc(stored, func(a, b int) int {
		ra, rb := appended[a], appended[b]
		return cmp.Or(cmp.Compare(ra.Message.Seq, rb.Message.Seq), compareBool(ra.Duplicate, rb.Duplicate))
	})
	jobs := make([]pushJob, len(stored))
	for k, i := range stored {
		jobs[k] = l.finishJob(start, req.Items[i], appended[i])
		if members[i] != nil {
			jobs[k].recipients, jobs[k].routes = members[i], resp.Routes
		}
		results[i] = &logicapi.SendOutcome{Resp: &logicapi.SendResp{Message: appended[i].Message, Duplicate: appended[i].Duplicate}}
	}
	l.fanout.appends.queued(jobs)
	for _, j := range jobs {
		l.fanout.enqueue(j)
	}
	return &logicapi.SendBatchResp{Results: results}, nil
}

// compareBool orders false before true.
func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	default:
		return -1
	}
}

// sendFailure is the outcome of an item whose Send would have failed with err. Send's
// errors are biz status errors (passthrough turned anything else into UNAVAILABLE).
func (l *Logic) sendFailure(op string, err error) *logicapi.SendOutcome {
	if bse, ok := kerrors.FromBizStatusError(err); ok && bse.BizStatusCode() != int32(base.ErrCode_OK) {
		return &logicapi.SendOutcome{ErrorCode: base.ErrCode(bse.BizStatusCode()), Message: bse.BizMessage()}
	}
	l.log.Error("send failed", "op", op, "err", err)
	return &logicapi.SendOutcome{ErrorCode: base.ErrCode_UNAVAILABLE, Message: "service temporarily unavailable"}
}
