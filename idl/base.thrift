// Shared error codes. A Kitex handler returns kerrors.NewBizStatusError(int32(code), msg);
// the gateway maps the code to an HTTP status (or a WebSocket error frame) and sends
// the code's name as the envelope's "code".
namespace go base

enum ErrCode {
    OK = 0

    // 400
    BAD_REQUEST = 1
    INVALID_USERNAME = 2
    INVALID_PASSWORD = 3
    CONTENT_EMPTY = 4
    CONTENT_TOO_LONG = 5
    INVALID_CONVERSATION = 6
    INVALID_MESSAGE_TYPE = 7
    INVALID_CLIENT_MSG_ID = 8

    // 401
    UNAUTHORIZED = 10
    INVALID_CREDENTIALS = 11

    // 403
    FORBIDDEN = 20
    NOT_MEMBER = 21
    GUEST_NOT_ALLOWED = 22

    // 404
    NOT_FOUND = 30
    USER_NOT_FOUND = 31
    CONVERSATION_NOT_FOUND = 32

    // 409
    CONFLICT = 40
    USERNAME_TAKEN = 41
    ALREADY_FRIENDS = 42

    // 429
    RATE_LIMITED = 50

    // 5xx
    UNAVAILABLE = 98
    INTERNAL = 99
}
