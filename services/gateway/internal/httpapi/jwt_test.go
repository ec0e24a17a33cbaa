package httpapi_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/shopmesh/shopmesh/services/gateway/internal/auth"
	"github.com/shopmesh/shopmesh/services/gateway/internal/fakes"
	"github.com/shopmesh/shopmesh/services/gateway/internal/httpapi"
)

const oldSecret = "old-secret-old-secret-old-secret-0"

// signJWT signs claims (valid ones for cust-1, with edits; a nil value deletes) with HS256, secret and kid.
func signJWT(t *testing.T, kid, secret string, edits map[string]any) string {
	t.Helper()
	c := jwt.MapClaims{"iss": issuer, "aud": auth.Audience, "sub": "cust-1",
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}
	for k, v := range edits {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// withKeys serves the API with tokens verified by keys (the first signs).
func withKeys(t *testing.T, keys ...auth.Key) *harness {
	t.Helper()
	return harnessOn(t, fakes.Start(t), nil, func(d *httpapi.Deps) {
		var err error
		d.Tokens, err = auth.NewTokens(auth.Options{Keys: keys, Issuer: issuer, Leeway: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// wantRefused checks the generic 401: its body says nothing of why the token failed.
func wantRefused(t *testing.T, r reply) {
	t.Helper()
	m := wantError(t, r, http.StatusUnauthorized, "UNAUTHENTICATED")
	msg, _ := m["message"].(string)
	if msg != "a valid bearer token is required" {
		t.Fatalf("401 message %q is not the generic one", msg)
	}
}

func TestJWTRefusals(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	now := time.Now()
	tests := []struct{ name, token string }{
		{"unknown kid", signJWT(t, "k9", secret, nil)},
		{"known kid, other secret", signJWT(t, auth.DefaultKeyID, oldSecret, nil)},
		{"expired beyond the leeway", signJWT(t, auth.DefaultKeyID, secret, map[string]any{"exp": now.Add(-2 * time.Minute).Unix()})},
		{"not valid yet", signJWT(t, auth.DefaultKeyID, secret, map[string]any{"nbf": now.Add(2 * time.Minute).Unix()})},
		{"issued in the future", signJWT(t, auth.DefaultKeyID, secret, map[string]any{"iat": now.Add(2 * time.Minute).Unix()})},
		{"no iat", signJWT(t, auth.DefaultKeyID, secret, map[string]any{"iat": nil})},
		{"no exp", signJWT(t, auth.DefaultKeyID, secret, map[string]any{"exp": nil})},
		{"wrong issuer", signJWT(t, auth.DefaultKeyID, secret, map[string]any{"iss": "evil"})},
		{"wrong audience", signJWT(t, auth.DefaultKeyID, secret, map[string]any{"aud": "billing"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			wantRefused(t, h.do("GET", "/v1/accounts/me", tt.token, nil))
		})
	}
	// Within the leeway (30s) a just-expired token still passes: clocks drift.
	if r := h.do("GET", "/v1/accounts/me", signJWT(t, auth.DefaultKeyID, secret, map[string]any{"exp": now.Add(-5 * time.Second).Unix()}), nil); r.status != http.StatusOK {
		t.Fatalf("token expired 5s ago (leeway 30s): %d %s", r.status, r.body)
	}
	if n := h.fakes.Payment.Calls("GetAccount"); n != 1 {
		t.Fatalf("GetAccount calls %d, want 1 (only the one within the leeway)", n)
	}
}

// TestJWTRotation: during a rotation the gateway lists the new key first and the old one after it; a
// token signed with the old key is accepted, new tokens carry the new kid; once the old key is dropped,
// its tokens get 401.
func TestJWTRotation(t *testing.T) {
	t.Parallel()
	old := signJWT(t, "k1", oldSecret, nil)
	during := withKeys(t, auth.Key{ID: "k2", Secret: []byte(secret)}, auth.Key{ID: "k1", Secret: []byte(oldSecret)})
	if r := during.do("GET", "/v1/accounts/me", old, nil); r.status != http.StatusOK {
		t.Fatalf("old-key token during the rotation: %d %s", r.status, r.body)
	}
	fresh := during.token("cust-1")
	parsed, _, err := jwt.NewParser().ParseUnverified(fresh, jwt.MapClaims{})
	if err != nil || parsed.Header["kid"] != "k2" {
		t.Fatalf("issued token header %v, %v; want kid k2", parsed.Header, err)
	}
	after := withKeys(t, auth.Key{ID: "k2", Secret: []byte(secret)})
	wantRefused(t, after.do("GET", "/v1/accounts/me", old, nil))
	if r := after.do("GET", "/v1/accounts/me", fresh, nil); r.status != http.StatusOK {
		t.Fatalf("new-key token after the rotation: %d %s", r.status, r.body)
	}
}
