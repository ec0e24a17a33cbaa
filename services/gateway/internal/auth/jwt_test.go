package auth_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/shopmesh/shopmesh/services/gateway/internal/auth"
)

const (
	iss     = "shopmesh-gateway"
	secret1 = "0123456789abcdef0123456789abcdef"
	secret2 = "fedcba9876543210fedcba9876543210"
)

var now = time.Unix(1_800_000_000, 0)

func clock() time.Time { return now }

// forge signs claims with secret under header alg and kid ("" = no kid header) through the jwt library.
func forge(t *testing.T, alg, kid, secret string, claims jwt.MapClaims) string {
	t.Helper()
	m := jwt.GetSigningMethod(alg)
	var key any = []byte(secret)
	if alg == "none" {
		key = jwt.UnsafeAllowNoneSignatureType
	}
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// claims are valid claims for cust-1 at now, with edits applied (a nil value deletes the claim).
func claims(edits map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{"iss": iss, "aud": auth.Audience, "sub": "cust-1",
		"exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	for k, v := range edits {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

func newTokens(t *testing.T, keys ...auth.Key) *auth.Tokens {
	t.Helper()
	tokens, err := auth.NewTokens(auth.Options{Keys: keys, Issuer: iss, Leeway: 30 * time.Second, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

func TestVerify(t *testing.T) {
	t.Parallel()
	tokens := newTokens(t, auth.Key{ID: "k2", Secret: []byte(secret2)}, auth.Key{ID: "k1", Secret: []byte(secret1)})
	good, err := tokens.Issue("cust-1", []string{auth.ScopeAdmin}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	noneHeader := strings.Split(forge(t, "none", "k2", "", claims(nil)), ".")[0]
	tests := []struct {
		name  string
		token string
		want  error // nil = valid
	}{
		{"issued", good, nil},
		{"current key", forge(t, "HS256", "k2", secret2, claims(nil)), nil},
		{"previous key during the rotation", forge(t, "HS256", "k1", secret1, claims(nil)), nil},
		{"no kid: the current key", forge(t, "HS256", "", secret2, claims(nil)), nil},
		{"aud as an array", forge(t, "HS256", "k2", secret2, claims(map[string]any{"aud": []string{"x", auth.Audience}})), nil},
		{"expired within the leeway", forge(t, "HS256", "k2", secret2, claims(map[string]any{"exp": now.Add(-20 * time.Second).Unix()})), nil},
		{"nbf within the leeway", forge(t, "HS256", "k2", secret2, claims(map[string]any{"nbf": now.Add(20 * time.Second).Unix()})), nil},
		{"iat within the leeway", forge(t, "HS256", "k2", secret2, claims(map[string]any{"iat": now.Add(20 * time.Second).Unix()})), nil},

		{"unknown kid", forge(t, "HS256", "k0", secret2, claims(nil)), auth.ErrUnknownKey},
		{"kid of another key", forge(t, "HS256", "k1", secret2, claims(nil)), jwt.ErrTokenSignatureInvalid},
		{"no kid, previous key", forge(t, "HS256", "", secret1, claims(nil)), jwt.ErrTokenSignatureInvalid},
		{"foreign secret", forge(t, "HS256", "k2", "another-secret-another-secret-xx", claims(nil)), jwt.ErrTokenSignatureInvalid},
		{"alg none", forge(t, "none", "k2", "", claims(nil)), jwt.ErrTokenSignatureInvalid},
		{"alg none, real signature", noneHeader + "." + parts[1] + "." + parts[2], jwt.ErrTokenSignatureInvalid},
		{"alg HS384", forge(t, "HS384", "k2", secret2, claims(nil)), jwt.ErrTokenSignatureInvalid},
		{"alg HS512", forge(t, "HS512", "k2", secret2, claims(nil)), jwt.ErrTokenSignatureInvalid},
		{"expired beyond the leeway", forge(t, "HS256", "k2", secret2, claims(map[string]any{"exp": now.Add(-31 * time.Second).Unix()})), jwt.ErrTokenExpired},
		{"not valid yet", forge(t, "HS256", "k2", secret2, claims(map[string]any{"nbf": now.Add(time.Minute).Unix()})), jwt.ErrTokenNotValidYet},
		{"issued in the future", forge(t, "HS256", "k2", secret2, claims(map[string]any{"iat": now.Add(time.Minute).Unix()})), jwt.ErrTokenUsedBeforeIssued},
		{"no exp", forge(t, "HS256", "k2", secret2, claims(map[string]any{"exp": nil})), jwt.ErrTokenRequiredClaimMissing},
		{"no iat", forge(t, "HS256", "k2", secret2, claims(map[string]any{"iat": nil})), jwt.ErrTokenRequiredClaimMissing},
		{"no subject", forge(t, "HS256", "k2", secret2, claims(map[string]any{"sub": nil})), jwt.ErrTokenRequiredClaimMissing},
		{"wrong issuer", forge(t, "HS256", "k2", secret2, claims(map[string]any{"iss": "evil"})), jwt.ErrTokenInvalidIssuer},
		{"no issuer", forge(t, "HS256", "k2", secret2, claims(map[string]any{"iss": nil})), jwt.ErrTokenRequiredClaimMissing},
		{"wrong audience", forge(t, "HS256", "k2", secret2, claims(map[string]any{"aud": "elsewhere"})), jwt.ErrTokenInvalidAudience},
		{"no audience", forge(t, "HS256", "k2", secret2, claims(map[string]any{"aud": nil})), jwt.ErrTokenRequiredClaimMissing},
		{"two parts", parts[0] + "." + parts[1], jwt.ErrTokenMalformed},
		{"garbage", "a.b.c", jwt.ErrTokenMalformed},
		{"tampered claims", parts[0] + "." + parts[1] + "x." + parts[2], jwt.ErrTokenMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := tokens.Verify(tt.token)
			if tt.want == nil {
				if err != nil || c.Subject != "cust-1" {
					t.Fatalf("Verify = %+v, %v; want cust-1", c, err)
				}
				return
			}
			if !errors.Is(err, auth.ErrInvalidToken) || !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestRotation: a token signed with the old key verifies while both keys are listed, new tokens carry
// the new key's id, and once the old key is dropped its tokens are refused.
func TestRotation(t *testing.T) {
	t.Parallel()
	before := newTokens(t, auth.Key{ID: "k1", Secret: []byte(secret1)})
	old, err := before.Issue("cust-1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	during := newTokens(t, auth.Key{ID: "k2", Secret: []byte(secret2)}, auth.Key{ID: "k1", Secret: []byte(secret1)})
	if _, err := during.Verify(old); err != nil {
		t.Fatalf("old token refused during the rotation: %v", err)
	}
	fresh, err := during.Issue("cust-1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := before.Verify(fresh); !errors.Is(err, auth.ErrUnknownKey) {
		t.Fatalf("a k2 token verified by a k1-only gateway: %v, want unknown key", err)
	}
	after := newTokens(t, auth.Key{ID: "k2", Secret: []byte(secret2)})
	if _, err := after.Verify(fresh); err != nil {
		t.Fatalf("new token refused after the rotation: %v", err)
	}
	if _, err := after.Verify(old); !errors.Is(err, auth.ErrInvalidToken) || !errors.Is(err, auth.ErrUnknownKey) {
		t.Fatalf("old token after its key was dropped: %v, want unknown key", err)
	}
}

func TestIssueCarriesScopesAndKid(t *testing.T) {
	t.Parallel()
	tokens, err := auth.New(secret1, iss, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokens.Issue("cust-2", []string{auth.ScopeAdmin}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tokens.Verify(tok)
	if err != nil || !c.HasScope(auth.ScopeAdmin) || c.HasScope("root") || c.Subject != "cust-2" {
		t.Fatalf("claims %+v, %v", c, err)
	}
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil || parsed.Header["kid"] != auth.DefaultKeyID || parsed.Header["alg"] != "HS256" {
		t.Fatalf("header %v, %v", parsed.Header, err)
	}
}

func TestNewTokensRefuses(t *testing.T) {
	t.Parallel()
	k := auth.Key{ID: "k1", Secret: []byte(secret1)}
	for name, o := range map[string]auth.Options{
		"no issuer":       {Keys: []auth.Key{k}},
		"no keys":         {Issuer: iss},
		"empty kid":       {Issuer: iss, Keys: []auth.Key{{Secret: []byte(secret1)}}},
		"empty secret":    {Issuer: iss, Keys: []auth.Key{{ID: "k1"}}},
		"duplicate kid":   {Issuer: iss, Keys: []auth.Key{k, k}},
		"negative leeway": {Issuer: iss, Keys: []auth.Key{k}, Leeway: -time.Second},
	} {
		if _, err := auth.NewTokens(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseKeys(t *testing.T) {
	t.Parallel()
	keys, err := auth.ParseKeys(" k2:a:b , k1:c,")
	if err != nil || len(keys) != 2 || keys[0].ID != "k2" || string(keys[0].Secret) != "a:b" || keys[1].ID != "k1" || string(keys[1].Secret) != "c" {
		t.Fatalf("ParseKeys = %+v, %v", keys, err)
	}
	for _, bad := range []string{"", ",", "nokid", ":secret", "k1:"} {
		if _, err := auth.ParseKeys(bad); err == nil {
			t.Errorf("ParseKeys(%q) accepted", bad)
		}
	}
}
