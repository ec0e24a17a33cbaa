package infratest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// server is what the harness knows of one component: the variable naming its endpoint, and the
// variable (and default) of the port deploy/infra/infra.sh serves it on.
type server struct {
	endpoint, portVar, defaultPort string
}

var servers = map[string]server{
	"postgres": {DatabaseURL, "PG_PORT", "55432"},
	"kafka":    {KafkaBrokers, "KAFKA_PORT", "19092"},
	"nats":     {NatsURL, "NATS_PORT", "14222"},
	"nacos":    {NacosAddr, "NACOS_PORT", "18848"},
	"jaeger":   {OTLPEndpoint, "JAEGER_OTLP_GRPC_PORT", "4317"},
}

// Shared returns the endpoint of component ("postgres", "kafka", "nats", "nacos", "jaeger"), skipping
// or failing like Require, and holds a shared lock on that server until the test ends: a test that
// stops or restarts the server (Exclusive) waits for every user, in every test binary, to finish,
// and no user starts while it runs. The server must answer on its port.
func Shared(t testing.TB, component string) string {
	t.Helper()
	addr := lockServer(t, component, syscall.LOCK_SH)
	if err := dial(addr, 5*time.Second); err != nil {
		t.Fatalf("%s is set but unreachable: %v", servers[component].endpoint, err)
	}
	return addr
}

// Exclusive is Shared for a test that stops, starts or restarts the server (with Ctl or Control). It
// waits until no other test uses the server; when the test ends the server is started again, whatever
// happened, before the lock is released. A test holds either lock on a server, never both: the two
// would wait for each other.
func Exclusive(t testing.TB, component string) string {
	t.Helper()
	addr := lockServer(t, component, syscall.LOCK_EX)
	t.Cleanup(func() { Ctl(t, "start", component) })
	return addr
}

func lockServer(t testing.TB, component string, how int) string {
	t.Helper()
	s, ok := servers[component]
	if !ok {
		t.Fatalf("infratest: unknown component %q", component)
	}
	v := Require(t, s.endpoint)
	f, err := os.OpenFile(LockFile(component, v), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		_ = f.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() }) // closing releases the lock
	return v
}

// LockFile is the file whose flock Shared and Exclusive take for component's server at endpoint (the
// value of its environment variable). One lock per server, not per component: a copy of the servers
// on other ports (another checkout, a CI run) is locked apart. Tools that stop servers outside a
// test (the fault campaign) take the same lock.
func LockFile(component, endpoint string) string {
	return filepath.Join(os.TempDir(), "shopmesh-infra-"+component+"-"+sanitize(endpoint)+".lock")
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			return r
		}
		return '_'
	}, s)
}

// HostPort returns the first host:port an endpoint value names (a URL, or a comma-separated list).
func HostPort(v string) (string, error) {
	v = strings.TrimSpace(strings.Split(v, ",")[0])
	if strings.Contains(v, "://") {
		u, err := url.Parse(v)
		if err != nil {
			return "", err
		}
		v = u.Host
	}
	if _, _, err := net.SplitHostPort(v); err != nil {
		return "", err
	}
	return v, nil
}

func dial(endpoint string, within time.Duration) error {
	addr, err := HostPort(endpoint)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(within)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return conn.Close()
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Ctl runs `infra.sh <verb> <component>` (stop, start, restart) and fails the test if it fails. The
// test must hold Exclusive on the component.
func Ctl(t testing.TB, verb, component string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := Control(ctx, verb, component); err != nil {
		t.Fatal(err)
	}
}

// Control is Ctl for goroutines other than the test's: it returns the error. infra.sh is found by
// walking up from the working directory to the one holding go.work.
//
// It refuses to act when the endpoint the tests use is not the server infra.sh would act on — the
// port variables infra.sh reads (KAFKA_PORT, ...) and SHOPMESH_INFRA_DIR must be exported with the
// endpoint — so a test run against a private copy never stops the servers on the default ports.
func Control(ctx context.Context, verb, component string) error {
	s, ok := servers[component]
	if !ok {
		return fmt.Errorf("infratest: unknown component %q", component)
	}
	addr, err := HostPort(os.Getenv(s.endpoint))
	if err != nil {
		return fmt.Errorf("infra.sh %s %s: %s: %w", verb, component, s.endpoint, err)
	}
	_, port, _ := net.SplitHostPort(addr)
	want := os.Getenv(s.portVar)
	if want == "" {
		want = s.defaultPort
	}
	if port != want {
		return fmt.Errorf("infra.sh %s %s refused: %s=%s but infra.sh would act on port %s (export %s)",
			verb, component, s.endpoint, os.Getenv(s.endpoint), want, s.portVar)
	}
	if port != s.defaultPort && os.Getenv("SHOPMESH_INFRA_DIR") == "" {
		return fmt.Errorf("infra.sh %s %s refused: a server on a non-default port needs its SHOPMESH_INFRA_DIR exported",
			verb, component)
	}
	script, err := script()
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "bash", script, verb, component).CombinedOutput()
	if err != nil {
		return fmt.Errorf("infra.sh %s %s: %w\n%s", verb, component, err, out)
	}
	return nil
}

func script() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return filepath.Join(dir, "deploy", "infra", "infra.sh"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("infratest: go.work not found above the test directory")
		}
		dir = parent
	}
}
