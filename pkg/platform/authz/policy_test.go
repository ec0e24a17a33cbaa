package authz_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/authz"
)

const (
	gateway = "spiffe://shopmesh.local/gateway"
	evil    = "spiffe://shopmesh.local/evil"
)

// rules is a small call graph in the shape services declare.
var rules = authz.Rules{
	"/shop.a.v1.AService/*":          {authz.Edge},
	"/shop.b.v1.BService/Read":       {authz.Edge, "a"},
	"/shop.b.v1.BService/Reserve":    {"a"},
	"/shop.b.v1.BService/Import":     {authz.Edge, authz.Edge},
	"/shop.b.v1.BService/NobodyYet":  {},
	"/shop.c.v1.CService/Authorize":  {"a", "b"},
	"/shop.c.v1.CService/GetAccount": {authz.Edge},
}

func TestNewPolicyResolvesNamesAndEdge(t *testing.T) {
	t.Parallel()
	p, err := authz.NewPolicy(rules, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	a, b := "spiffe://shopmesh.local/a", "spiffe://shopmesh.local/b"
	for _, tc := range []struct {
		id, method string
		want       bool
	}{
		{gateway, "/shop.a.v1.AService/Create", true},
		{gateway, "/shop.a.v1.AService/Unknown", true}, // service wildcard
		{a, "/shop.a.v1.AService/Create", false},
		{gateway, "/shop.b.v1.BService/Read", true},
		{a, "/shop.b.v1.BService/Read", true},
		{b, "/shop.b.v1.BService/Read", false},
		{a, "/shop.b.v1.BService/Reserve", true},
		{gateway, "/shop.b.v1.BService/Reserve", false},
		{gateway, "/shop.b.v1.BService/Import", true},
		{gateway, "/shop.b.v1.BService/NobodyYet", false},
		{a, "/shop.b.v1.BService/NobodyYet", false},
		{gateway, "/shop.b.v1.BService/Other", false}, // no key, no wildcard
		{b, "/shop.c.v1.CService/Authorize", true},
		{gateway, "/shop.c.v1.CService/Authorize", false},
		{"spiffe://shopmesh.local/edge", "/shop.c.v1.CService/GetAccount", false}, // Edge is a placeholder, not a name
		{evil, "/shop.c.v1.CService/GetAccount", false},
		{evil, "/grpc.health.v1.Health/Check", true},
		{evil, "/grpc.health.v1.Health/Watch", true},
		{gateway, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", false},
		{gateway, "/shop.a.v1.AServiceX/Create", false},
		{gateway, "", false},
		{gateway, "/", false},
	} {
		if got := p.Allowed(tc.id, tc.method); got != tc.want {
			t.Errorf("%s → %s: got %v, want %v", tc.id, tc.method, got, tc.want)
		}
	}
	if got := p.Rules()["/shop.b.v1.BService/Import"]; len(got) != 1 || got[0] != gateway {
		t.Errorf("Import: %v, want the edge once", got)
	}
	p.AllowReflection = true
	if !p.Allowed(gateway, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo") {
		t.Error("reflection not allowed with AllowReflection")
	}
}

// The edge is configuration: under another edge name the gateway's identity is an ordinary caller.
func TestNewPolicyEdgeIsConfigured(t *testing.T) {
	t.Parallel()
	p, err := authz.NewPolicy(rules, "bff")
	if err != nil {
		t.Fatal(err)
	}
	bff := "spiffe://shopmesh.local/bff"
	if !p.Allowed(bff, "/shop.c.v1.CService/GetAccount") || !p.Allowed(bff, "/shop.a.v1.AService/Create") {
		t.Error("the configured edge is not allowed where the rules name authz.Edge")
	}
	if p.Allowed(gateway, "/shop.c.v1.CService/GetAccount") || p.Allowed(gateway, "/shop.a.v1.AService/Create") {
		t.Error("gateway allowed although the edge is bff")
	}
	if !p.Allowed("spiffe://shopmesh.local/a", "/shop.b.v1.BService/Reserve") {
		t.Error("a named caller lost its rule")
	}
}

func TestNewPolicyRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		rules authz.Rules
		edge  string
		want  string // in the error
	}{
		{"no rules", authz.Rules{}, "gateway", "no rules"},
		{"nil rules", nil, "gateway", "no rules"},
		{"bad edge", authz.Rules{"/a.B/C": {"x"}}, "Gateway", `edge "Gateway"`},
		{"empty edge", authz.Rules{"/a.B/C": {"x"}}, "", `edge ""`},
		{"key without slash", authz.Rules{"a.B/C": {"x"}}, "gateway", `"a.B/C"`},
		{"partial wildcard", authz.Rules{"/a.B/C*": {"x"}}, "gateway", `"/a.B/C*"`},
		{"service wildcard", authz.Rules{"/*/C": {"x"}}, "gateway", `"/*/C"`},
		{"too deep", authz.Rules{"/a.B/C/D": {"x"}}, "gateway", `"/a.B/C/D"`},
		{"upper-case caller", authz.Rules{"/a.B/C": {"Order"}}, "gateway", `/a.B/C: bad caller "Order"`},
		{"spiffe id as caller", authz.Rules{"/a.B/C": {"spiffe://shopmesh.local/x"}}, "gateway", "bad caller"},
		{"empty caller", authz.Rules{"/a.B/C": {""}}, "gateway", `bad caller ""`},
	} {
		p, err := authz.NewPolicy(tc.rules, tc.edge)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, %v; want an error containing %q", tc.name, p, err, tc.want)
		}
	}
	// Every problem is reported at once.
	_, err := authz.NewPolicy(authz.Rules{"/a.B/C": {"X"}, "bad": {"y"}, "/a.B/D": {"ok", "Z"}}, "gateway")
	if err == nil || !strings.Contains(err.Error(), `"X"`) || !strings.Contains(err.Error(), `"bad"`) || !strings.Contains(err.Error(), `"Z"`) {
		t.Errorf("got %v, want all three problems", err)
	}
}

func TestParsePolicyRejects(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{
		"methods:\n  /a.B/C: [spiffe://other.domain/x]\n",
		"methods:\n  /a.B/C: [spiffe://shopmesh.local/X]\n",
		"methods:\n  /a.B/C: [spiffe://shopmesh.local/x/y]\n",
		"methods:\n  /a.B/C: [spiffe://shopmesh.local/x?q=1]\n",
		"methods:\n  a.B/C: [spiffe://shopmesh.local/x]\n",
		"methods:\n  /a.B/C*: [spiffe://shopmesh.local/x]\n",
		"methods:\n  /*/C: [spiffe://shopmesh.local/x]\n",
		"methods:\n  /a.B/C/D: [spiffe://shopmesh.local/x]\n",
		"method:\n  /a.B/C: [spiffe://shopmesh.local/x]\n", // unknown field
		"methods: [",
	} {
		if _, err := authz.ParsePolicy([]byte(doc)); err == nil {
			t.Errorf("accepted %q", doc)
		}
	}
	p, err := authz.ParsePolicy([]byte("methods:\n  /a.B/*: [spiffe://shopmesh.local/x, spiffe://shopmesh.local/x]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Rules()["/a.B/*"]; len(got) != 1 || !p.Allowed("spiffe://shopmesh.local/x", "/a.B/C") {
		t.Errorf("rules %v", got)
	}
}

func TestPolicyWithoutPeerIdentityDenies(t *testing.T) {
	t.Parallel()
	p, err := authz.NewPolicy(rules, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	err = p.Authorize(context.Background(), "/shop.a.v1.AService/Create")
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "no verified peer") {
		t.Errorf("got %v", err)
	}
	if err := p.Authorize(context.Background(), "/grpc.health.v1.Health/Check"); err != nil {
		t.Errorf("health: %v", err)
	}
}

func TestLoadPolicy(t *testing.T) {
	t.Parallel()
	if _, err := authz.LoadPolicy(""); err == nil {
		t.Error("no file accepted")
	}
	dir := t.TempDir()
	if _, err := authz.LoadPolicy(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte("methods:\n  /a.B/*: [spiffe://shopmesh.local/x]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := authz.LoadPolicy(path)
	if err != nil || !p.Allowed("spiffe://shopmesh.local/x", "/a.B/C") || p.Allowed(gateway, "/a.B/C") {
		t.Errorf("file policy: %v", err)
	}
}
