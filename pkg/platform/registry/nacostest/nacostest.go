// Package nacostest lets tests of several packages share the one real Nacos: a test that stops it holds
// an exclusive lock, tests that only use it hold a shared one, across test binaries running at once.
package nacostest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
)

// Require returns NACOS_ADDR (skipping or failing per infratest) and holds a shared lock until the test
// ends, so no outage test stops Nacos under it.
func Require(t testing.TB) string {
	t.Helper()
	addr := infratest.Require(t, infratest.NacosAddr)
	lock(t, syscall.LOCK_SH)
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatalf("NACOS_ADDR=%s is set but unreachable: %v", addr, err)
	}
	_ = conn.Close()
	return addr
}

// RequireExclusive is Require for tests that stop and start Nacos. They wait for users in other test
// binaries to finish first; Nacos is started again when the test ends, whatever happened.
func RequireExclusive(t testing.TB) string {
	t.Helper()
	addr := infratest.Require(t, infratest.NacosAddr)
	lock(t, syscall.LOCK_EX)
	t.Cleanup(func() { Ctl(t, "start") })
	return addr
}

func lock(t testing.TB, how int) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "shopmesh-nacos-test.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		_ = f.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() }) // closing releases the lock
}

// Ctl runs `infra.sh <verb> nacos`, found by walking up to the directory holding go.work.
func Ctl(t testing.TB, verb string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", script(t), verb, "nacos").CombinedOutput()
	if err != nil {
		t.Fatalf("infra.sh %s nacos: %v\n%s", verb, err, out)
	}
}

func script(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return filepath.Join(dir, "deploy", "infra", "infra.sh")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.work not found above the test directory")
		}
		dir = parent
	}
}

// Dir returns a fresh directory for an SDK client's cache and logs. Not t.TempDir: the SDK keeps
// writing its log files for a moment after the client is closed, which makes TempDir's strict
// cleanup fail the test; removal here is best effort.
func Dir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "shopmesh-nacos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
