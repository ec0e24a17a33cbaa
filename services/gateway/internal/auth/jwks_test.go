package auth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/shopmesh/shopmesh/services/gateway/internal/auth"
)

func jwk(t *testing.T, kid string, k *ecdsa.PrivateKey) map[string]string {
	t.Helper()
	b, err := k.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return map[string]string{"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
		"x": enc(b[1:33]), "y": enc(b[33:])}
}

func jwks(t *testing.T, keys ...map[string]string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func es256(t *testing.T, kid string, k *ecdsa.PrivateKey, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestES256WithJWKS(t *testing.T) {
	t.Parallel()
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	public, err := auth.LoadJWKS(jwks(t, jwk(t, "e2", k2), jwk(t, "e1", k1)))
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokens(auth.Options{Public: public, Issuer: iss, Leeway: 30 * time.Second, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.Issue("cust-1", nil, time.Hour); err == nil {
		t.Fatal("a verify-only gateway issued a token")
	}
	// alg confusion: an HS256 token keyed with the public key's bytes.
	pubBytes, _ := k2.PublicKey.Bytes()
	hsParts := strings.Split(forge(t, "HS256", "e2", string(pubBytes), claims(nil)), ".")
	m := hmac.New(sha256.New, pubBytes)
	m.Write([]byte(hsParts[0] + "." + hsParts[1]))
	confused := hsParts[0] + "." + hsParts[1] + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"current key", es256(t, "e2", k2, claims(nil)), nil},
		{"other listed key", es256(t, "e1", k1, claims(nil)), nil},
		{"unknown kid", es256(t, "e9", k2, claims(nil)), auth.ErrUnknownKey},
		{"no kid", es256(t, "", k2, claims(nil)), auth.ErrUnknownKey},
		{"unlisted signer", es256(t, "e2", stranger, claims(nil)), jwt.ErrTokenSignatureInvalid},
		{"HS256 keyed with the public key", confused, jwt.ErrTokenSignatureInvalid},
		{"alg none", forge(t, "none", "e2", "", claims(nil)), jwt.ErrTokenSignatureInvalid},
		{"expired", es256(t, "e2", k2, claims(map[string]any{"exp": now.Add(-time.Minute).Unix()})), jwt.ErrTokenExpired},
		{"wrong audience", es256(t, "e2", k2, claims(map[string]any{"aud": "billing"})), jwt.ErrTokenInvalidAudience},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := tokens.Verify(tt.token)
			if tt.want == nil {
				if err != nil || c.Subject != "cust-1" {
					t.Fatalf("Verify = %+v, %v", c, err)
				}
				return
			}
			if !errors.Is(err, auth.ErrInvalidToken) || !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestLoadJWKSRefuses(t *testing.T) {
	t.Parallel()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edit := func(f func(map[string]string)) []byte {
		j := jwk(t, "e1", k)
		f(j)
		return jwks(t, j)
	}
	for name, doc := range map[string][]byte{
		"not json":      []byte("{"),
		"empty":         jwks(t),
		"rsa":           edit(func(j map[string]string) { j["kty"] = "RSA" }),
		"P-384":         edit(func(j map[string]string) { j["crv"] = "P-384" }),
		"no kid":        edit(func(j map[string]string) { delete(j, "kid") }),
		"private":       edit(func(j map[string]string) { j["d"] = "AAAA" }),
		"encryption":    edit(func(j map[string]string) { j["use"] = "enc" }),
		"off the curve": edit(func(j map[string]string) { j["y"] = j["x"] }),
		"short x":       edit(func(j map[string]string) { j["x"] = "AAAA" }),
		"duplicate kid": jwks(t, jwk(t, "e1", k), jwk(t, "e1", k)),
	} {
		if _, err := auth.LoadJWKS(doc); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := auth.NewTokens(auth.Options{Issuer: iss, Keys: []auth.Key{{ID: "k", Secret: []byte(secret1)}},
		Public: map[string]*ecdsa.PublicKey{"e1": &k.PublicKey}}); err == nil {
		t.Error("NewTokens accepted both HS256 keys and ES256 public keys")
	}
}
