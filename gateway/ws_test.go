package gateway

import (
	"errors"
	"log/slog"
	"testing"

	"github.com/cloudwego/kitex/pkg/kerrors"

	"github.com/gochat/gochat/kitex_gen/base"
	"github.com/gochat/gochat/kitex_gen/logicapi"
	"github.com/gochat/gochat/kitex_gen/repoapi"
)

// TestSendOutcome: a batched send's outcome becomes the same error frame (code and
// message) as the error the single logic.Send fails with, and a failed batch call
// is handled as a failed single call.
func TestSendOutcome(t *testing.T) {
	g := &Gateway{log: slog.New(slog.DiscardHandler)}
	for _, c := range []struct {
		code base.ErrCode
		msg  string
	}{
		{base.ErrCode_CONTENT_TOO_LONG, "message content is too long"},
		{base.ErrCode_NOT_MEMBER, "you are not a member of this conversation"},
		{base.ErrCode_CONVERSATION_NOT_FOUND, "conversation not found"},
		{base.ErrCode_UNAVAILABLE, "service temporarily unavailable"},
		{base.ErrCode_INTERNAL, "internal error: details"},
	} {
		single := g.classify("send", kerrors.NewBizStatusError(int32(c.code), c.msg))
		m, err := sendOutcome(&logicapi.SendOutcome{ErrorCode: c.code, Message: c.msg}, nil)
		if m != nil || err == nil {
			t.Fatalf("outcome %s = %v, %v; want an error", c.code, m, err)
		}
		if got := g.classify("send", err); *got != *single {
			t.Errorf("outcome %s classified %+v, single Send's error %+v", c.code, got, single)
		}
	}
	rpc := errors.New("connection reset")
	if _, err := sendOutcome(nil, rpc); err != rpc {
		t.Errorf("batch call error = %v, want %v", err, rpc)
	}
	for _, bad := range []*logicapi.SendOutcome{nil, {}, {Resp: &logicapi.SendResp{}}} {
		if _, err := sendOutcome(bad, nil); err == nil || g.classify("send", err).code != base.ErrCode_UNAVAILABLE.String() {
			t.Errorf("outcome %+v err = %v, want UNAVAILABLE", bad, err)
		}
	}
	want := &repoapi.Message{Id: 7}
	if m, err := sendOutcome(&logicapi.SendOutcome{Resp: &logicapi.SendResp{Message: want}}, nil); err != nil || m != want {
		t.Errorf("ok outcome = %v, %v", m, err)
	}
}
