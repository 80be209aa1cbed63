package gateway

import (
	"net/http"
	"testing"

	"github.com/gochat/gochat/kitex_gen/base"
)

// Every shared error code maps to the status contract.md gives its class.
func TestStatusOf(t *testing.T) {
	want := map[base.ErrCode]int{
		base.ErrCode_BAD_REQUEST: 400, base.ErrCode_INVALID_USERNAME: 400, base.ErrCode_INVALID_PASSWORD: 400,
		base.ErrCode_CONTENT_EMPTY: 400, base.ErrCode_CONTENT_TOO_LONG: 400, base.ErrCode_INVALID_CONVERSATION: 400,
		base.ErrCode_INVALID_MESSAGE_TYPE: 400, base.ErrCode_INVALID_CLIENT_MSG_ID: 400,
		base.ErrCode_UNAUTHORIZED: 401, base.ErrCode_INVALID_CREDENTIALS: 401,
		base.ErrCode_FORBIDDEN: 403, base.ErrCode_NOT_MEMBER: 403, base.ErrCode_GUEST_NOT_ALLOWED: 403,
		base.ErrCode_NOT_FOUND: 404, base.ErrCode_USER_NOT_FOUND: 404, base.ErrCode_CONVERSATION_NOT_FOUND: 404,
		base.ErrCode_CONFLICT: 409, base.ErrCode_USERNAME_TAKEN: 409, base.ErrCode_ALREADY_FRIENDS: 409,
		base.ErrCode_RATE_LIMITED: http.StatusTooManyRequests,
		base.ErrCode_UNAVAILABLE:  http.StatusServiceUnavailable,
		base.ErrCode_INTERNAL:     http.StatusInternalServerError,
	}
	for code, status := range want {
		if got := statusOf(code); got != status {
			t.Errorf("statusOf(%s) = %d, want %d", code, got, status)
		}
	}
	// No code is left unmapped: the enum and this table grow together.
	for code := range 128 {
		c := base.ErrCode(code)
		if c.String() == "<UNSET>" || c == base.ErrCode_OK {
			continue
		}
		if _, ok := want[c]; !ok {
			t.Errorf("ErrCode %s has no expected status in this test", c)
		}
	}
}
