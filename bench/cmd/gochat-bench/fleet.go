package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gochat/gochat/bench/internal/wsc"
)

// peer is one harness socket and the account behind it.
type peer struct {
	idx   int
	acct  account
	conn  *wsc.Conn
	ready chan error // one value: nil on the connected frame, or why the socket failed
	once  sync.Once
}

func (p *peer) signal(err error) {
	p.once.Do(func() { p.ready <- err })
}

// frameFunc handles one server frame of a peer; data is only valid during the call.
type frameFunc func(p *peer, typ string, data json.RawMessage)

// fleet is a set of sockets on one frugal client (epoll loops, no goroutine per socket)
// whose frames go to one frameFunc.
type fleet struct {
	cl      *wsc.Client
	onFrame frameFunc
	// measuring is set once every socket is open: a close from then on is a failure of
	// the run, not of the setup.
	measuring  atomic.Bool
	lostSocket atomic.Int64
	errFrames  atomic.Int64
	badFrames  atomic.Int64
	lastErr    atomic.Pointer[string]
}

func newFleet(c *common, onFrame frameFunc) (*fleet, error) {
	f := &fleet{onFrame: onFrame}
	cl, err := wsc.New(wsc.Config{Loops: c.loops, SourceIPs: c.sourceIPs()}, f)
	if err != nil {
		return nil, err
	}
	f.cl = cl
	return f, nil
}

func (f *fleet) OnOpen(*wsc.Conn) {}

func (f *fleet) OnMessage(c *wsc.Conn, op byte, payload []byte) {
	if op != wsc.OpText {
		return
	}
	var fr struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if typ, data, ok := splitFrame(payload); ok {
		fr.Type, fr.Data = typ, data
	} else if err := json.Unmarshal(payload, &fr); err != nil {
		f.badFrames.Add(1)
		return
	}
	p := c.Data().(*peer)
	switch fr.Type {
	case "connected":
		p.signal(nil)
	case "error":
		f.errFrames.Add(1)
		s := string(payload)
		f.lastErr.Store(&s)
	}
	f.onFrame(p, fr.Type, fr.Data)
}

func (f *fleet) OnClose(c *wsc.Conn, err error) {
	p := c.Data().(*peer)
	if err == nil {
		err = errors.New("closed")
	}
	p.signal(err)
	if f.measuring.Load() {
		f.lostSocket.Add(1)
		s := err.Error()
		f.lastErr.Store(&s)
	}
}

// open connects one socket per account, spread over the gateways, at most inflight
// handshakes at a time, and waits for every connected frame.
func (f *fleet) open(ctx context.Context, c *common, accts []account, inflight int) ([]*peer, error) {
	peers := make([]*peer, len(accts))
	sem := make(chan struct{}, max(inflight, 1))
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for i, a := range accts {
		p := &peer{idx: i, acct: a, ready: make(chan error, 1)}
		peers[i] = p
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-errc:
			return nil, err
		}
		gw := c.gw[i%len(c.gw)]
		conn, err := f.cl.Dial(gw, gw.String(), "/ws?token="+url.QueryEscape(a.Token), p)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", gw, err)
		}
		p.conn = conn
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			select {
			case err := <-p.ready:
				if err != nil {
					select {
					case errc <- fmt.Errorf("socket %d to %s: %w", p.idx, gw, err):
					default:
					}
				}
			case <-ctx.Done():
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return nil, err
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.measuring.Store(true)
	return peers, nil
}

func (f *fleet) close() {
	f.measuring.Store(false)
	f.cl.Close()
}

// sendFrame is the contract's send-message frame.
type sendFrame struct {
	Type string   `json:"type"`
	Data sendData `json:"data"`
}

type sendData struct {
	ConversationID string `json:"conversationId"`
	Content        string `json:"content"`
	MessageType    string `json:"messageType"`
	TempMessageID  string `json:"tempMessageId"`
}

func (p *peer) send(conv, content, tempID string) error {
	b, err := json.Marshal(sendFrame{Type: "send-message", Data: sendData{ConversationID: conv, Content: content, MessageType: "text", TempMessageID: tempID}})
	if err != nil {
		return err
	}
	return p.conn.Send(wsc.OpText, b)
}

// ackData and pushData are the parts of message-ack and new-message the harness reads.
type ackData struct {
	TempMessageID string `json:"tempMessageId"`
}

type pushData struct {
	ConversationID string `json:"conversationId"`
	Message        struct {
		Content string `json:"content"`
	} `json:"message"`
}

// makeAccounts returns n accounts: minted tokens for synthetic user ids when a secret
// is known, guests created through the API otherwise.
func makeAccounts(ctx context.Context, c *common, n int, uidBase int64) ([]account, error) {
	accts := make([]account, n)
	if c.secret != "" {
		m, err := newMinter(c.secret)
		if err != nil {
			return nil, err
		}
		for i := range accts {
			uid := uidBase + int64(i)
			tok, err := m.token(uid)
			if err != nil {
				return nil, err
			}
			accts[i] = account{ID: fmt.Sprint(uid), Token: tok}
		}
		return accts, nil
	}
	return parallel(ctx, n, 32, func(ctx context.Context, i int) (account, error) {
		return c.apiFor(i).guest(ctx)
	})
}

// parallel runs fn for 0..n-1 with at most par at once and returns the results in order.
func parallel[T any](ctx context.Context, n, par int, fn func(ctx context.Context, i int) (T, error)) ([]T, error) {
	out := make([]T, n)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(par, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				v, err := fn(ctx, i)
				if err != nil {
					cancel(err)
					return
				}
				out[i] = v
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return out, nil
}

// synthetic user ids for minted tokens: far above snowflakes of this decade, and
// distinct per run so routes of an earlier run do not collide.
func syntheticBase() int64 { return 1<<62 + time.Now().UnixMilli()%(1<<40)*1000 }

// The harness shares the machine with the server, so reading frames must be cheap:
// splitFrame and stringField read the gateway's frames without a JSON decoder when
// they have the shape it writes ({"type":"…","data":…}, plain string values), and
// report !ok otherwise so the caller decodes properly.

// splitFrame returns a frame's type and raw data without copying.
func splitFrame(b []byte) (typ string, data []byte, ok bool) {
	const pre = `{"type":"`
	if !bytes.HasPrefix(b, []byte(pre)) || b[len(b)-1] != '}' {
		return "", nil, false
	}
	rest := b[len(pre):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 || bytes.IndexByte(rest[:end], '\\') >= 0 {
		return "", nil, false
	}
	typ, rest = string(rest[:end]), rest[end+1:]
	switch {
	case bytes.HasPrefix(rest, []byte(`,"data":`)):
		return typ, rest[len(`,"data":`) : len(rest)-1], true
	case len(rest) == 1: // no data
		return typ, nil, true
	}
	return "", nil, false
}

// stringField returns the first string value of "key" in a JSON object, when it holds
// no escapes.
func stringField(b []byte, key string) (string, bool) {
	pat := make([]byte, 0, len(key)+5)
	pat = append(append(append(pat, '"'), key...), `":"`...)
	i := bytes.Index(b, pat)
	if i < 0 {
		return "", false
	}
	v := b[i+len(pat):]
	end := bytes.IndexByte(v, '"')
	if end < 0 || bytes.IndexByte(v[:end], '\\') >= 0 {
		return "", false
	}
	return string(v[:end]), true
}

// readPush returns a new-message's conversation and content.
func readPush(data []byte) (conv, content string, ok bool) {
	conv, ok1 := stringField(data, "conversationId")
	content, ok2 := stringField(data, "content")
	if ok1 && ok2 {
		return conv, content, true
	}
	var d pushData
	if json.Unmarshal(data, &d) != nil {
		return "", "", false
	}
	return d.ConversationID, d.Message.Content, true
}

// readAck returns a message-ack's tempMessageId.
func readAck(data []byte) (string, bool) {
	if id, ok := stringField(data, "tempMessageId"); ok {
		return id, true
	}
	var a ackData
	if json.Unmarshal(data, &a) != nil {
		return "", false
	}
	return a.TempMessageID, true
}
