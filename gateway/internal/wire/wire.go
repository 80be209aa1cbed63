// Package wire holds the JSON shapes of contract.md: the HTTP envelope, the objects
// (User, Message, Conversation) and the WebSocket frames. Ids are strings on the wire,
// times are RFC 3339 UTC with milliseconds.
package wire

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bytedance/sonic"

	"github.com/gochat/gochat/kitex_gen/logicapi"
	"github.com/gochat/gochat/kitex_gen/repoapi"
	"github.com/gochat/gochat/logic/pushq"
)

// TimeLayout is RFC 3339 in UTC with exactly three fractional digits.
const TimeLayout = "2006-01-02T15:04:05.000Z"

// Time formats unix milliseconds; 0 is "". Every ack and push carries one, so the
// digits are written directly: Format interprets TimeLayout on every call (0.8% of
// the all-mode process under send load). Years outside 0000–9999 take Format's
// path, which writes them as it does.
func Time(ms int64) string {
	if ms == 0 {
		return ""
	}
	t := time.UnixMilli(ms).UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.Format(TimeLayout)
	}
	hour, minute, sec := t.Clock()
	var b [len(TimeLayout)]byte
	digits(b[0:4], year)
	b[4] = '-'
	digits(b[5:7], int(month))
	b[7] = '-'
	digits(b[8:10], day)
	b[10] = 'T'
	digits(b[11:13], hour)
	b[13] = ':'
	digits(b[14:16], minute)
	b[16] = ':'
	digits(b[17:19], sec)
	b[19] = '.'
	digits(b[20:23], t.Nanosecond()/int(time.Millisecond))
	b[23] = 'Z'
	return string(b[:])
}

// digits writes v into b as len(b) decimal digits, zero-padded; v < 10^len(b).
func digits(b []byte, v int) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
}

// ID formats a snowflake as a JSON string value.
func ID(id int64) string { return strconv.FormatInt(id, 10) }

// User is contract.md's User object.
type User struct {
	UserID   string `json:"userId"`
	Username string `json:"username"`
	Avatar   string `json:"avatar"`
	IsGuest  bool   `json:"isGuest"`
}

// UserFrom converts the RPC type.
func UserFrom(u *repoapi.User) User {
	return User{UserID: ID(u.Id), Username: u.Username, Avatar: u.Avatar, IsGuest: u.IsGuest}
}

// Message is contract.md's Message object.
type Message struct {
	MessageID      string `json:"messageId"`
	ConversationID string `json:"conversationId"`
	SenderID       string `json:"senderId"`
	SenderName     string `json:"senderName"`
	Content        string `json:"content"`
	Type           string `json:"type"`
	SeqID          int64  `json:"seqId"`
	SendTime       string `json:"sendTime"`
	ClientMsgID    string `json:"clientMsgId,omitempty"`
	Status         string `json:"status,omitempty"`
}

var typeNames = [...]string{1: "text", 2: "image", 3: "file"}

// TypeName maps the stored message type to its wire name.
func TypeName(t int8) string {
	if t >= 1 && int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "text"
}

// ParseType accepts "text"/"image"/"file" or 1/2/3 (as a JSON number or string);
// an absent value is text. ok is false for anything else.
func ParseType(raw json.RawMessage) (t int8, ok bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return 1, true
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch s {
		case "", "text", "1":
			return 1, true
		case "image", "2":
			return 2, true
		case "file", "3":
			return 3, true
		}
		return 0, false
	}
	var n int
	if json.Unmarshal(raw, &n) == nil && n >= 1 && n <= 3 {
		return int8(n), true
	}
	return 0, false
}

// generatedKeyPrefix marks idempotency keys the gateway made up for a client that
// sent no temp id; they are an implementation detail and never shown to clients.
const generatedKeyPrefix = "gw~"

// IdempotencyKey is the client message id to store for a send: the client's own temp
// id, or a fresh random one. With a key on every send, a retried RPC (logic or repo
// failing over) can never store a message twice.
func IdempotencyKey(tempID string) string {
	if tempID != "" {
		return tempID
	}
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return generatedKeyPrefix + hex.EncodeToString(b[:])
}

func clientMsgID(stored string) string {
	if strings.HasPrefix(stored, generatedKeyPrefix) {
		return ""
	}
	return stored
}

// MessageFrom converts the RPC type.
func MessageFrom(m *repoapi.Message) Message {
	return Message{
		MessageID: ID(m.Id), ConversationID: m.ConversationId, SenderID: ID(m.SenderId), SenderName: m.SenderName,
		Content: m.Content, Type: TypeName(m.Type), SeqID: m.Seq, SendTime: Time(m.CreatedAtMs),
		ClientMsgID: clientMsgID(m.ClientMsgId), Status: "sent",
	}
}

// MessageFromPush converts a bus record.
func MessageFromPush(m pushq.Message) Message {
	return Message{
		MessageID: ID(m.ID), ConversationID: m.ConversationID, SenderID: ID(m.SenderID), SenderName: m.SenderName,
		Content: m.Content, Type: TypeName(m.Type), SeqID: m.Seq, SendTime: Time(m.CreatedAtMs),
		ClientMsgID: clientMsgID(m.ClientMsgID), Status: "sent",
	}
}

// Conversation is contract.md's Conversation object.
type Conversation struct {
	ConversationID  string `json:"conversationId"`
	Type            string `json:"type"`
	Target          any    `json:"target"`
	LastMessage     string `json:"lastMessage"`
	LastMessageTime string `json:"lastMessageTime"`
	LastMessageSeq  int64  `json:"lastMessageSeq"`
	UnreadCount     int64  `json:"unreadCount"`
}

// WorldTarget is the target object of the world conversation.
type WorldTarget struct {
	GroupID     string `json:"groupId"`
	GroupName   string `json:"groupName"`
	Avatar      string `json:"avatar"`
	Description string `json:"description"`
	MemberCount int32  `json:"memberCount"`
}

// ConversationFrom converts the RPC view.
func ConversationFrom(v *logicapi.ConversationView) Conversation {
	c := v.Conversation
	out := Conversation{
		ConversationID: c.Id, Type: c.Type, LastMessage: c.LastMessagePreview,
		LastMessageTime: Time(c.LastMessageAtMs), LastMessageSeq: c.LastSeq, UnreadCount: v.UnreadCount,
	}
	switch c.Type {
	case "world":
		out.Target = WorldTarget{GroupID: "world", GroupName: "World", Avatar: c.Avatar,
			Description: "The public room: everyone is here.", MemberCount: v.OnlineCount}
	case "single":
		if p := v.Peer; p != nil {
			out.Target = Peer{UserID: ID(p.Id), Username: p.Username, Avatar: p.Avatar}
		} else {
			out.Target = Peer{}
		}
	case "group":
		out.Target = GroupTarget{GroupID: GroupID(c.Id), GroupName: c.Name, Avatar: c.Avatar, MemberCount: c.MemberCount}
	default:
		out.Target = map[string]any{}
	}
	return out
}

// Frame is every WebSocket frame: {"type": "...", "data": {...}}.
type Frame struct {
	Type string `json:"type"`
	Data any    `json:"data,omitempty"`
}

// InFrame is a client frame before its data is decoded.
type InFrame struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// Flex is a JSON value the client may send as a string or a number; it keeps the
// string form (ids, temp ids).
type Flex string

// UnmarshalJSON accepts a string, a number or null.
func (f *Flex) UnmarshalJSON(b []byte) error {
	// Fast path for what clients send, a plain string: every send-message carries
	// one or more temp ids, and a decoder call per id was a third of the frame's
	// decoding. Anything with an escape, a control byte or invalid UTF-8 takes the
	// decoder's path, which defines the result.
	if n := len(b); n >= 2 && b[0] == '"' && b[n-1] == '"' && plain(b[1:n-1]) {
		*f = Flex(b[1 : n-1])
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*f = Flex(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	*f = Flex(n.String())
	return nil
}

// plain reports whether b is the body of a JSON string that decodes to itself: no
// escape, quote or control byte, and valid UTF-8.
func plain(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == '\\' || c == '"' {
			return false
		}
	}
	return utf8.Valid(b)
}

// SendMessage is the data of a send-message frame. The temp id has three accepted names.
type SendMessage struct {
	ConversationID string          `json:"conversationId"`
	Content        *string         `json:"content"`
	MessageType    json.RawMessage `json:"messageType"`
	Type           json.RawMessage `json:"type"`
	TempMessageID  Flex            `json:"tempMessageId"`
	ClientMsgID    Flex            `json:"clientMsgId"`
	ClientMsgID2   Flex            `json:"client_msg_id"`
}

// TempID returns whichever temp id alias the client used.
func (s SendMessage) TempID() string {
	switch {
	case s.TempMessageID != "":
		return string(s.TempMessageID)
	case s.ClientMsgID != "":
		return string(s.ClientMsgID)
	default:
		return string(s.ClientMsgID2)
	}
}

// Ack is the data of a message-ack frame.
type Ack struct {
	TempMessageID  string `json:"tempMessageId"`
	ClientMsgID    string `json:"clientMsgId"`
	MessageID      string `json:"messageId"`
	ConversationID string `json:"conversationId"`
	SeqID          int64  `json:"seqId"`
	SendTime       string `json:"sendTime"`
}

// Error is the data of an error frame.
type Error struct {
	Code          string `json:"code"`
	Message       string `json:"message"`
	TempMessageID string `json:"tempMessageId,omitempty"`
}

// NewMessage is the data of a new-message frame.
type NewMessage struct {
	ConversationID string  `json:"conversationId"`
	Message        Message `json:"message"`
}

// Sync is the data of a sync frame.
type Sync struct {
	ConversationID string `json:"conversationId"`
	AfterSeq       int64  `json:"afterSeq"`
	Limit          int32  `json:"limit"`
}

// SyncResult is the data of a sync-result frame.
type SyncResult struct {
	ConversationID string    `json:"conversationId"`
	Messages       []Message `json:"messages"`
	HasMore        bool      `json:"hasMore"`
}

// Read is the data of a read frame.
type Read struct {
	ConversationID string `json:"conversationId"`
	SeqID          int64  `json:"seqId"`
}

// Connected is the data of the connected frame.
type Connected struct {
	UserID       string `json:"userId"`
	ConnectionID string `json:"connectionId"`
	ServerTime   string `json:"serverTime"`
}

// Encode marshals a frame; the result may be shared between sockets.
func Encode(typ string, data any) []byte {
	b, err := sonic.ConfigStd.Marshal(Frame{Type: typ, Data: data})
	if err != nil {
		// Only programmer errors (unsupported types) land here.
		panic("wire: encode frame: " + err.Error())
	}
	return b
}

// FriendOnline is the data of a friend-online frame.
type FriendOnline struct {
	UserID string `json:"userId"`
	Online bool   `json:"online"`
}

// Peer is the target of a single conversation.
type Peer struct {
	UserID   string `json:"userId"`
	Username string `json:"username"`
	Avatar   string `json:"avatar"`
}

// GroupTarget is the target of a group conversation.
type GroupTarget struct {
	GroupID     string `json:"groupId"`
	GroupName   string `json:"groupName"`
	Avatar      string `json:"avatar"`
	MemberCount int32  `json:"memberCount"`
}

// GroupMember is one member in group info.
type GroupMember struct {
	UserID   string `json:"userId"`
	Username string `json:"username"`
	Avatar   string `json:"avatar"`
	Role     string `json:"role"`
}

// Group is the group info object of GET /groups/{groupId}.
type Group struct {
	GroupID     string        `json:"groupId"`
	GroupName   string        `json:"groupName"`
	Avatar      string        `json:"avatar"`
	OwnerID     string        `json:"ownerId"`
	MemberCount int32         `json:"memberCount"`
	Members     []GroupMember `json:"members"`
}

// GroupID extracts the numeric group id of a group conversation id.
func GroupID(convID string) string {
	id, _ := strings.CutPrefix(convID, "group_")
	return id
}

// GroupFrom converts the RPC type.
func GroupFrom(g *logicapi.GroupInfo) Group {
	c := g.Conversation
	out := Group{
		GroupID: GroupID(c.Id), GroupName: c.Name, Avatar: c.Avatar, OwnerID: ID(c.OwnerId),
		MemberCount: c.MemberCount, Members: make([]GroupMember, 0, len(g.Members)),
	}
	for _, m := range g.Members {
		out.Members = append(out.Members, GroupMember{UserID: ID(m.User.Id), Username: m.User.Username, Avatar: m.User.Avatar, Role: m.Role})
	}
	return out
}
