package main

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
	"github.com/shopmesh/shopmesh/services/gateway/internal/fakes"
)

// nonLoopbackIP is an address of one of this machine's non-loopback interfaces that a listener can bind,
// or the test is skipped.
func nonLoopbackIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skipf("no interface addresses: %v", err)
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.IsLoopback() || n.IP.IsLinkLocalUnicast() || n.IP.IsMulticast() {
			continue
		}
		lis, err := net.Listen("tcp", net.JoinHostPort(n.IP.String(), "0"))
		if err != nil {
			continue
		}
		_ = lis.Close()
		return n.IP.String()
	}
	t.Skip("this machine has no non-loopback interface address to listen on")
	return ""
}

// TestDevTokenRoute runs the gateway command and asks for a dev token: the dev profile on 127.0.0.1
// mints one; the dev profile listening on a non-loopback address of the machine answers 404 (and logs
// why at start-up); the compose and k8s profiles answer 404.
func TestDevTokenRoute(t *testing.T) {
	t.Parallel()
	b := fakes.Start(t)
	certs := t.TempDir()
	if _, err := mtls.EnsureDir(mtls.DirOptions{Dir: certs, Services: []string{"gateway"}, TTL: time.Hour, CATTL: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	base := map[string]string{
		"GATEWAY_TARGETS_ORDER_ADDRESSES":     b.Addrs["order"],
		"GATEWAY_TARGETS_INVENTORY_ADDRESSES": b.Addrs["inventory"],
		"GATEWAY_TARGETS_PAYMENT_ADDRESSES":   b.Addrs["payment"],
		"GATEWAY_HTTP_SHUTDOWN_TIMEOUT":       "2s",
	}
	secured := map[string]string{
		"GATEWAY_JWT_SECRET":    strings.Repeat("k", 40),
		"GATEWAY_TLS_CA_FILE":   filepath.Join(certs, "ca.pem"),
		"GATEWAY_TLS_CERT_FILE": filepath.Join(certs, "gateway.pem"),
		"GATEWAY_TLS_KEY_FILE":  filepath.Join(certs, "gateway-key.pem"),
	}
	const offLog = "dev tokens off: POST /v1/dev/token is served only when GATEWAY_HTTP_ADDR is a loopback address"
	cases := []struct {
		name, profile, host string
		extra               map[string]string
		want                int
	}{
		{"dev on loopback", "dev", "127.0.0.1", nil, http.StatusOK},
		{"dev on a non-loopback address", "dev", "", nil, http.StatusNotFound},
		{"compose", "compose", "127.0.0.1", secured, http.StatusNotFound},
		{"k8s", "k8s", "127.0.0.1", secured, http.StatusNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			host := tc.host
			if host == "" {
				host = nonLoopbackIP(t)
			}
			env := map[string]string{"GATEWAY_PROFILE": tc.profile, "GATEWAY_HTTP_ADDR": net.JoinHostPort(host, "0")}
			for _, m := range []map[string]string{base, tc.extra} {
				for k, v := range m {
					env[k] = v
				}
			}
			ctx, stop := context.WithCancel(context.Background())
			gw := startGateway(ctx, t, env)
			defer func() { stop(); <-gw.done }()
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(rctx, http.MethodPost, "http://"+gw.addr+"/v1/dev/token",
				strings.NewReader(`{"customer_id":"cust-1","scopes":["admin"]}`))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("POST /v1/dev/token = %d, want %d", resp.StatusCode, tc.want)
			}
			if off := gw.logged(offLog); off != (tc.profile == "dev" && tc.want == http.StatusNotFound) {
				t.Errorf("logged %q: %v", offLog, off)
			}
		})
	}
}
