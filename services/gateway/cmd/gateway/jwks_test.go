package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/shopmesh/shopmesh/services/gateway/internal/fakes"
)

// TestRunVerifiesES256WithJWKS starts the gateway (test profile) with GATEWAY_JWT_JWKS_FILE: a token
// signed by the JWKS key is served, one signed by another key with the same kid gets 401, and a JWKS
// file that is not one stops the start.
func TestRunVerifiesES256WithJWKS(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, err := key.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	doc, _ := json.Marshal(map[string]any{"keys": []map[string]string{{"kty": "EC", "crv": "P-256", "kid": "prod-1",
		"x": enc(pub[1:33]), "y": enc(pub[33:])}}})
	dir := t.TempDir()
	jwksFile, badFile := filepath.Join(dir, "jwks.json"), filepath.Join(dir, "bad.json")
	if err := os.WriteFile(jwksFile, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(badFile, []byte(`{"keys":[{"kty":"oct","kid":"x","k":"c2VjcmV0"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	b := fakes.Start(t)
	env := map[string]string{
		"GATEWAY_PROFILE":                     "test",
		"GATEWAY_HTTP_ADDR":                   "127.0.0.1:0",
		"GATEWAY_ADMIN_ADDR":                  "127.0.0.1:0",
		"GATEWAY_JWT_JWKS_FILE":               badFile,
		"GATEWAY_TARGETS_ORDER_ADDRESSES":     b.Addrs["order"],
		"GATEWAY_TARGETS_INVENTORY_ADDRESSES": b.Addrs["inventory"],
		"GATEWAY_TARGETS_PAYMENT_ADDRESSES":   b.Addrs["payment"],
	}
	err = runService(ctx, nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "jwt_jwks_file") {
		t.Fatalf("start with a bad JWKS file: %v", err)
	}

	env["GATEWAY_JWT_JWKS_FILE"] = jwksFile
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	gw := startGateway(runCtx, t, env)
	sign := func(k *ecdsa.PrivateKey) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": "shopmesh-gateway", "aud": "shopmesh",
			"sub": "cust-1", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()})
		tok.Header["kid"] = "prod-1"
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	get := func(token string) int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+gw.addr+"/v1/accounts/me", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if s := get(sign(key)); s != http.StatusOK {
		t.Fatalf("token signed by the JWKS key: %d", s)
	}
	if s := get(sign(other)); s != http.StatusUnauthorized {
		t.Fatalf("token signed by another key: %d", s)
	}
	stop()
	if err := <-gw.done; err != nil {
		t.Fatalf("run: %v", err)
	}
}
