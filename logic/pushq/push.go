package pushq

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/bytedance/sonic"
)

// maxConversationIDLen matches conversations.id varchar(64).
const maxConversationIDLen = 64

// Message is the stored message a push carries, once per record. The int64
// ids travel as JSON strings so that JavaScript clients keep full precision
// when the gateway forwards the fields.
type Message struct {
	ID             int64  `json:"id,string"`
	ConversationID string `json:"conv"`
	Seq            int64  `json:"seq"`
	SenderID       int64  `json:"sender,string"`
	SenderName     string `json:"senderName"`
	Type           int8   `json:"type"`
	Content        string `json:"content"`
	ClientMsgID    string `json:"cmid,omitempty"`
	CreatedAtMs    int64  `json:"ts"`
}

// Kinds of push. The zero Kind is a message, so records written before kinds
// existed still decode.
const (
	KindMessage  = ""
	KindPresence = "presence"
)

// Presence says that a user's first socket opened (Online) or last socket closed.
type Presence struct {
	UserID int64 `json:"user,string"`
	Online bool  `json:"online"`
}

// Push is one record on a push topic: the message (or presence change) once,
// plus who gets it on the gateway that consumes the topic. Publish it keyed by
// Key so that one conversation's pushes stay in seq order on every gateway.
type Push struct {
	Kind     string    `json:"kind,omitempty"`
	Message  Message   `json:"msg,omitzero"`
	Presence *Presence `json:"presence,omitempty"`
	// Recipients are the user ids to deliver to on this gateway. Empty on the
	// broadcast topic means every socket of the gateway.
	Recipients []int64 `json:"to,omitempty"`
	// OriginConn is "<gatewayID>/<connID>" of the socket that sent the
	// message; that one socket is skipped (it already got message-ack).
	OriginConn string `json:"origin,omitempty"`
}

// Key is the partition key for this push: its conversation id (a presence
// change: the user id).
func (p Push) Key() []byte {
	if p.Kind == KindPresence && p.Presence != nil {
		return []byte(fmt.Sprint("user:", p.Presence.UserID))
	}
	return []byte(p.Message.ConversationID)
}

// Encode returns the wire form (JSON) of p after checking the contract, so a
// producer cannot publish what DecodePush would reject.
func (p Push) Encode() ([]byte, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	b, err := sonic.ConfigStd.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode push %d: %w", p.Message.ID, err)
	}
	return b, nil
}

// DecodePush parses a record value. Anything that is not a single JSON
// object satisfying the Push contract is an error wrapping ErrMalformed.
// Unknown fields are ignored, so producers can add fields ahead of consumers
// during a rolling upgrade.
func DecodePush(b []byte) (Push, error) {
	var p Push
	if err := sonic.ConfigStd.Unmarshal(b, &p); err != nil {
		return Push{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := p.validate(); err != nil {
		return Push{}, err
	}
	return p, nil
}

// validate checks what a gateway needs to deliver the push correctly.
func (p Push) validate() error {
	switch p.Kind {
	case KindMessage:
	case KindPresence:
		if p.Presence == nil || p.Presence.UserID <= 0 {
			return fmt.Errorf("%w: presence without a user", ErrMalformed)
		}
		if len(p.Recipients) == 0 {
			return fmt.Errorf("%w: presence without recipients", ErrMalformed)
		}
		return p.validateRecipients()
	default:
		return fmt.Errorf("%w: unknown kind %q", ErrMalformed, p.Kind)
	}
	m := p.Message
	switch {
	case m.ID <= 0:
		return fmt.Errorf("%w: message id %d", ErrMalformed, m.ID)
	case m.ConversationID == "" || len(m.ConversationID) > maxConversationIDLen:
		return fmt.Errorf("%w: conversation id %q", ErrMalformed, m.ConversationID)
	case m.Seq <= 0:
		return fmt.Errorf("%w: seq %d", ErrMalformed, m.Seq)
	}
	if err := p.validateRecipients(); err != nil {
		return err
	}
	if p.OriginConn != "" {
		gw, conn, ok := strings.Cut(p.OriginConn, "/")
		if !ok || ValidateGatewayID(gw) != nil || conn == "" {
			return fmt.Errorf("%w: origin %q (want <gatewayID>/<connID>)", ErrMalformed, p.OriginConn)
		}
	}
	return nil
}

func (p Push) validateRecipients() error {
	for _, uid := range p.Recipients {
		if uid <= 0 {
			return fmt.Errorf("%w: recipient %d", ErrMalformed, uid)
		}
	}
	return nil
}

// FanoutJob asks task to push a stored message to the members of a conversation too
// large to fan out on the send path (design.md §2 step 5). It is published on
// TopicJobs keyed by the conversation id; task pages through the members in batches
// and publishes per-gateway Push records, recording progress by message id so a
// redelivered job resumes instead of starting over.
type FanoutJob struct {
	Message    Message `json:"msg"`
	OriginConn string  `json:"origin,omitempty"`
	// Resend marks the job of a resend that found the message stored: its pushes
	// leave out the sender, whose sockets the first job serves.
	Resend bool `json:"resend,omitempty"`
}

// Key is the partition key: the conversation id (jobs of one conversation in order).
func (j FanoutJob) Key() []byte { return []byte(j.Message.ConversationID) }

// Encode checks the job and returns its wire form (JSON).
func (j FanoutJob) Encode() ([]byte, error) {
	if err := (Push{Message: j.Message, OriginConn: j.OriginConn}).validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("encode fan-out job %d: %w", j.Message.ID, err)
	}
	return b, nil
}

// DecodeFanoutJob parses a job; anything malformed wraps ErrMalformed.
func DecodeFanoutJob(b []byte) (FanoutJob, error) {
	var j FanoutJob
	if err := json.Unmarshal(b, &j); err != nil {
		return FanoutJob{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := (Push{Message: j.Message, OriginConn: j.OriginConn}).validate(); err != nil {
		return FanoutJob{}, err
	}
	return j, nil
}
