package security

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/clients"
	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
)

// nacosTries is how many times each Nacos open-API attack is tried.
const nacosTries = 20

// nacosAuth is the authenticated Nacos of `INFRA_AUTH=1 infra.sh up nacos` (its infra.env).
type nacosAuth struct{ addr, user, password string }

func requireNacosAuth(t *testing.T) nacosAuth {
	t.Helper()
	return nacosAuth{
		addr:     infratest.Require(t, infratest.NacosAddr),
		user:     infratest.Require(t, "NACOS_USERNAME"),
		password: infratest.Require(t, "NACOS_PASSWORD"),
	}
}

// openAPI makes one open-API request (form-encoded for POST/DELETE) and returns the status and body.
func (n nacosAuth) openAPI(ctx context.Context, method, path string, q url.Values) (int, string, error) {
	target, body := "http://"+n.addr+path, io.Reader(nil)
	if method == http.MethodGet {
		target += "?" + q.Encode()
	} else {
		body = strings.NewReader(q.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return 0, "", err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// login returns an access token for user/password, or the refusal.
func (n nacosAuth) login(ctx context.Context, user, password string) (string, int, string, error) {
	code, body, err := n.openAPI(ctx, http.MethodPost, "/nacos/v1/auth/login", url.Values{"username": {user}, "password": {password}})
	if err != nil {
		return "", 0, "", err
	}
	if code == http.StatusOK && strings.Contains(body, `"accessToken":"`) {
		tok := body[strings.Index(body, `"accessToken":"`)+len(`"accessToken":"`):]
		return tok[:strings.IndexByte(tok, '"')], code, body, nil
	}
	return "", code, body, nil
}

// adminToken logs in as NACOS_USERNAME.
func (n nacosAuth) adminToken(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	tok, code, body, err := n.login(ctx, n.user, n.password)
	if err != nil || tok == "" {
		t.Fatalf("login as %s: %d %s %v", n.user, code, body, err)
	}
	return tok
}

// config reads a config document as the admin ("" when there is none).
func (n nacosAuth) config(ctx context.Context, token, dataID string) (string, error) {
	code, body, err := n.openAPI(ctx, http.MethodGet, "/nacos/v1/cs/configs",
		url.Values{"dataId": {dataID}, "group": {"DEFAULT_GROUP"}, "accessToken": {token}})
	switch {
	case err != nil:
		return "", err
	case code == http.StatusNotFound:
		return "", nil
	case code != http.StatusOK:
		return "", fmt.Errorf("config %s as admin: %d %s", dataID, code, body)
	}
	return body, nil
}

// A config document (a fault injection, a rate limit, a breaker setting the services apply at once)
// pushed to Nacos without a login, with a made-up access token, or an instance registered without one,
// is refused with 403 and Nacos keeps nothing of it; a login with a wrong password gets no token.
func TestNacosRefusesUnauthenticatedWrites(t *testing.T) {
	pushes := []struct {
		attack string
		token  func() string
	}{
		{"Nacos: config pushed without credentials (open API)", func() string { return "" }},
		{"Nacos: config pushed with a forged access token", func() string { return randHex(t) + randHex(t) + randHex(t) }},
	}
	// The rows first: without the server the test skips, and the table lists them as skipped.
	rows := make([]*Attack, len(pushes))
	for i, c := range pushes {
		rows[i] = attack(t, c.attack, "403 unknown user; config not stored")
	}
	register := attack(t, "Nacos: instance registered without credentials (open API)", "403 unknown user; instance not listed")
	wrongPassword := attack(t, "Nacos: login with a wrong password", "no access token")
	n := requireNacosAuth(t)
	admin := n.adminToken(t)
	for ci, c := range pushes {
		at := rows[ci]
		for i := range nacosTries {
			at.try(func() (bool, error) {
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				defer cancel()
				dataID := fmt.Sprintf("shopmesh-security-forged-%s-%d", randHex(t), i)
				q := url.Values{"dataId": {dataID}, "group": {"DEFAULT_GROUP"}, "content": {"fault.order.delay=10s"}}
				if tok := c.token(); tok != "" {
					q.Set("accessToken", tok)
				}
				code, _, err := n.openAPI(ctx, http.MethodPost, "/nacos/v1/cs/configs", q)
				if err != nil {
					return false, err
				}
				at.saw(fmt.Sprint(code))
				got, err := n.config(ctx, admin, dataID)
				if err != nil {
					return false, err
				}
				return code == http.StatusOK || got != "", nil
			})
		}
	}

	at := register
	for i := range nacosTries {
		at.try(func() (bool, error) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			svc := "shopmesh-security-forged-" + randHex(t)
			q := url.Values{"serviceName": {svc}, "ip": {"203.0.113.7"}, "port": {fmt.Sprint(1000 + i)}, "ephemeral": {"false"}}
			code, _, err := n.openAPI(ctx, http.MethodPost, "/nacos/v1/ns/instance", q)
			if err != nil {
				return false, err
			}
			at.saw(fmt.Sprint(code))
			lcode, list, err := n.openAPI(ctx, http.MethodGet, "/nacos/v1/ns/instance/list", url.Values{"serviceName": {svc}, "accessToken": {admin}})
			if err != nil {
				return false, err
			}
			if lcode != http.StatusOK {
				return false, fmt.Errorf("instance list as admin: %d %s", lcode, list)
			}
			return code == http.StatusOK || strings.Contains(list, "203.0.113.7"), nil
		})
	}

	// rnacos counts failed logins per user (100 a minute): stay well below, the services log in too.
	at = wrongPassword
	for range 10 {
		at.try(func() (bool, error) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			tok, code, _, err := n.login(ctx, n.user, randHex(t))
			if err != nil {
				return false, err
			}
			at.saw(fmt.Sprint(code))
			return tok != "", nil
		})
	}
}

// naming is a naming client of nacos-sdk-go (the services' client library) logging in as user when
// it is set; its cache and log go to a directory of the test.
func (n nacosAuth) naming(t *testing.T, user, password string) (interface {
	RegisterInstance(vo.RegisterInstanceParam) (bool, error)
	CloseClient()
}, error) {
	t.Helper()
	host, port, err := splitHostPort(n.addr)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "shopmesh-security-nacos-") //nolint:usetesting // the SDK writes its log after Close
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	cc := *constant.NewClientConfig(constant.WithTimeoutMs(5000), constant.WithCacheDir(dir+"/cache"), constant.WithLogDir(dir+"/log"),
		constant.WithLogLevel("error"), constant.WithNotLoadCacheAtStart(true), constant.WithUsername(user), constant.WithPassword(password))
	return clients.NewNamingClient(vo.NacosClientParam{ClientConfig: &cc, ServerConfigs: []constant.ServerConfig{*constant.NewServerConfig(host, port)}})
}

func splitHostPort(addr string) (string, uint64, error) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", 0, fmt.Errorf("NACOS_ADDR %q is not host:port", addr)
	}
	var port uint64
	if _, err := fmt.Sscan(addr[i+1:], &port); err != nil {
		return "", 0, fmt.Errorf("NACOS_ADDR %q: %w", addr, err)
	}
	return addr[:i], port, nil
}

// listed reports whether svc lists an instance on ip, as the admin sees it.
func (n nacosAuth) listed(ctx context.Context, admin, svc, ip string) (bool, error) {
	code, list, err := n.openAPI(ctx, http.MethodGet, "/nacos/v1/ns/instance/list", url.Values{"serviceName": {svc}, "accessToken": {admin}})
	if err != nil {
		return false, err
	}
	if code != http.StatusOK {
		return false, fmt.Errorf("instance list as admin: %d %s", code, list)
	}
	return strings.Contains(list, ip), nil
}

// The services' client library without the credential cannot register an instance over its gRPC
// channel (a rogue process announcing itself as a service); with NACOS_USERNAME's it can.
func TestNacosSDKNeedsCredentials(t *testing.T) {
	// The row first: without the server the test skips, and the table lists it as skipped.
	at := attack(t, "Nacos: instance registered by an SDK client without credentials (gRPC)", "unknown user; instance not listed")
	n := requireNacosAuth(t)
	admin := n.adminToken(t)
	for i := range 5 { // each try is a new client: a gRPC connection and its set-up
		at.try(func() (bool, error) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			c, err := n.naming(t, "", "")
			if err != nil {
				at.saw("client refused")
				return false, nil // the client could not even start: refused
			}
			defer c.CloseClient()
			svc := "shopmesh-security-sdk-" + randHex(t)
			ok, err := c.RegisterInstance(vo.RegisterInstanceParam{ServiceName: svc, Ip: "203.0.113.9", Port: uint64(2000 + i), Weight: 1, Enable: true, Healthy: true, Ephemeral: true})
			if err != nil {
				at.saw("register refused")
			}
			in, lerr := n.listed(ctx, admin, svc, "203.0.113.9")
			if lerr != nil {
				return false, lerr
			}
			return (ok && err == nil) || in, nil
		})
	}

	c, err := n.naming(t, n.user, n.password)
	if err != nil {
		t.Fatalf("SDK client with credentials: %v", err)
	}
	defer c.CloseClient()
	svc := "shopmesh-security-sdk-ok-" + randHex(t)
	if ok, err := c.RegisterInstance(vo.RegisterInstanceParam{ServiceName: svc, Ip: "203.0.113.10", Port: 3000, Weight: 1, Enable: true, Healthy: true, Ephemeral: true}); !ok || err != nil {
		t.Fatalf("register with credentials: %v %v", ok, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if in, err := n.listed(ctx, admin, svc, "203.0.113.10"); err != nil || !in {
		t.Fatalf("instance registered with credentials listed = %v, %v", in, err)
	}
}
