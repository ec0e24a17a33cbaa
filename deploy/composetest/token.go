package composetest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Token claims the gateway checks (services/gateway/internal/auth): issuer and audience.
const (
	tokenIssuer   = "shopmesh-gateway"
	tokenAudience = "shopmesh"
)

// SignToken returns an HS256 JWT for subject signed with the first key of keys, the content of
// .run/secrets/gateway-jwt-keys ("kid:secret,kid:secret", the current key first), carrying its kid: what
// deploy/compose/README.md tells users of the compose profile to do with openssl.
func SignToken(keys, subject string, scopes []string, now time.Time, ttl time.Duration) (string, error) {
	first, _, _ := strings.Cut(strings.TrimSpace(keys), ",")
	kid, secret, ok := strings.Cut(strings.TrimSpace(first), ":")
	if !ok || strings.TrimSpace(kid) == "" || secret == "" {
		return "", errors.New("gateway jwt keys: want kid:secret")
	}
	header, err := json.Marshal(map[string]string{"alg": "HS256", "typ": "JWT", "kid": strings.TrimSpace(kid)})
	if err != nil {
		return "", fmt.Errorf("token header: %w", err)
	}
	claims := map[string]any{
		"iss": tokenIssuer, "aud": tokenAudience, "sub": subject,
		"iat": now.Unix(), "exp": now.Add(ttl).Unix(),
	}
	if len(scopes) > 0 {
		claims["scope"] = strings.Join(scopes, " ")
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("token claims: %w", err)
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(header) + "." + enc.EncodeToString(payload)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil)), nil
}
