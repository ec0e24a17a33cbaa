package devsecrets_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/shopmesh/shopmesh/deploy/devsecrets"
	"github.com/shopmesh/shopmesh/deploy/servicelist"
)

var list = []servicelist.Service{
	{Name: "order", Kind: servicelist.KindGRPC, Database: true, Kafka: true, NATS: true},
	{Name: "gateway", Kind: servicelist.KindHTTP},
}

func ensure(t *testing.T, o devsecrets.Options) devsecrets.Result {
	t.Helper()
	res, err := devsecrets.Ensure(o)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func values(t *testing.T, dir string) map[string]string {
	t.Helper()
	v, err := devsecrets.ReadValues(dir, list)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// Every value is created once, private (0600 in 0700 folders), distinct, and kept by a second run.
func TestEnsureCreatesPrivateValuesAndKeepsThem(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	o := devsecrets.Options{Dir: filepath.Join(base, "secrets"), K8sDir: filepath.Join(base, "k8s"), Services: list}
	res := ensure(t, o)
	if len(res.Created) != len(devsecrets.Values(list)) || len(res.Kept) != 0 {
		t.Fatalf("first run: %+v", res)
	}
	first := values(t, o.Dir)
	seen := map[string]string{}
	for name, v := range first {
		if len(v) < 43 {
			t.Errorf("%s: %d characters, want >= 43 (32 random bytes)", name, len(v))
		}
		if other, dup := seen[v]; dup {
			t.Errorf("%s and %s have the same value", name, other)
		}
		seen[v] = name
	}
	for _, d := range []string{o.Dir, filepath.Join(o.Dir, "compose"), o.K8sDir} {
		if m := mode(t, d); m != 0o700 {
			t.Errorf("%s: mode %v, want 0700", d, m)
		}
		entries, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if p := filepath.Join(d, e.Name()); !e.IsDir() && mode(t, p) != 0o600 {
				t.Errorf("%s: mode %v, want 0600", p, mode(t, p))
			}
		}
	}
	res = ensure(t, o)
	if len(res.Created) != 0 || len(res.Rotated) != 0 || len(res.Kept) != len(first) {
		t.Errorf("second run: %+v, want every value kept", res)
	}
	for name, v := range values(t, o.Dir) {
		if first[name] != v {
			t.Errorf("%s changed on a second run", name)
		}
	}
}

// The derived files carry the values: compose env files per container, the dev overlay's files
// without a trailing newline.
func TestEnsureWritesComposeAndK8sFiles(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	o := devsecrets.Options{Dir: filepath.Join(base, "secrets"), K8sDir: filepath.Join(base, "k8s"), Services: list}
	ensure(t, o)
	v := values(t, o.Dir)
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for file, want := range map[string][]string{
		"order.env":    {"ORDER_DSN=postgres://order:" + v["order-db-password"] + "@postgres:5432/order?sslmode=disable", "ORDER_NATS_PASSWORD=" + v["order-nats-password"]},
		"nats.env":     {"NATS_ADMIN_PASSWORD=" + v["nats-admin-password"], "ORDER_NATS_PASSWORD=" + v["order-nats-password"]},
		"gateway.env":  {"GATEWAY_JWT_KEYS=" + v["gateway-jwt-keys"]},
		"postgres.env": {"POSTGRES_PASSWORD=" + v["postgres-password"], "ORDER_DB_PASSWORD=" + v["order-db-password"]},
		"nacos.env":    {"NACOS_AUTH_TOKEN=" + v["nacos-auth-token"]},
		"grafana.env":  {"GF_SECURITY_ADMIN_PASSWORD=" + v["grafana-admin-password"]},
	} {
		got := read(filepath.Join(o.Dir, "compose", file))
		for _, line := range want {
			if !strings.Contains(got, "\n"+line+"\n") {
				t.Errorf("%s lacks %s…", file, line[:strings.IndexByte(line, '=')])
			}
		}
	}
	if got := read(filepath.Join(o.Dir, "compose", "gateway.env")); strings.Contains(got, "DSN") {
		t.Error("gateway.env holds a DSN; the gateway has no database")
	}
	for file, want := range map[string]string{
		"order-dsn":           devsecrets.DSN("order", v["order-db-password"]),
		"order-db-password":   v["order-db-password"],
		"gateway-jwt-keys":    v["gateway-jwt-keys"],
		"postgres-password":   v["postgres-password"],
		"nacos-auth-token":    v["nacos-auth-token"],
		"order-nats-password": v["order-nats-password"],
		"nats-admin-password": v["nats-admin-password"],
	} {
		if got := read(filepath.Join(o.K8sDir, file)); got != want {
			t.Errorf("k8s %s = %q, want the value without newline", file, got)
		}
	}
}

// Rotating the JWT keys puts a new key first and keeps the previous signing key second; other values
// stay. A second rotation drops the oldest key.
func TestRotateJWTKeysKeepsPreviousKey(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	o := devsecrets.Options{Dir: filepath.Join(base, "secrets"), Services: list, Now: now}
	ensure(t, o)
	before := values(t, o.Dir)
	if !strings.HasPrefix(before["gateway-jwt-keys"], "k20260102T030405:") || strings.Contains(before["gateway-jwt-keys"], ",") {
		t.Fatalf("first keys %q: want one key with kid k20260102T030405", before["gateway-jwt-keys"])
	}
	o.Rotate, o.Now = []string{"gateway-jwt-keys"}, now.Add(time.Hour)
	res := ensure(t, o)
	if len(res.Rotated) != 1 || res.Rotated[0] != "gateway-jwt-keys" {
		t.Fatalf("rotated %v", res.Rotated)
	}
	after := values(t, o.Dir)
	keys := strings.Split(after["gateway-jwt-keys"], ",")
	if len(keys) != 2 || !strings.HasPrefix(keys[0], "k20260102T040405:") || keys[1] != before["gateway-jwt-keys"] {
		t.Errorf("after rotation %q: want the new key, then the previous one", after["gateway-jwt-keys"])
	}
	for name, v := range before {
		if name != "gateway-jwt-keys" && after[name] != v {
			t.Errorf("%s changed though only gateway-jwt-keys rotated", name)
		}
	}
	o.Now = now.Add(2 * time.Hour)
	ensure(t, o)
	third := strings.Split(values(t, o.Dir)["gateway-jwt-keys"], ",")
	if len(third) != 2 || third[1] != keys[0] {
		t.Errorf("second rotation %q: want the new key and the previous signing key only", third)
	}
}

func TestRotateAllAndUnknownName(t *testing.T) {
	t.Parallel()
	o := devsecrets.Options{Dir: t.TempDir(), Services: list}
	ensure(t, o)
	before := values(t, o.Dir)
	o.Rotate = []string{"all"}
	ensure(t, o)
	for name, v := range values(t, o.Dir) {
		if v == before[name] {
			t.Errorf("%s kept under rotate all", name)
		}
	}
	o.Rotate = []string{"no-such-secret"}
	if _, err := devsecrets.Ensure(o); err == nil || !strings.Contains(err.Error(), "no-such-secret") {
		t.Errorf("unknown rotate name: %v", err)
	}
}

// A looser mode left on a value file (a copy by hand) is tightened by the next run.
func TestEnsureTightensModes(t *testing.T) {
	t.Parallel()
	o := devsecrets.Options{Dir: t.TempDir(), Services: list}
	ensure(t, o)
	p := filepath.Join(o.Dir, "postgres-password")
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(o.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ensure(t, o)
	if mode(t, p) != 0o600 || mode(t, o.Dir) != 0o700 {
		t.Errorf("modes %v %v, want 0600 0700", mode(t, p), mode(t, o.Dir))
	}
}

// constReader returns the same byte for ever.
type constReader byte

func (c constReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(c)
	}
	return len(p), nil
}

// Passwords start with a letter whatever the random bytes: 0xF8… encodes as "-…" and 0xD0… as "0…",
// which nats-server reads as a number ("Expected a digit but got 'q'") and then refuses to start.
func TestPasswordsStartWithALetter(t *testing.T) {
	t.Parallel()
	for _, b := range []byte{0xF8, 0xD0, 0x00} {
		o := devsecrets.Options{Dir: t.TempDir(), Services: list, Rand: constReader(b)}
		ensure(t, o)
		for name, v := range values(t, o.Dir) {
			if !strings.Contains(name, "password") {
				continue
			}
			if c := rune(v[0]); !unicode.IsLetter(c) {
				t.Errorf("random 0x%X: %s = %q… starts with %q", b, name, v[:4], c)
			}
		}
	}
}
