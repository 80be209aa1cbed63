// Package authtoken issues and verifies GoChat's access tokens: HS256 JWTs carrying the
// user id, a guest flag, a token id (for revocation) and an expiry. logic issues them;
// the gateway verifies them locally with the same secret, so no RPC is needed to reject
// a forged or expired token.
package authtoken

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrInvalid is returned for every token that must be refused: missing, malformed,
// badly signed, of another algorithm or issuer, or expired. Callers answer 401.
var ErrInvalid = errors.New("authtoken: invalid token")

const issuer = "gochat"

// issuedHeader is the header segment of every token Issue signs, {"alg":"HS256",
// "typ":"JWT"}: Verify reads no JSON for it. Any other header is decoded and its
// alg checked, so this is a shortcut, not a rule.
const issuedHeader = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"

// Claims is what a verified token says.
type Claims struct {
	UserID    int64
	IsGuest   bool
	TokenID   string
	ExpiresAt time.Time
}

type jwtClaims struct {
	Guest bool `json:"guest,omitempty"`
	jwt.RegisteredClaims
}

// Signer issues and verifies tokens with one shared secret.
type Signer struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
	macs   sync.Pool // of hmac.New(sha256.New, secret)
}

// New returns a Signer. The secret must be at least 16 bytes; ttl is the token lifetime.
func New(secret string, ttl time.Duration) (*Signer, error) {
	if len(secret) < 16 {
		return nil, errors.New("authtoken: secret must be at least 16 bytes")
	}
	if ttl <= 0 {
		return nil, errors.New("authtoken: ttl must be positive")
	}
	s := &Signer{secret: []byte(secret), ttl: ttl, now: time.Now}
	s.macs.New = func() any { return hmac.New(sha256.New, s.secret) }
	return s, nil
}

// Issue signs a new token for the user.
func (s *Signer) Issue(userID int64, guest bool) (string, Claims, error) {
	var id [12]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", Claims{}, fmt.Errorf("authtoken: token id: %w", err)
	}
	now := s.now()
	c := Claims{UserID: userID, IsGuest: guest, TokenID: hex.EncodeToString(id[:]), ExpiresAt: now.Add(s.ttl).Truncate(time.Second)}
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwtClaims{
		Guest: guest,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    issuer,
			Subject:   strconv.FormatInt(userID, 10),
			ID:        c.TokenID,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(c.ExpiresAt),
		},
	})
	signed, err := tok.SignedString(s.secret)
	if err != nil {
		return "", Claims{}, fmt.Errorf("authtoken: sign: %w", err)
	}
	return signed, c, nil
}

// Verify checks signature, algorithm, issuer and expiry. It does not know about
// revocation; that is logic's job.
//
// It accepts exactly what golang-jwt's ParseWithClaims accepts with HS256 as the only
// method, the issuer required, exp required and no leeway (TestVerifyAgreesWithJWT
// compares the two on valid, tampered and odd tokens), in half the time and with 22
// allocations instead of 52: every socket's upgrade verifies a token, and during a
// connect storm golang-jwt's generic decoding (the header into a map, the dates
// through json.Number) was 15% of the gateway's CPU. The signature is checked first,
// so nothing of a token this secret did not sign is parsed.
func (s *Signer) Verify(token string) (Claims, error) {
	if token == "" || len(token) > 4096 {
		return Claims{}, ErrInvalid
	}
	head, rest, ok1 := strings.Cut(token, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.IndexByte(sig, '.') >= 0 {
		return Claims{}, fmt.Errorf("%w: not three segments", ErrInvalid)
	}
	var want, got [sha256.Size]byte
	mac := s.macs.Get().(hash.Hash)
	mac.Reset()
	mac.Write([]byte(token[:len(head)+1+len(payload)]))
	mac.Sum(want[:0])
	s.macs.Put(mac)
	// Decode writes DecodedLen(len(sig)) bytes: check the length before it does.
	if len(sig) != base64.RawURLEncoding.EncodedLen(len(got)) {
		return Claims{}, fmt.Errorf("%w: bad signature", ErrInvalid)
	}
	if n, err := base64.RawURLEncoding.Decode(got[:], []byte(sig)); err != nil || n != len(got) || !hmac.Equal(got[:], want[:]) {
		return Claims{}, fmt.Errorf("%w: bad signature", ErrInvalid)
	}

	if head != issuedHeader {
		var h struct {
			Alg string `json:"alg"`
		}
		if err := decodeSegment(head, &h); err != nil {
			return Claims{}, fmt.Errorf("%w: header: %w", ErrInvalid, err)
		}
		if h.Alg != jwt.SigningMethodHS256.Alg() {
			return Claims{}, fmt.Errorf("%w: algorithm %q", ErrInvalid, h.Alg)
		}
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: claims: base64: %w", ErrInvalid, err)
	}
	c, ok := issuedClaims(raw)
	if !ok {
		c = claimSet{} // what the shortcut read before it gave up must not mix in
		if err := json.Unmarshal(raw, &c); err != nil {
			return Claims{}, fmt.Errorf("%w: claims: json: %w", ErrInvalid, err)
		}
	}
	if c.Issuer != issuer {
		return Claims{}, fmt.Errorf("%w: issuer %q", ErrInvalid, c.Issuer)
	}
	if c.Expires == nil {
		return Claims{}, fmt.Errorf("%w: no expiry", ErrInvalid)
	}
	exp, err := numericDate(*c.Expires)
	if err != nil {
		return Claims{}, err
	}
	now := s.now()
	if !now.Before(exp) {
		return Claims{}, fmt.Errorf("%w: expired", ErrInvalid)
	}
	if c.NotBef != nil {
		nbf, err := numericDate(*c.NotBef)
		if err != nil {
			return Claims{}, err
		}
		if now.Before(nbf) {
			return Claims{}, fmt.Errorf("%w: not valid yet", ErrInvalid)
		}
	}
	uid, err := strconv.ParseInt(c.Subject, 10, 64)
	if err != nil || uid <= 0 || c.ID == "" {
		return Claims{}, ErrInvalid
	}
	return Claims{UserID: uid, IsGuest: c.Guest, TokenID: c.ID, ExpiresAt: exp}, nil
}

// claimSet is what Verify reads of a token's claims.
type claimSet struct {
	Issuer  string       `json:"iss"`
	Subject string       `json:"sub"`
	ID      string       `json:"jti"`
	Expires *json.Number `json:"exp"`
	NotBef  *json.Number `json:"nbf"`
	Guest   bool         `json:"guest"`
	// Not checked, but decoded as golang-jwt decodes them, so a token whose
	// iat or aud has the wrong type is refused as it would be there.
	IssuedAt *json.Number     `json:"iat"`
	Audience jwt.ClaimStrings `json:"aud"`
}

// issuedClaims reads claims in exactly the form Issue writes them,
//
//	{"guest":true,"iss":"…","sub":"…","exp":N,"iat":N,"jti":"…"}
//
// (guest only when true; strings of printable ASCII other than " and \, N
// plain digits), without the JSON decoder, which costs a connect more than the
// rest of Verify together. For that form the result is what json.Unmarshal
// gives; anything else reports !ok and goes to json.Unmarshal.
func issuedClaims(b []byte) (c claimSet, ok bool) {
	rest, ok := bytes.CutPrefix(b, []byte(`{`))
	if !ok {
		return c, false
	}
	if r, guest := bytes.CutPrefix(rest, []byte(`"guest":true,`)); guest {
		c.Guest, rest = true, r
	}
	var exp, iat json.Number
	for _, f := range []struct {
		key    string
		str    *string
		num    *json.Number
		suffix byte
	}{
		{`"iss":`, &c.Issuer, nil, ','},
		{`"sub":`, &c.Subject, nil, ','},
		{`"exp":`, nil, &exp, ','},
		{`"iat":`, nil, &iat, ','},
		{`"jti":`, &c.ID, nil, '}'},
	} {
		if rest, ok = bytes.CutPrefix(rest, []byte(f.key)); !ok {
			return c, false
		}
		var v []byte
		if f.str != nil {
			v, rest, ok = plainString(rest)
			*f.str = string(v)
		} else {
			v, rest, ok = plainDigits(rest)
			*f.num = json.Number(v)
		}
		if !ok || len(rest) == 0 || rest[0] != f.suffix {
			return c, false
		}
		rest = rest[1:]
	}
	if len(rest) != 0 {
		return c, false
	}
	c.Expires, c.IssuedAt = &exp, &iat
	return c, true
}

// plainString cuts a JSON string of printable ASCII without escapes off b.
func plainString(b []byte) (s, rest []byte, ok bool) {
	if len(b) == 0 || b[0] != '"' {
		return nil, nil, false
	}
	for i := 1; i < len(b); i++ {
		switch ch := b[i]; {
		case ch == '"':
			return b[1:i], b[i+1:], true
		case ch < 0x20 || ch > 0x7e || ch == '\\':
			return nil, nil, false
		}
	}
	return nil, nil, false
}

// plainDigits cuts a JSON integer of 1..18 digits, no sign and no leading
// zero, off b.
func plainDigits(b []byte) (n, rest []byte, ok bool) {
	i := 0
	for i < len(b) && i <= 18 && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == 0 || i > 18 || (b[0] == '0' && i > 1) {
		return nil, nil, false
	}
	return b[:i], b[i:], true
}

// decodeSegment decodes one base64url JSON segment of a token into v, as golang-jwt
// does by default (no padding).
func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return fmt.Errorf("base64: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("json: %w", err)
	}
	return nil
}

// numericDate is golang-jwt's reading of a NumericDate: seconds since the epoch,
// fractions kept, truncated to jwt.TimePrecision.
//
// Whole seconds of up to 15 digits, which every issued token carries, are read
// without strconv.ParseFloat: they are exact in a float64, so the result is the
// same, and ParseFloat's large frame grew the stack of nearly every fresh netpoll
// worker that verified a token in a connect storm (6% of the process).
func numericDate(n json.Number) (time.Time, error) {
	if len(n) > 0 && len(n) <= 15 {
		var secs int64
		for i := 0; i < len(n); i++ {
			c := n[i]
			if c < '0' || c > '9' {
				secs = -1
				break
			}
			secs = secs*10 + int64(c-'0')
		}
		if secs >= 0 {
			return time.Unix(secs, 0).Truncate(jwt.TimePrecision), nil
		}
	}
	f, err := n.Float64()
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: date %q", ErrInvalid, n)
	}
	round, frac := math.Modf(f)
	return time.Unix(int64(round), int64(frac*1e9)).Truncate(jwt.TimePrecision), nil
}
