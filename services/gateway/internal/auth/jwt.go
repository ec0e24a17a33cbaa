// Package auth issues and verifies the gateway's bearer tokens with github.com/golang-jwt/jwt/v5: HS256
// only (alg "none" and every other algorithm are refused before any key is looked up), the gateway's
// issuer, the "shopmesh" audience, exp and iat required, nbf honoured, all times checked with a leeway.
//
// Keys rotate by id: the gateway holds a list of keys, each with a kid. Tokens are signed with the first
// (current) key and carry its kid; a token is verified with the key its kid names, so every listed key is
// valid and two keys overlap during a rotation. A token naming a kid that is not listed is refused; a
// token without a kid is verified with the current key only.
//
// For prod the gateway can instead verify ES256 tokens minted elsewhere: the public keys come from a JWKS
// document (LoadJWKS), the algorithm is then pinned to ES256, every token must name a listed kid, and
// the gateway issues nothing.
package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Audience is the only audience the gateway issues and accepts.
const Audience = "shopmesh"

// ScopeAdmin allows the admin routes (stock import).
const ScopeAdmin = "admin"

// DefaultKeyID is the kid of the single key built from a bare secret (GATEWAY_JWT_SECRET).
const DefaultKeyID = "default"

// DefaultLeeway is the clock skew allowed on exp, nbf and iat unless configured otherwise.
const DefaultLeeway = 30 * time.Second

// algorithm is the only signing algorithm issued and accepted.
const algorithm = "HS256"

// ErrInvalidToken is wrapped by every verification failure; the wrapped errors say why (the jwt
// package's ErrTokenExpired, ErrTokenInvalidAudience, ... and ErrUnknownKey). The reason is for the log,
// never for the client.
var ErrInvalidToken = errors.New("invalid token")

// ErrUnknownKey is wrapped when a token's kid names no configured key.
var ErrUnknownKey = errors.New("unknown key id")

// Claims are what a verified token says about its bearer.
type Claims struct {
	Subject string
	Scopes  []string
	Expiry  time.Time
}

// HasScope reports whether the token grants scope.
func (c Claims) HasScope(scope string) bool { return slices.Contains(c.Scopes, scope) }

// Key is one HS256 signing key and its id.
type Key struct {
	ID     string
	Secret []byte
}

// Options configure Tokens.
type Options struct {
	// Keys are the valid keys; the first signs. At least one; ids unique and non-empty. Unless Public is
	// set: then the tokens are ES256, verified with Public only, and Keys must be empty.
	Keys []Key
	// Public are ES256 verification keys by kid (LoadJWKS); with them the Tokens verify only and Issue
	// fails. Every token must name its key.
	Public map[string]*ecdsa.PublicKey

	Issuer string
	// Leeway is the clock skew allowed on exp, nbf and iat (>= 0).
	Leeway time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Tokens signs with the current key and verifies with any configured key.
type Tokens struct {
	keys    map[string][]byte
	current Key
	public  map[string]*ecdsa.PublicKey
	alg     string
	issuer  string
	parser  *jwt.Parser
	now     func() time.Time
}

// New returns Tokens with one key (kid "default") made of secret, for issuer, with DefaultLeeway; now
// nil means time.Now.
func New(secret, issuer string, now func() time.Time) (*Tokens, error) {
	return NewTokens(Options{Keys: []Key{{ID: DefaultKeyID, Secret: []byte(secret)}}, Issuer: issuer,
		Leeway: DefaultLeeway, Now: now})
}

// NewTokens returns Tokens for o.
func NewTokens(o Options) (*Tokens, error) {
	if o.Issuer == "" {
		return nil, errors.New("auth: issuer must be set")
	}
	if o.Leeway < 0 {
		return nil, fmt.Errorf("auth: leeway must be >= 0, got %v", o.Leeway)
	}
	t := &Tokens{keys: map[string][]byte{}, issuer: o.Issuer, alg: algorithm}
	switch {
	case len(o.Public) > 0 && len(o.Keys) > 0:
		return nil, errors.New("auth: set either HS256 keys or ES256 public keys, not both")
	case len(o.Public) > 0:
		t.alg, t.public = jwt.SigningMethodES256.Alg(), o.Public
	case len(o.Keys) == 0:
		return nil, errors.New("auth: at least one key must be set")
	}
	for _, k := range o.Keys {
		switch {
		case k.ID == "":
			return nil, errors.New("auth: every key needs an id")
		case len(k.Secret) == 0:
			return nil, fmt.Errorf("auth: key %q has no secret", k.ID)
		}
		if _, dup := t.keys[k.ID]; dup {
			return nil, fmt.Errorf("auth: key id %q is listed twice", k.ID)
		}
		t.keys[k.ID] = k.Secret
	}
	if len(o.Keys) > 0 {
		t.current = o.Keys[0]
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	t.now = now
	t.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{t.alg}),
		jwt.WithIssuer(o.Issuer),
		jwt.WithAudience(Audience),
		jwt.WithLeeway(o.Leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(now),
	)
	return t, nil
}

// ParseKeys parses "kid:secret,kid:secret" (the first is the current key). A secret may contain ':'
// but not ','; spaces around items are ignored.
func ParseKeys(s string) ([]Key, error) {
	var keys []Key
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		id, secret, ok := strings.Cut(item, ":")
		if !ok || strings.TrimSpace(id) == "" || secret == "" {
			return nil, fmt.Errorf("key %d: want kid:secret", len(keys)+1)
		}
		keys = append(keys, Key{ID: strings.TrimSpace(id), Secret: []byte(secret)})
	}
	if len(keys) == 0 {
		return nil, errors.New("no keys")
	}
	return keys, nil
}

// tokenClaims is the JSON claim set: the registered claims and the space-separated scopes.
type tokenClaims struct {
	jwt.RegisteredClaims
	Scope string `json:"scope,omitempty"`
}

// Issue returns a token for subject with scopes, valid for ttl, signed with the current key.
func (t *Tokens) Issue(subject string, scopes []string, ttl time.Duration) (string, error) {
	if t.public != nil {
		return "", errors.New("sign token: the gateway verifies ES256 tokens only, it holds no private key")
	}
	now := t.now()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: t.issuer, Subject: subject, Audience: jwt.ClaimStrings{Audience},
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)), IssuedAt: jwt.NewNumericDate(now),
		},
		Scope: strings.Join(scopes, " "),
	})
	tok.Header["kid"] = t.current.ID
	s, err := tok.SignedString(t.current.Secret)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// key picks the verification key named by the token's kid (the current key when there is none).
func (t *Tokens) key(tok *jwt.Token) (any, error) {
	raw, ok := tok.Header["kid"]
	if !ok && t.public == nil {
		return t.current.Secret, nil
	}
	kid, _ := raw.(string)
	if t.public != nil {
		if pub, ok := t.public[kid]; ok {
			return pub, nil
		}
	} else if secret, ok := t.keys[kid]; ok {
		return secret, nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownKey, kid)
}

// LoadJWKS reads the ES256 public keys of a JWKS document (RFC 7517: {"keys": [{"kty": "EC", "crv":
// "P-256", "kid", "x", "y"}]}). Keys of other types or uses are refused, not skipped, so a
// misconfigured file fails at start.
func LoadJWKS(data []byte) (map[string]*ecdsa.PublicKey, error) {
	var set struct {
		Keys []struct {
			Kty, Crv, Kid, X, Y, Use, Alg, D string
		} `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	keys := map[string]*ecdsa.PublicKey{}
	for i, k := range set.Keys {
		switch {
		case k.Kty != "EC" || k.Crv != "P-256":
			return nil, fmt.Errorf("jwks: key %d: want kty EC, crv P-256, got %q %q", i+1, k.Kty, k.Crv)
		case k.Kid == "":
			return nil, fmt.Errorf("jwks: key %d: no kid", i+1)
		case k.D != "":
			return nil, fmt.Errorf("jwks: key %q is a private key", k.Kid)
		case k.Use != "" && k.Use != "sig", k.Alg != "" && k.Alg != "ES256":
			return nil, fmt.Errorf("jwks: key %q: use %q alg %q, want sig ES256", k.Kid, k.Use, k.Alg)
		}
		if _, dup := keys[k.Kid]; dup {
			return nil, fmt.Errorf("jwks: key id %q is listed twice", k.Kid)
		}
		x, errX := base64.RawURLEncoding.DecodeString(k.X)
		y, errY := base64.RawURLEncoding.DecodeString(k.Y)
		if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
			return nil, fmt.Errorf("jwks: key %q: x and y must be 32-byte base64url", k.Kid)
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, fmt.Errorf("jwks: key %q: %w", k.Kid, err)
		}
		keys[k.Kid] = pub
	}
	if len(keys) == 0 {
		return nil, errors.New("jwks: no keys")
	}
	return keys, nil
}

// Verify checks the token's algorithm, key id, signature, exp, iat, nbf, issuer, audience and subject,
// and returns its claims. Every failure wraps ErrInvalidToken and the reason.
func (t *Tokens) Verify(token string) (Claims, error) {
	var c tokenClaims
	if _, err := t.parser.ParseWithClaims(token, &c, t.key); err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	switch {
	case c.IssuedAt == nil:
		return Claims{}, fmt.Errorf("%w: %w: iat", ErrInvalidToken, jwt.ErrTokenRequiredClaimMissing)
	case c.Subject == "":
		return Claims{}, fmt.Errorf("%w: %w: sub", ErrInvalidToken, jwt.ErrTokenRequiredClaimMissing)
	}
	return Claims{Subject: c.Subject, Scopes: strings.Fields(c.Scope), Expiry: c.ExpiresAt.Time}, nil
}
