// Package nacostest lets tests of several packages share the one real Nacos: a test that stops it holds
// an exclusive lock, tests that only use it hold a shared one, across test binaries running at once.
package nacostest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/clients"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos"
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

// Ctl runs `infra.sh <verb> nacos`, found by walking up to the directory holding go.work. After "start"
// it also checks that configs can be written: rnacos 0.8.8 can come back from a restart with an empty
// single-node raft membership ("unknown the raft leader addr!" on every config write, naming unaffected).
// Its raft data is then deleted and Nacos started again, so tests after an outage test find a working
// config service (configs published before are lost, as ephemeral instances are anyway).
func Ctl(t testing.TB, verb string) {
	t.Helper()
	run(t, verb)
	if verb != "start" || configWritable(15*time.Second) {
		return
	}
	dir := os.Getenv("SHOPMESH_INFRA_DIR")
	if dir == "" {
		dir = filepath.Join(filepath.Dir(filepath.Dir(filepath.Dir(script(t)))), ".run", "infra")
	}
	t.Logf("nacos restarted without a raft leader; resetting its data in %s", dir)
	run(t, "stop")
	if err := os.RemoveAll(filepath.Join(dir, "nacos", "data")); err != nil {
		t.Fatal(err)
	}
	run(t, "start")
	if !configWritable(30 * time.Second) {
		t.Fatal("nacos: configs not writable after resetting its raft data")
	}
}

func run(t testing.TB, verb string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", script(t), verb, "nacos").CombinedOutput()
	if err != nil {
		t.Fatalf("infra.sh %s nacos: %v\n%s", verb, err, out)
	}
}

// Credential variables written by deploy/infra/infra.sh for a set started with INFRA_AUTH=1.
const (
	Username = "NACOS_USERNAME"
	Password = "NACOS_PASSWORD"
)

// Auth returns cfg logging in as NACOS_USERNAME with NACOS_PASSWORD, as they are set (both unset for
// a Nacos that does not authenticate: cfg is then returned as it is).
func Auth(cfg nacos.Config) nacos.Config {
	cfg.Username, cfg.Password = os.Getenv(Username), config.Secret(os.Getenv(Password))
	return cfg
}

// Login logs in to the Nacos at addr (open API /nacos/v1/auth/login) and returns the access token the
// open API takes as the accessToken parameter; an error when Nacos refuses the credential.
func Login(ctx context.Context, addr, user, password string) (string, error) {
	form := url.Values{"username": {user}, "password": {password}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/nacos/v1/auth/login", strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return "", err
	}
	var res struct {
		AccessToken string `json:"accessToken"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &res) != nil || res.AccessToken == "" {
		return "", fmt.Errorf("nacos login as %q refused: %d %s", user, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return res.AccessToken, nil
}

// AccessToken logs in as NACOS_USERNAME (Login) and returns the token for the open API's accessToken
// parameter; "" when NACOS_USERNAME is unset (a Nacos that does not authenticate).
func AccessToken(ctx context.Context, addr string) (string, error) {
	user := os.Getenv(Username)
	if user == "" {
		return "", nil
	}
	return Login(ctx, addr, user, os.Getenv(Password))
}

// configWritable publishes a probe config through the open API (logged in as NACOS_USERNAME when it
// is set) until it succeeds or bound passes.
func configWritable(bound time.Duration) bool {
	addr := os.Getenv(infratest.NacosAddr)
	form := url.Values{"dataId": {"nacostest-probe"}, "group": {"nacostest"}, "content": {"ok"}}
	for deadline := time.Now().Add(bound); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		token, err := AccessToken(ctx, addr)
		if err != nil {
			cancel()
			continue
		}
		if token != "" {
			form.Set("accessToken", token)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/nacos/v1/cs/configs", strings.NewReader(form.Encode()))
		if err != nil {
			cancel()
			return false
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "true" {
				cancel()
				return true
			}
		}
		cancel()
	}
	return false
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
	dir, err := os.MkdirTemp("", "shopmesh-nacos-") //nolint:usetesting // see above: TempDir cleanup races the SDK log
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// Publisher returns a function publishing config documents to cfg's Nacos group through a config client
// of its own (as an operator's console would; logged in as NACOS_USERNAME when cfg has no user), failing
// t when Nacos refuses one.
func Publisher(t testing.TB, cfg nacos.Config) func(dataID, content string) {
	t.Helper()
	cfg.CacheDir, cfg.LogDir = Dir(t), Dir(t)
	if cfg.Username == "" {
		cfg = Auth(cfg)
	}
	cc, servers, err := nacos.SDKConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := clients.NewConfigClient(vo.NacosClientParam{ClientConfig: &cc, ServerConfigs: servers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.CloseClient)
	return func(dataID, content string) {
		t.Helper()
		if ok, err := pub.PublishConfig(vo.ConfigParam{DataId: dataID, Group: cfg.Group, Content: content}); err != nil || !ok {
			t.Fatalf("publish %s: ok=%v err=%v", dataID, ok, err)
		}
		// Wait until Nacos serves what it acknowledged (a fresh rnacos applies writes through its raft
		// log a moment later), so a reader started next sees this version.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			got, err := pub.GetConfig(vo.ConfigParam{DataId: dataID, Group: cfg.Group})
			if err == nil && got == content {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("published %s is not served back within 10 s: got %q, %v", dataID, got, err)
			}
		}
	}
}
