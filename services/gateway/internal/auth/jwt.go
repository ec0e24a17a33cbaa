// Package auth issues and verifies the gateway's bearer tokens: compact JWS with the algorithm pinned to
// HS256 (alg "none" and every other algorithm are refused before any signature work), an expiry, the
// "shopmesh" audience and the gateway's issuer. It is small enough not to need a JWT library.
package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Audience is the only audience the gateway issues and accepts.
const Audience = "shopmesh"

// ScopeAdmin allows the admin routes (stock import).
const ScopeAdmin = "admin"

// ErrInvalidToken is wrapped by every verification failure; the wrapping text says why.
var ErrInvalidToken = errors.New("invalid token")

// Claims are what a verified token says about its bearer.
type Claims struct {
	Subject string
	Scopes  []string
	Expiry  time.Time
}

// HasScope reports whether the token grants scope.
func (c Claims) HasScope(scope string) bool { return slices.Contains(c.Scopes, scope) }

// Tokens signs and verifies tokens with one HS256 secret.
type Tokens struct {
	secret []byte
	issuer string
	now    func() time.Time
}

// New returns Tokens for secret and issuer; now nil means time.Now.
func New(secret, issuer string, now func() time.Time) (*Tokens, error) {
	if secret == "" || issuer == "" {
		return nil, errors.New("auth: secret and issuer must be set")
	}
	if now == nil {
		now = time.Now
	}
	return &Tokens{secret: []byte(secret), issuer: issuer, now: now}, nil
}

type header struct {
	Alg string `json:"alg"`
	Typ string `json:"typ,omitempty"`
}

// payload is the JSON claim set. aud may be a string or an array (RFC 7519 §4.1.3).
type payload struct {
	Iss   string          `json:"iss"`
	Sub   string          `json:"sub"`
	Aud   json.RawMessage `json:"aud"`
	Exp   *int64          `json:"exp"`
	Nbf   *int64          `json:"nbf,omitempty"`
	Iat   int64           `json:"iat,omitempty"`
	Scope string          `json:"scope,omitempty"`
}

// Issue returns a token for subject with scopes, valid for ttl.
func (t *Tokens) Issue(subject string, scopes []string, ttl time.Duration) (string, error) {
	now := t.now()
	exp := now.Add(ttl).Unix()
	aud, _ := json.Marshal(Audience)
	return t.sign(header{Alg: "HS256", Typ: "JWT"}, payload{
		Iss: t.issuer, Sub: subject, Aud: aud, Exp: &exp, Iat: now.Unix(), Scope: strings.Join(scopes, " "),
	})
}

// sign encodes h and p and signs them with the secret whatever h.Alg says (tests build bad tokens with it).
func (t *Tokens) sign(h header, p payload) (string, error) {
	hb, err := json.Marshal(h)
	if err != nil {
		return "", fmt.Errorf("token header: %w", err)
	}
	pb, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("token claims: %w", err)
	}
	signing := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(pb)
	return signing + "." + base64.RawURLEncoding.EncodeToString(t.mac(signing)), nil
}

func (t *Tokens) mac(signing string) []byte {
	m := hmac.New(sha256.New, t.secret)
	m.Write([]byte(signing))
	return m.Sum(nil)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidToken, fmt.Sprintf(format, args...))
}

// Verify checks the token's algorithm, signature, expiry, not-before, audience, issuer and subject, and
// returns its claims. Every failure wraps ErrInvalidToken.
func (t *Tokens) Verify(token string) (Claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return Claims{}, invalid("malformed")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return Claims{}, invalid("malformed header")
	}
	var h header
	if err := json.Unmarshal(hb, &h); err != nil {
		return Claims{}, invalid("malformed header")
	}
	// The algorithm is pinned: the header is only read to refuse anything else (alg confusion, "none").
	if h.Alg != "HS256" {
		return Claims{}, invalid("algorithm %q is not accepted", h.Alg)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, t.mac(parts[0]+"."+parts[1])) {
		return Claims{}, invalid("bad signature")
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return Claims{}, invalid("malformed claims")
	}
	var p payload
	if err := json.Unmarshal(pb, &p); err != nil {
		return Claims{}, invalid("malformed claims")
	}
	now := t.now().Unix()
	switch {
	case p.Exp == nil:
		return Claims{}, invalid("no expiry")
	case now >= *p.Exp:
		return Claims{}, invalid("expired")
	case p.Nbf != nil && now < *p.Nbf:
		return Claims{}, invalid("not valid yet")
	case p.Iss != t.issuer:
		return Claims{}, invalid("wrong issuer")
	case !hasAudience(p.Aud):
		return Claims{}, invalid("wrong audience")
	case p.Sub == "":
		return Claims{}, invalid("no subject")
	}
	return Claims{Subject: p.Sub, Scopes: strings.Fields(p.Scope), Expiry: time.Unix(*p.Exp, 0)}, nil
}

func hasAudience(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one == Audience
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil {
		return slices.Contains(many, Audience)
	}
	return false
}
