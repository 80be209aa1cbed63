// Package authtoken issues and verifies GoChat's access tokens: HS256 JWTs carrying the
// user id, a guest flag, a token id (for revocation) and an expiry. logic issues them;
// the gateway verifies them locally with the same secret, so no RPC is needed to reject
// a forged or expired token.
package authtoken

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrInvalid is returned for every token that must be refused: missing, malformed,
// badly signed, of another algorithm or issuer, or expired. Callers answer 401.
var ErrInvalid = errors.New("authtoken: invalid token")

const issuer = "gochat"

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
}

// New returns a Signer. The secret must be at least 16 bytes; ttl is the token lifetime.
func New(secret string, ttl time.Duration) (*Signer, error) {
	if len(secret) < 16 {
		return nil, errors.New("authtoken: secret must be at least 16 bytes")
	}
	if ttl <= 0 {
		return nil, errors.New("authtoken: ttl must be positive")
	}
	return &Signer{secret: []byte(secret), ttl: ttl, now: time.Now}, nil
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
func (s *Signer) Verify(token string) (Claims, error) {
	if token == "" || len(token) > 4096 {
		return Claims{}, ErrInvalid
	}
	var jc jwtClaims
	_, err := jwt.ParseWithClaims(token, &jc, func(*jwt.Token) (any, error) { return s.secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(issuer),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(s.now),
	)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	uid, err := strconv.ParseInt(jc.Subject, 10, 64)
	if err != nil || uid <= 0 || jc.ID == "" {
		return Claims{}, ErrInvalid
	}
	return Claims{UserID: uid, IsGuest: jc.Guest, TokenID: jc.ID, ExpiresAt: jc.ExpiresAt.Time}, nil
}
