package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/services/gateway/internal/fakes"
)

// edgeEnv is a dev gateway in front of fakes, with short read timeouts.
func edgeEnv(b *fakes.Backends, extra map[string]string) map[string]string {
	env := map[string]string{
		"GATEWAY_PROFILE":                     "dev",
		"GATEWAY_HTTP_ADDR":                   "127.0.0.1:0",
		"GATEWAY_ADMIN_ADDR":                  "127.0.0.1:0",
		"GATEWAY_TARGETS_ORDER_ADDRESSES":     b.Addrs["order"],
		"GATEWAY_TARGETS_INVENTORY_ADDRESSES": b.Addrs["inventory"],
		"GATEWAY_TARGETS_PAYMENT_ADDRESSES":   b.Addrs["payment"],
		"GATEWAY_HTTP_SHUTDOWN_TIMEOUT":       "2s",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// dribbleUntilClosed writes head, then one byte of body every 100 ms, never finishing, and reads
// whatever the server answers, until the server closes the connection (read EOF or error, or a write
// failing). It returns what was answered. Bounded: a connection still open after 15 s fails the test.
func dribbleUntilClosed(t *testing.T, addr, head string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	var answer strings.Builder
	for range 150 {
		time.Sleep(100 * time.Millisecond)
		if _, err := conn.Write([]byte("a")); err != nil {
			return answer.String()
		}
		_ = conn.SetReadDeadline(time.Now().Add(time.Millisecond))
		var buf [1024]byte
		n, err := conn.Read(buf[:])
		answer.Write(buf[:n])
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return answer.String() // EOF or reset: closed
		}
	}
	t.Fatalf("connection still open after 15 s of dribbling; answered %q", answer.String())
	return ""
}

// A client that sends its headers and then dribbles its body (one byte every 100 ms of a declared
// 1000) is disconnected by the read timeout on the API port (GATEWAY_READ_TIMEOUT) and on the admin
// port (telemetry.AdminReadTimeout); its request is never served.
func TestSlowBodyClientIsCutOff(t *testing.T) {
	t.Parallel()
	b := fakes.Start(t)
	ctx, stop := context.WithCancel(context.Background())
	gw := startGateway(ctx, t, edgeEnv(b, map[string]string{"GATEWAY_READ_TIMEOUT": "1s"}))
	t.Cleanup(func() { stop(); <-gw.done }) // after the parallel subtests
	for port, addr := range map[string]string{"api": gw.addr, "admin": gw.adminAddr(t)} {
		t.Run(port, func(t *testing.T) {
			t.Parallel()
			// 1000 bytes: under both ports' body limits, so only the read timeout can end it.
			answer := dribbleUntilClosed(t, addr, "POST /v1/dev/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
				"Content-Length: 1000\r\n\r\n{\"customer_id\":\"")
			if strings.Contains(answer, "token") || strings.HasPrefix(answer, "HTTP/1.1 2") {
				t.Fatalf("the slow request was served: %q", answer)
			}
			t.Logf("closed; answered %q", firstLine(answer))
		})
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}

// A body over the limit gets 413 with a JSON error naming the limit: GATEWAY_MAX_BODY_BYTES on the API
// port, telemetry.AdminMaxBodyBytes (4096) on the admin port; headers over GATEWAY_MAX_HEADER_BYTES get
// 431.
func TestOversizedRequestsAreRefused(t *testing.T) {
	t.Parallel()
	b := fakes.Start(t)
	ctx, stop := context.WithCancel(context.Background())
	gw := startGateway(ctx, t, edgeEnv(b, map[string]string{"GATEWAY_MAX_BODY_BYTES": "1024", "GATEWAY_MAX_HEADER_BYTES": "4096"}))
	defer func() { stop(); <-gw.done }()
	big := `{"customer_id":"cust-1","scopes":["` + strings.Repeat("x", 200_000) + `"]}`
	for _, tc := range []struct{ port, addr, limit string }{
		{"api", gw.addr, "1024 bytes"},
		{"admin", gw.adminAddr(t), "4096 bytes"},
	} {
		for _, chunked := range []bool{false, true} {
			var body io.Reader = strings.NewReader(big)
			if chunked {
				body = io.MultiReader(strings.NewReader(big)) // unknown length: sent chunked
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+tc.addr+"/v1/dev/token", body)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				// The server may close before the client finished writing; then the answer is lost but
				// nothing was served.
				t.Logf("%s chunked=%v: %v", tc.port, chunked, err)
				continue
			}
			got, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(got), "PAYLOAD_TOO_LARGE") ||
				!strings.Contains(string(got), tc.limit) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				t.Errorf("%s chunked=%v: %s %s, want 413 naming %s", tc.port, chunked, resp.Status, got, tc.limit)
			}
		}
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+gw.addr+"/v1/products", nil)
	req.Header.Set("X-Big", strings.Repeat("h", 16<<10)) // net/http allows 4 KiB over MaxHeaderBytes
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("16 KiB of headers with GATEWAY_MAX_HEADER_BYTES=4096: %s", resp.Status)
	}
}

// The admin port's /readyz?verbose names each backend and its state; the API port's /readyz says only
// ok. A backend with no instance (its address refuses connections) shows as down there, the others up.
func TestAdminReadyzShowsBackends(t *testing.T) {
	t.Parallel()
	b := fakes.Start(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := lis.Addr().String()
	_ = lis.Close()
	ctx, stop := context.WithCancel(context.Background())
	gw := startGateway(ctx, t, edgeEnv(b, map[string]string{"GATEWAY_TARGETS_PAYMENT_ADDRESSES": deadAddr}))
	defer func() { stop(); <-gw.done }()
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	admin := "http://" + gw.adminAddr(t) + "/readyz?verbose"
	var body string
	waitUntil(t, "payment down and order, inventory up in /readyz?verbose", func() bool {
		_, body = get(admin)
		lines := map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(body))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) >= 3 {
				lines[f[0]] = f[2]
			}
		}
		return lines["payment"] == "down" && lines["order"] == "up" && lines["inventory"] == "up"
	})
	t.Logf("admin /readyz?verbose:\n%s", body)
	code, api := get("http://" + gw.addr + "/readyz?verbose")
	if code != http.StatusOK {
		t.Fatalf("API /readyz with one backend down: %d %s", code, api)
	}
	for _, name := range []string{"order", "inventory", "payment", deadAddr} {
		if strings.Contains(api, name) {
			t.Fatalf("the API port's /readyz names %q: %s", name, api)
		}
	}
}
