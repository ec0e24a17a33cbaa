package auth

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	tokens, err := New("0123456789abcdef0123456789abcdef", "shopmesh-gateway", func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	other, _ := New("another-secret-another-secret-xx", "shopmesh-gateway", func() time.Time { return now })
	good, err := tokens.Issue("cust-1", []string{ScopeAdmin}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	later := now.Add(time.Hour)
	noneHeader := strings.Split(tokens.Forge("none", "shopmesh-gateway", Audience, "cust-1", later), ".")[0]

	tests := []struct {
		name  string
		token string
		why   string // "" = valid
	}{
		{"valid", good, ""},
		{"valid, forged with the same secret", tokens.Forge("HS256", "shopmesh-gateway", Audience, "cust-1", later), ""},
		{"bad signature", other.Forge("HS256", "shopmesh-gateway", Audience, "cust-1", later), "bad signature"},
		{"alg none", tokens.Forge("none", "shopmesh-gateway", Audience, "cust-1", later), "algorithm"},
		{"alg none, empty signature", noneHeader + "." + parts[1] + ".", "algorithm"},
		{"alg HS512", tokens.Forge("HS512", "shopmesh-gateway", Audience, "cust-1", later), "algorithm"},
		{"expired", tokens.Forge("HS256", "shopmesh-gateway", Audience, "cust-1", now.Add(-time.Second)), "expired"},
		{"wrong audience", tokens.Forge("HS256", "shopmesh-gateway", "elsewhere", "cust-1", later), "audience"},
		{"wrong issuer", tokens.Forge("HS256", "evil", Audience, "cust-1", later), "issuer"},
		{"no subject", tokens.Forge("HS256", "shopmesh-gateway", Audience, "", later), "subject"},
		{"two parts", parts[0] + "." + parts[1], "malformed"},
		{"garbage", "a.b.c", "malformed"},
		{"tampered claims", parts[0] + "." + parts[1] + "x." + parts[2], "bad signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := tokens.Verify(tt.token)
			if tt.why == "" {
				if err != nil || c.Subject != "cust-1" {
					t.Fatalf("Verify = %+v, %v; want cust-1", c, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("Verify error = %v, want %q", err, tt.why)
			}
		})
	}
}

func TestIssueCarriesScopes(t *testing.T) {
	t.Parallel()
	tokens, _ := New("0123456789abcdef0123456789abcdef", "iss", nil)
	tok, err := tokens.Issue("cust-2", []string{ScopeAdmin}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tokens.Verify(tok)
	if err != nil || !c.HasScope(ScopeAdmin) || c.HasScope("root") {
		t.Fatalf("claims %+v, %v", c, err)
	}
}
