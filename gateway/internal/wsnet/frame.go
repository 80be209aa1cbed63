package wsnet

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// RFC 6455 close codes used by this package. Handlers see them in OnClose and may pass
// them to Conn.Close.
const (
	CloseNormal          = 1000 // normal closure
	CloseGoingAway       = 1001 // server shutdown, idle timeout
	CloseProtocolError   = 1002 // malformed frame
	CloseUnsupportedData = 1003 // binary message
	CloseNoStatus        = 1005 // the peer's close frame carried no code (never sent)
	CloseAbnormal        = 1006 // the TCP connection ended without a close frame (never sent)
	CloseInvalidPayload  = 1007 // text that is not UTF-8
	ClosePolicyViolation = 1008 // frame read timeout, unread input backlog
	CloseMessageTooBig   = 1009 // message over Config.MaxFrame
	CloseInternalError   = 1011
	CloseTryAgainLater   = 1013 // send queue full
)

// maxCloseReason is what is left of a 125-byte control payload after the code.
const maxCloseReason = 123

// frameHeaderLen is the size of an unmasked (server) frame header for an n-byte payload.
func frameHeaderLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xFFFF:
		return 4
	default:
		return 10
	}
}

// appendFrameHeader appends a final, unmasked frame header for an n-byte payload.
func appendFrameHeader(b []byte, op ws.OpCode, n int) []byte {
	b0 := 0x80 | byte(op)
	switch {
	case n < 126:
		return append(b, b0, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(b, b0, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, b0, 127), uint64(n))
	}
}

// sendableCode reports whether code may be put in a close frame we send (RFC 6455
// §7.4: 1005, 1006 and 1015 are reserved for reporting, 1004 is reserved).
func sendableCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014, code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// closePayload builds a close frame body: the code followed by reason cut to fit a
// control frame on a UTF-8 boundary. An unsendable code becomes 1000.
func closePayload(code int, reason string) []byte {
	if !sendableCode(code) {
		code = CloseNormal
	}
	reason = truncateUTF8(reason, maxCloseReason)
	p := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(p, uint16(code))
	return append(p, reason...)
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune; invalid UTF-8 is
// replaced so the result is always valid.
func truncateUTF8(s string, n int) string {
	if !utf8.ValidString(s) {
		s = string([]rune(s)) // replaces invalid bytes with U+FFFD
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
