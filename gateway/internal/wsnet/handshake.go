package wsnet

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/cloudwego/netpoll"
)

const (
	// maxHead caps the request head of an upgrade request, CRLFCRLF included.
	maxHead = 8 << 10
	// maxMethod caps the method token while sniffing ("OPTIONS" is 7 bytes).
	maxMethod = 16
	// acceptGUID is the RFC 6455 §1.3 constant mixed into Sec-WebSocket-Accept.
	acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
)

var (
	errHeadTooLarge = errors.New("wsnet: request head over 8 KiB")
	crlfcrlf        = []byte("\r\n\r\n")
)

// verdict is sniff's decision about the first request on a connection.
type verdict int8

const (
	needMore verdict = iota // the bytes so far fit both outcomes
	notOurs                 // hand the connection to Hertz
	ourPath                 // "<METHOD> <Path>" followed by ' ' or '?': read the head
)

// classify decides from a prefix of the input whether the request targets path. It
// looks at no more than maxMethod+len(path)+2 bytes and never needs the whole line.
func classify(b []byte, path string) verdict {
	sp := -1
	for i := 0; i < len(b) && i <= maxMethod; i++ {
		c := b[i]
		if c == ' ' {
			sp = i
			break
		}
		if c < 'A' || c > 'Z' {
			return notOurs
		}
	}
	switch {
	case sp == 0:
		return notOurs
	case sp < 0 && len(b) > maxMethod:
		return notOurs
	case sp < 0:
		return needMore
	}
	rest := b[sp+1:]
	m := min(len(rest), len(path))
	if string(rest[:m]) != path[:m] {
		return notOurs
	}
	if len(rest) <= len(path) {
		return needMore
	}
	if c := rest[len(path)]; c == ' ' || c == '?' {
		return ourPath
	}
	return notOurs
}

// sniff peeks (never consumes) just enough input to classify the first request. It
// blocks only while the answer is still open, bounded by the connection's read deadline.
func sniff(r netpoll.Reader, path string) (verdict, error) {
	limit := maxMethod + len(path) + 2
	n := min(r.Len(), limit)
	for {
		b, err := r.Peek(max(n, 1))
		if err != nil {
			return notOurs, err
		}
		if v := classify(b, path); v != needMore {
			return v, nil
		}
		// classify says needMore only below limit bytes, so this terminates.
		n = len(b) + 1
	}
}

// readHead waits, peeking, until the input holds a whole request head and returns its
// length including the blank line. Nothing is consumed. It fails with errHeadTooLarge
// once maxHead bytes have no blank line, or with the reader's error (deadline, EOF).
func readHead(r netpoll.Reader) (int, error) {
	scanned := 0
	for {
		n := min(r.Len(), maxHead)
		b, err := r.Peek(max(n, 1))
		if err != nil {
			return 0, err
		}
		from := max(scanned-3, 0)
		if i := bytes.Index(b[from:], crlfcrlf); i >= 0 {
			return from + i + len(crlfcrlf), nil
		}
		if len(b) >= maxHead {
			return 0, errHeadTooLarge
		}
		scanned = len(b)
		if _, err := r.Peek(len(b) + 1); err != nil { // wait for more
			return 0, err
		}
	}
}

// upgradeHead is what parseHead extracts from a request head on the WebSocket path.
type upgradeHead struct {
	// websocket reports an Upgrade header naming "websocket"; without it the request
	// is plain HTTP and belongs to Hertz, whatever else is wrong with it.
	websocket bool
	// status, when non-zero, is the error status the upgrade must be refused with,
	// and problem the plain-text reason.
	status  int
	problem string
	req     Request
	key     string
}

// parseHead parses a request head (as returned by readHead) on the WebSocket path and
// validates it as an RFC 6455 opening handshake. Strings in the result are copies.
func parseHead(head []byte) upgradeHead {
	var (
		h                          upgradeHead
		malformed, connUpgrade     bool
		hosts, versions, keys      int
		version, method, reqTarget string
		protoVersion               string
	)
	head = bytes.TrimSuffix(head, crlfcrlf)
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	if i, j := bytes.IndexByte(line, ' '), bytes.LastIndexByte(line, ' '); i > 0 && j > i+1 {
		method, reqTarget, protoVersion = string(line[:i]), string(line[i+1:j]), string(line[j+1:])
	} else {
		malformed = true
	}
	h.req.Header = make(http.Header, 4)
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := headerLine(line)
		if !ok {
			malformed = true
			continue
		}
		// Strings are made only of what is kept: most lines are skipped.
		switch {
		case bytes.EqualFold(name, []byte("Upgrade")):
			if hasToken(string(value), "websocket") {
				h.websocket = true
			}
		case bytes.EqualFold(name, []byte("Connection")):
			if hasToken(string(value), "upgrade") {
				connUpgrade = true
			}
		case bytes.EqualFold(name, []byte("Host")):
			hosts++
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Version")):
			versions++
			version = string(value)
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Key")):
			keys++
			h.key = string(value)
		case bytes.EqualFold(name, []byte("Origin")), bytes.EqualFold(name, []byte("Sec-WebSocket-Protocol")),
			bytes.EqualFold(name, []byte("User-Agent")), bytes.EqualFold(name, []byte("X-Forwarded-For")):
			h.req.Header.Add(string(name), string(value)) // Add canonicalizes the name
		}
	}
	if !h.websocket {
		return h
	}
	refuse := func(status int, problem string) upgradeHead {
		h.status, h.problem = status, problem
		return h
	}
	switch {
	case malformed:
		return refuse(http.StatusBadRequest, "malformed request head")
	case method != http.MethodGet:
		return refuse(http.StatusBadRequest, "websocket upgrade requires GET")
	case protoVersion != "HTTP/1.1":
		return refuse(http.StatusBadRequest, "websocket upgrade requires HTTP/1.1")
	case hosts != 1:
		return refuse(http.StatusBadRequest, "bad Host header")
	case !connUpgrade:
		return refuse(http.StatusBadRequest, `Connection header must contain "upgrade"`)
	case versions != 1:
		return refuse(http.StatusBadRequest, "bad Sec-WebSocket-Version header")
	case version != "13":
		// RFC 6455 §4.2.2: tell the client which version we speak.
		return refuse(http.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version")
	case keys != 1 || !validKey(h.key):
		return refuse(http.StatusBadRequest, "bad Sec-WebSocket-Key header")
	}
	h.req.URI = reqTarget
	if _, q, ok := strings.Cut(reqTarget, "?"); ok {
		h.req.Query, _ = url.ParseQuery(q) // keeps every pair that parsed
	} else {
		h.req.Query = url.Values{}
	}
	return h
}

// headerLine splits "Name: value", trimming optional whitespace. It rejects obsolete
// line folding, names that are not tokens and values with control characters.
func headerLine(line []byte) (name, value []byte, ok bool) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return nil, nil, false
	}
	for _, c := range line[:colon] {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return nil, nil, false
		}
	}
	v := bytes.Trim(line[colon+1:], " \t")
	for _, c := range v {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return nil, nil, false
		}
	}
	return line[:colon], v, true
}

// hasToken reports whether the comma-separated header value lists token
// (case-insensitive).
func hasToken(value, token string) bool {
	for part := range strings.SplitSeq(value, ",") {
		if strings.EqualFold(strings.TrimSpace(part), token) {
			return true
		}
	}
	return false
}

// validKey reports whether key is base64 of exactly 16 bytes (RFC 6455 §4.1).
func validKey(key string) bool {
	if len(key) != 24 {
		return false
	}
	var buf [18]byte
	n, err := base64.StdEncoding.Decode(buf[:], []byte(key))
	return err == nil && n == 16
}

// acceptKey computes Sec-WebSocket-Accept for a client key.
func acceptKey(key string) string {
	sum := sha1.Sum([]byte(key + acceptGUID))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// offeredProtocol reports whether p is one of the subprotocols the client listed.
func offeredProtocol(h http.Header, p string) bool {
	for _, v := range h.Values("Sec-Websocket-Protocol") {
		for part := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(part) == p {
				return true
			}
		}
	}
	return false
}

// switchingProtocols is the 101 response to an accepted handshake.
func switchingProtocols(key, protocol string) []byte {
	b := make([]byte, 0, 160)
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	b = append(b, acceptKey(key)...)
	if protocol != "" {
		b = append(b, "\r\nSec-WebSocket-Protocol: "...)
		b = append(b, protocol...)
	}
	return append(b, "\r\n\r\n"...)
}

// errorResponse is a complete "Connection: close" HTTP response. extra holds whole
// header lines, each ending in CRLF.
func errorResponse(status int, contentType string, body []byte, extra string) []byte {
	text := http.StatusText(status)
	if text == "" {
		text = "Error"
	}
	b := make([]byte, 0, 192+len(extra)+len(body))
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, text...)
	b = append(b, "\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nContent-Type: "...)
	b = append(b, contentType...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n"...)
	b = append(b, extra...)
	b = append(b, "\r\n"...)
	return append(b, body...)
}

// textError is a plain-text refusal of a bad or unservable upgrade request.
func textError(status int, problem string) []byte {
	var extra string
	switch status {
	case http.StatusUpgradeRequired:
		extra = "Sec-WebSocket-Version: 13\r\n"
	case http.StatusServiceUnavailable:
		extra = "Retry-After: 1\r\n"
	}
	return errorResponse(status, "text/plain; charset=utf-8", []byte(problem+"\n"), extra)
}

// rejectResponse renders a Handler's Reject. A status outside 400–599 becomes 500:
// Authorize must not turn a refusal into a success. The request's Origin (already
// checked to hold no control characters) is echoed so that a cross-origin page may
// read the JSON error.
func rejectResponse(rej *Reject, origin string) []byte {
	status := rej.Status
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	var extra string
	if origin != "" {
		extra = "Access-Control-Allow-Origin: " + origin + "\r\nVary: Origin\r\n"
	}
	return errorResponse(status, "application/json", rej.Body, extra)
}
