package authtoken

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestIssueVerify(t *testing.T) {
	s, err := New("0123456789abcdef0123", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tok, c, err := s.Issue(42, true)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Verify(tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got.UserID != 42 || !got.IsGuest || got.TokenID != c.TokenID || !got.ExpiresAt.Equal(c.ExpiresAt) {
		t.Fatalf("claims = %+v, want %+v", got, c)
	}
}

func TestVerifyRejects(t *testing.T) {
	s, _ := New("0123456789abcdef0123", time.Hour)
	other, _ := New("another-secret-0123456", time.Hour)
	good, _, _ := s.Issue(7, false)
	foreign, _, _ := other.Issue(7, false)

	expiredSigner, _ := New("0123456789abcdef0123", time.Hour)
	expiredSigner.now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	expired, _, _ := expiredSigner.Issue(7, false)

	none := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{Issuer: issuer, Subject: "7", ID: "x",
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))})
	noneTok, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)

	tests := []struct {
		name string
		tok  string
	}{
		{"empty", ""},
		{"garbage", "not-a-jwt"},
		{"other secret", foreign},
		{"expired", expired},
		{"alg none", noneTok},
		{"truncated", good[:len(good)-3]},
		{"huge", strings.Repeat("a", 5000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Verify(tt.tok); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Verify(%s) err = %v, want ErrInvalid", tt.name, err)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New("short", time.Hour); err == nil {
		t.Fatal("short secret accepted")
	}
	if _, err := New("0123456789abcdef0123", 0); err == nil {
		t.Fatal("zero ttl accepted")
	}
}
