package httpapi_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/shopmesh/shopmesh/services/gateway/internal/httpapi"
)

// nonLoopbackIP is an address of one of this machine's non-loopback interfaces that a listener can bind,
// or the test is skipped.
func nonLoopbackIP(t *testing.T) net.IP {
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
		return n.IP
	}
	t.Skip("this machine has no non-loopback interface address to listen on")
	return nil
}

// serveOn serves h's API on a listener at addr and returns a copy of h that calls it there.
func serveOn(t *testing.T, h *harness, addr string) (*harness, net.Addr) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h.api)
	_ = srv.Listener.Close()
	srv.Listener = lis
	srv.Start()
	t.Cleanup(srv.Close)
	on := *h
	on.url = srv.URL
	return &on, lis.Addr()
}

// TestDevTokenOnlyOnLoopback: even with dev tokens on, POST /v1/dev/token answers 404 to a request that
// arrived on a non-loopback address of the machine (a server listening on every interface mints only for
// the requests that came in on loopback), and mints on loopback. Outside dev (DevTokens off) it is 404
// on loopback too.
func TestDevTokenOnlyOnLoopback(t *testing.T) {
	t.Parallel()
	ip := nonLoopbackIP(t)
	h := newHarness(t, nil)
	const body = `{"customer_id":"cust-9","scopes":["admin"]}`

	ext, _ := serveOn(t, h, net.JoinHostPort(ip.String(), "0"))
	wantError(t, ext.do(http.MethodPost, "/v1/dev/token", "", str(body)), http.StatusNotFound, "NOT_FOUND")

	// One listener on every interface: the local address of each connection decides.
	all, addr := serveOn(t, h, ":0")
	_, port, _ := net.SplitHostPort(addr.String())
	viaExt := *all
	viaExt.url = "http://" + net.JoinHostPort(ip.String(), port)
	wantError(t, viaExt.do(http.MethodPost, "/v1/dev/token", "", str(body)), http.StatusNotFound, "NOT_FOUND")
	viaLoopback := *all
	viaLoopback.url = "http://" + net.JoinHostPort("127.0.0.1", port)
	if r := viaLoopback.do(http.MethodPost, "/v1/dev/token", "", str(body)); r.status != http.StatusOK {
		t.Fatalf("on loopback: %d %s", r.status, r.body)
	}

	off := newHarness(t, func(s *httpapi.Settings) { s.DevTokens = false })
	wantError(t, off.do(http.MethodPost, "/v1/dev/token", "", str(body)), http.StatusNotFound, "NOT_FOUND")
}
