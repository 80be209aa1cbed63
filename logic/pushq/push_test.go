package pushq

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func validPush() Push {
	return Push{
		Message: Message{
			ID:             1234567890123456789,
			ConversationID: "group_42",
			Seq:            7,
			SenderID:       9007199254740993, // above 2^53: must survive as a string
			SenderName:     "alice",
			Type:           1,
			Content:        "hi \"there\" ✓",
			ClientMsgID:    "c-1",
			CreatedAtMs:    1700000000000,
		},
		Recipients: []int64{2, 3},
		OriginConn: "gw-1/17",
	}
}

func TestPushRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   Push
	}{
		{name: "full", in: validPush()},
		{name: "broadcast", in: Push{Message: Message{ID: 1, ConversationID: "world", Seq: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.in.Encode()
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			got, err := DecodePush(b)
			if err != nil {
				t.Fatalf("DecodePush(%s): %v", b, err)
			}
			if !reflect.DeepEqual(got, tt.in) {
				t.Errorf("round trip = %+v, want %+v", got, tt.in)
			}
		})
	}
}

func TestPushWireForm(t *testing.T) {
	b, err := validPush().Encode()
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	for _, want := range []string{`"msg":{`, `"id":"1234567890123456789"`, `"sender":"9007199254740993"`, `"conv":"group_42"`, `"to":[2,3]`, `"origin":"gw-1/17"`, `"cmid":"c-1"`, `"ts":1700000000000`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("encoded %s lacks %s", b, want)
		}
	}
	b, err = Push{Message: Message{ID: 1, ConversationID: "world", Seq: 1}}.Encode()
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	for _, absent := range []string{`"to"`, `"origin"`, `"cmid"`} {
		if strings.Contains(string(b), absent) {
			t.Errorf("encoded %s has empty optional field %s", b, absent)
		}
	}
}

func TestDecodePushRejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ``},
		{"garbage", `not json`},
		{"null", `null`},
		{"empty object", `{}`},
		{"array", `[1,2]`},
		{"truncated", `{"msg":{"id":"1","conv":"world","seq":1}`},
		{"trailing data", `{"msg":{"id":"1","conv":"world","seq":1}} {}`},
		{"id as number", `{"msg":{"id":1,"conv":"world","seq":1}}`},
		{"id zero", `{"msg":{"id":"0","conv":"world","seq":1}}`},
		{"no conversation", `{"msg":{"id":"1","seq":1}}`},
		{"seq zero", `{"msg":{"id":"1","conv":"world","seq":0}}`},
		{"wrong type", `{"msg":{"id":"1","conv":"world","seq":"one"}}`},
		{"bad recipient", `{"msg":{"id":"1","conv":"world","seq":1},"to":[0]}`},
		{"origin without conn", `{"msg":{"id":"1","conv":"world","seq":1},"origin":"gw-1"}`},
		{"origin bad gateway", `{"msg":{"id":"1","conv":"world","seq":1},"origin":"g w/1"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := DecodePush([]byte(tt.in))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodePush(%q) = %+v, %v; want ErrMalformed", tt.in, p, err)
			}
		})
	}
}

func TestDecodePushIgnoresUnknownFields(t *testing.T) {
	p, err := DecodePush([]byte(`{"msg":{"id":"5","conv":"world","seq":3,"future":true},"extra":1}`))
	if err != nil {
		t.Fatalf("DecodePush: %v", err)
	}
	if p.Message.ID != 5 || p.Message.Seq != 3 {
		t.Errorf("got %+v", p)
	}
}

func TestEncodeRejectsInvalid(t *testing.T) {
	p := validPush()
	p.Message.Seq = 0
	if _, err := p.Encode(); !errors.Is(err, ErrMalformed) {
		t.Errorf("Encode(seq 0) err = %v, want ErrMalformed", err)
	}
}

func TestPushKeyIsConversation(t *testing.T) {
	if got := string(validPush().Key()); got != "group_42" {
		t.Errorf("Key = %q, want group_42", got)
	}
}

func TestGatewayTopic(t *testing.T) {
	tests := []struct {
		id   string
		want string
	}{
		{id: "gw-1", want: "gochat.push.gw.gw-1"},
		{id: "a.B_9-z", want: "gochat.push.gw.a.B_9-z"},
		{id: strings.Repeat("x", 100), want: "gochat.push.gw." + strings.Repeat("x", 100)},
		{id: "", want: ""},
		{id: strings.Repeat("x", 101), want: ""},
		{id: "a/b", want: ""},
		{id: "a b", want: ""},
		{id: "gw-ä", want: ""},
	}
	for _, tt := range tests {
		if got := GatewayTopic(tt.id); got != tt.want {
			t.Errorf("GatewayTopic(%q) = %q, want %q", tt.id, got, tt.want)
		}
		if err := ValidateGatewayID(tt.id); (err == nil) != (tt.want != "") {
			t.Errorf("ValidateGatewayID(%q) = %v", tt.id, err)
		}
	}
}
