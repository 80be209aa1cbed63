package authtoken

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
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

// TestVerifyAgreesWithJWT checks Verify against golang-jwt's ParseWithClaims with the
// options Verify used to pass it, on tokens signed with the right secret (so that
// every check after the signature is reached) and on broken ones.
func TestVerifyAgreesWithJWT(t *testing.T) {
	const secret = "0123456789abcdef0123"
	s, err := New(secret, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0) // a whole second: "expires now" is exactly the boundary
	s.now = func() time.Time { return now }
	reference := func(tok string) (Claims, error) { return verifyWithJWT(s, tok) }
	seg := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	sign := func(header, claims string) string {
		mac := hmac.New(sha256.New, []byte(secret))
		signing := seg(header) + "." + seg(claims)
		mac.Write([]byte(signing))
		return signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	}
	const hs256 = `{"alg":"HS256","typ":"JWT"}`
	exp := now.Unix() + 60
	claims := func(extra string) string {
		return fmt.Sprintf(`{"iss":"gochat","sub":"42","jti":"t1","exp":%d%s}`, exp, extra)
	}
	issued, _, err := s.Issue(42, true)
	if err != nil {
		t.Fatal(err)
	}
	valid := sign(hs256, claims(""))
	tokens := map[string]string{
		"issued":               issued,
		"minimal":              valid,
		"guest":                sign(hs256, claims(`,"guest":true`)),
		"header without typ":   sign(`{"alg":"HS256"}`, claims("")),
		"header with kid":      sign(`{"alg":"HS256","kid":"k1","typ":"JWT"}`, claims("")),
		"alg HS384":            sign(`{"alg":"HS384","typ":"JWT"}`, claims("")),
		"alg none":             sign(`{"alg":"none"}`, claims("")),
		"alg missing":          sign(`{"typ":"JWT"}`, claims("")),
		"header not JSON":      sign(`alg=HS256`, claims("")),
		"header an array":      sign(`["HS256"]`, claims("")),
		"claims not JSON":      sign(hs256, `iss=gochat`),
		"claims an array":      sign(hs256, `[1,2]`),
		"claims null":          sign(hs256, `null`),
		"expired by a second":  sign(hs256, fmt.Sprintf(`{"iss":"gochat","sub":"42","jti":"t1","exp":%d}`, now.Unix()-1)),
		"expires now":          sign(hs256, fmt.Sprintf(`{"iss":"gochat","sub":"42","jti":"t1","exp":%d}`, now.Unix())),
		"expires in a second":  sign(hs256, fmt.Sprintf(`{"iss":"gochat","sub":"42","jti":"t1","exp":%d}`, now.Unix()+1)),
		"fractional exp":       sign(hs256, fmt.Sprintf(`{"iss":"gochat","sub":"42","jti":"t1","exp":%d.75}`, now.Unix())),
		"exp as a string":      sign(hs256, fmt.Sprintf(`{"iss":"gochat","sub":"42","jti":"t1","exp":"%d"}`, exp)),
		"exp not a number":     sign(hs256, `{"iss":"gochat","sub":"42","jti":"t1","exp":"soon"}`),
		"exp null":             sign(hs256, `{"iss":"gochat","sub":"42","jti":"t1","exp":null}`),
		"exp missing":          sign(hs256, `{"iss":"gochat","sub":"42","jti":"t1"}`),
		"exp exponent":         sign(hs256, `{"iss":"gochat","sub":"42","jti":"t1","exp":1.9e9}`),
		"nbf ahead":            sign(hs256, claims(fmt.Sprintf(`,"nbf":%d`, now.Unix()+5))),
		"nbf behind":           sign(hs256, claims(fmt.Sprintf(`,"nbf":%d`, now.Unix()-5))),
		"nbf now":              sign(hs256, claims(fmt.Sprintf(`,"nbf":%d`, now.Unix()))),
		"iat ahead":            sign(hs256, claims(fmt.Sprintf(`,"iat":%d`, now.Unix()+3600))),
		"iat a word":           sign(hs256, claims(`,"iat":"yesterday"`)),
		"aud a string":         sign(hs256, claims(`,"aud":"web"`)),
		"aud a list":           sign(hs256, claims(`,"aud":["web","app"]`)),
		"aud a number":         sign(hs256, claims(`,"aud":7`)),
		"other issuer":         sign(hs256, `{"iss":"other","sub":"42","jti":"t1","exp":1900000000}`),
		"no issuer":            sign(hs256, `{"sub":"42","jti":"t1","exp":1900000000}`),
		"sub a number":         sign(hs256, `{"iss":"gochat","sub":42,"jti":"t1","exp":1900000000}`),
		"sub zero":             sign(hs256, `{"iss":"gochat","sub":"0","jti":"t1","exp":1900000000}`),
		"sub negative":         sign(hs256, `{"iss":"gochat","sub":"-3","jti":"t1","exp":1900000000}`),
		"sub not an int":       sign(hs256, `{"iss":"gochat","sub":"4x","jti":"t1","exp":1900000000}`),
		"no jti":               sign(hs256, `{"iss":"gochat","sub":"42","exp":1900000000}`),
		"guest a string":       sign(hs256, claims(`,"guest":"yes"`)),
		"duplicate sub":        sign(hs256, `{"iss":"gochat","sub":"1","sub":"42","jti":"t1","exp":1900000000}`),
		"unknown claim":        sign(hs256, claims(`,"role":"admin"`)),
		"padded signature":     valid + "=",
		"signature one longer": valid + "A",
		"signature of SHA-512": valid[:strings.LastIndex(valid, ".")+1] + base64.RawURLEncoding.EncodeToString(make([]byte, 64)),
		"signature empty":      valid[:strings.LastIndex(valid, ".")+1],
		"signature cut":        valid[:len(valid)-2],
		"signature flipped":    valid[:len(valid)-1] + map[bool]string{true: "A", false: "B"}[valid[len(valid)-1] != 'A'],
		"payload swapped":      valid[:strings.Index(valid, ".")+1] + seg(claims(`,"guest":true`)) + valid[strings.LastIndex(valid, "."):],
		"four segments":        valid + ".x",
		"two segments":         valid[:strings.LastIndex(valid, ".")],
		"empty segments":       "..",
		"padded header":        seg(hs256) + "=." + strings.SplitN(valid, ".", 2)[1],
		"standard base64 sig":  strings.NewReplacer("-", "+", "_", "/").Replace(valid),
		"whitespace in header": sign(` {"alg" : "HS256"} `, claims("")),
	}
	accepted := 0
	for name, tok := range tokens {
		t.Run(name, func(t *testing.T) {
			want, wantErr := reference(tok)
			got, gotErr := s.Verify(tok)
			if (wantErr == nil) != (gotErr == nil) {
				t.Fatalf("Verify: %+v, %v; golang-jwt: %+v, %v", got, gotErr, want, wantErr)
			}
			if gotErr != nil {
				if !errors.Is(gotErr, ErrInvalid) {
					t.Fatalf("Verify error %v does not wrap ErrInvalid", gotErr)
				}
				return
			}
			accepted++
			if got.UserID != want.UserID || got.IsGuest != want.IsGuest || got.TokenID != want.TokenID || !got.ExpiresAt.Equal(want.ExpiresAt) {
				t.Fatalf("Verify: %+v; golang-jwt: %+v", got, want)
			}
		})
	}
	if accepted < 10 {
		t.Errorf("only %d tokens accepted by both; the corpus no longer reaches the claim checks", accepted)
	}
}

// verifyWithJWT is what Verify did with golang-jwt, the reference it must agree with.
func verifyWithJWT(s *Signer, tok string) (Claims, error) {
	var jc jwtClaims
	_, err := jwt.ParseWithClaims(tok, &jc, func(*jwt.Token) (any, error) { return s.secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(issuer),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(s.now),
	)
	if err != nil {
		return Claims{}, err
	}
	uid, err := strconv.ParseInt(jc.Subject, 10, 64)
	if err != nil || uid <= 0 || jc.ID == "" {
		return Claims{}, ErrInvalid
	}
	return Claims{UserID: uid, IsGuest: jc.Guest, TokenID: jc.ID, ExpiresAt: jc.ExpiresAt.Time}, nil
}

// FuzzVerify: whatever a client sends as a token, Verify does not panic and says
// what golang-jwt says. The seeds run in every go test; go test -fuzz=FuzzVerify
// explores further.
func FuzzVerify(f *testing.F) {
	s, err := New("0123456789abcdef0123", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	good, _, err := s.Issue(42, true)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{good, good + "A", good + "=", good[:len(good)-1], "", ".", "..", "a.b.c",
		good + "." + good, strings.Replace(good, ".", "..", 1), "eyJhbGciOiJIUzI1NiJ9.e30." + strings.Repeat("A", 86)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		got, err := s.Verify(tok)
		want, wantErr := verifyWithJWT(s, tok)
		same := got.UserID == want.UserID && got.IsGuest == want.IsGuest && got.TokenID == want.TokenID && got.ExpiresAt.Equal(want.ExpiresAt)
		if (err == nil) != (wantErr == nil) || (err == nil && !same) {
			t.Fatalf("Verify(%q) = %+v, %v; golang-jwt: %+v, %v", tok, got, err, want, wantErr)
		}
	})
}

// TestIssuedTokensTakeTheShortcuts: what Issue signs is read without the JSON
// decoder (issuedHeader, issuedClaims), so the shortcuts cannot silently stop
// applying, say after a golang-jwt upgrade that orders the fields differently.
func TestIssuedTokensTakeTheShortcuts(t *testing.T) {
	s, err := New("0123456789abcdef0123", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, guest := range []bool{false, true} {
		tok, want, err := s.Issue(1<<40+7, guest)
		if err != nil {
			t.Fatal(err)
		}
		segs := strings.Split(tok, ".")
		if segs[0] != issuedHeader {
			t.Errorf("guest=%v: header %q, want issuedHeader %q", guest, segs[0], issuedHeader)
		}
		raw, err := base64.RawURLEncoding.DecodeString(segs[1])
		if err != nil {
			t.Fatal(err)
		}
		c, ok := issuedClaims(raw)
		if !ok {
			t.Fatalf("guest=%v: issuedClaims(%s) not ok", guest, raw)
		}
		if c.Guest != guest || c.Subject != strconv.FormatInt(want.UserID, 10) || c.ID != want.TokenID || c.Issuer != issuer {
			t.Errorf("guest=%v: issuedClaims = %+v, want %+v", guest, c, want)
		}
	}
}

// issuedClaimsAgrees fails t when issuedClaims reads b and json.Unmarshal reads
// it differently.
func issuedClaimsAgrees(t *testing.T, b []byte) (fast bool) {
	t.Helper()
	got, ok := issuedClaims(b)
	if !ok {
		return false
	}
	var want claimSet
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("issuedClaims(%s) = ok, json.Unmarshal: %v", b, err)
	}
	same := got.Issuer == want.Issuer && got.Subject == want.Subject && got.ID == want.ID && got.Guest == want.Guest &&
		want.NotBef == nil && len(want.Audience) == 0 && want.Expires != nil && want.IssuedAt != nil &&
		*got.Expires == *want.Expires && *got.IssuedAt == *want.IssuedAt
	if !same {
		t.Fatalf("issuedClaims(%s) = %+v, json.Unmarshal = %+v", b, got, want)
	}
	return true
}

// TestIssuedClaimsAgreesWithJSON: every one-byte change of an issued payload
// is either left to the JSON decoder or read the way it reads it.
func TestIssuedClaimsAgreesWithJSON(t *testing.T) {
	base := []byte(`{"guest":true,"iss":"gochat","sub":"42","exp":1765000000,"iat":1764990000,"jti":"0a1b2c3d4e5f60718293a4b5"}`)
	if !issuedClaimsAgrees(t, base) {
		t.Fatalf("issuedClaims(%s) not ok", base)
	}
	fast := 0
	for i := range base {
		for _, ch := range []byte{'"', '\\', ',', ':', '{', '}', ' ', '0', '9', 'a', '-', '.', 'e', 0x01, 0x7f, 0xc3} {
			b := slices.Clone(base)
			b[i] = ch
			if issuedClaimsAgrees(t, b) {
				fast++
			}
			if issuedClaimsAgrees(t, slices.Insert(slices.Clone(base), i, ch)) {
				fast++
			}
		}
		if issuedClaimsAgrees(t, slices.Delete(slices.Clone(base), i, i+1)) {
			fast++
		}
	}
	// Digits and letters inside the values stay on the shortcut; structure
	// changes leave it.
	if fast < 200 {
		t.Errorf("only %d mutations took the shortcut; the test no longer exercises it", fast)
	}
	for _, b := range []string{
		`{"iss":"gochat","sub":"42","exp":1765000000,"iat":1764990000,"jti":"x"}`,   // not a guest: fast
		`{"guest":false,"iss":"gochat","sub":"42","exp":1,"iat":1,"jti":"x"}`,       // guest false is never written
		`{"iss":"gochat","sub":"42","exp":01,"iat":1,"jti":"x"}`,                    // leading zero: invalid JSON
		`{"iss":"gochat","sub":"42","exp":1234567890123456789,"iat":1,"jti":"x"}`,   // 19 digits
		`{"iss":"gochat","sub":"42","exp":1,"iat":1,"jti":"x"} `,                    // trailing space
		`{"iss":"gochat","sub":"42","exp":1,"nbf":2,"iat":1,"jti":"x"}`,             // nbf
		`{"iss":"gochat","sub":"42","aud":"a","exp":1,"iat":1,"jti":"x"}`,           // aud
		`{"iss":"gochat","sub":"4\u0032","exp":1,"iat":1,"jti":"x"}`,                // escape
		"{\"iss\":\"gochat\",\"sub\":\"42\",\"exp\":1,\"iat\":1,\"jti\":\"x\xff\"}", // not UTF-8
		`{"iss":"gochat","sub":"42","exp":1,"iat":1,"jti":"x"}{}`,                   // trailing object
		`{"iss":"gochat","sub":"42","exp":1,"iat":1,"jti":"x","jti":"y"}`,           // duplicate key
	} {
		issuedClaimsAgrees(t, []byte(b))
	}
}

// FuzzIssuedClaims: the shortcut never reads a payload differently from the JSON
// decoder. go test -fuzz=FuzzIssuedClaims explores beyond the seeds.
func FuzzIssuedClaims(f *testing.F) {
	f.Add([]byte(`{"guest":true,"iss":"gochat","sub":"42","exp":1765000000,"iat":1764990000,"jti":"0a1b"}`))
	f.Add([]byte(`{"iss":"gochat","sub":"42","exp":1,"iat":1,"jti":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) { issuedClaimsAgrees(t, b) })
}

// TestNumericDateWholeSeconds checks numericDate's digits-only reading against the
// float reading it stands in for, around the 15-digit limit and at the forms
// (sign, fraction, exponent, leading zeros) it leaves to ParseFloat.
func TestNumericDateWholeSeconds(t *testing.T) {
	viaFloat := func(n json.Number) (time.Time, error) {
		f, err := n.Float64()
		if err != nil {
			return time.Time{}, err
		}
		round, frac := math.Modf(f)
		return time.Unix(int64(round), int64(frac*1e9)).Truncate(jwt.TimePrecision), nil
	}
	for _, n := range []json.Number{
		"0", "7", "007", "1800000000", "999999999999999", "100000000000000",
		"9999999999999999", "1800000000.5", "-1", "1e9", "+5", "", "12a", "1_000",
	} {
		got, gotErr := numericDate(n)
		want, wantErr := viaFloat(n)
		if (gotErr != nil) != (wantErr != nil) || !got.Equal(want) {
			t.Errorf("numericDate(%q) = %v, %v; the float reading gives %v, %v", n, got, gotErr, want, wantErr)
		}
	}
}
