package telemetry_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/telemetry"
)

// serveAdmin runs the admin server on 127.0.0.1:0 until the test ends.
func serveAdmin(t *testing.T) string {
	t.Helper()
	tel, _ := newTelemetry(t, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- telemetry.ServeAdminListener(ctx, ln, tel.AdminHandler(nil)) }()
	t.Cleanup(func() { cancel(); <-errc })
	return ln.Addr().String()
}

// The admin port against slow and oversized requests: a client dribbling its headers is disconnected
// (AdminReadHeaderTimeout), headers over AdminMaxHeaderBytes get 431, a body over AdminMaxBodyBytes
// gets 413 naming the limit, and ordinary GETs still work.
func TestAdminLimits(t *testing.T) {
	t.Parallel()
	addr := serveAdmin(t)

	t.Run("slow headers", func(t *testing.T) {
		t.Parallel()
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")); err != nil {
			t.Fatal(err)
		}
		for range 300 { // bounded: 30 s
			time.Sleep(100 * time.Millisecond)
			if _, err := conn.Write([]byte("a")); err != nil {
				return // closed
			}
			_ = conn.SetReadDeadline(time.Now().Add(time.Millisecond))
			var buf [256]byte
			n, err := conn.Read(buf[:])
			if strings.Contains(string(buf[:n]), "ok") {
				t.Fatalf("a request with unfinished headers was served: %q", buf[:n])
			}
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				return // closed (possibly after a 408)
			}
		}
		t.Fatal("the admin server kept a connection dribbling headers for 30 s")
	})

	t.Run("oversized headers", func(t *testing.T) {
		t.Parallel()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/healthz", nil)
		req.Header.Set("X-Big", strings.Repeat("h", telemetry.AdminMaxHeaderBytes+8<<10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("oversized headers: %s", resp.Status)
		}
	})

	t.Run("oversized body", func(t *testing.T) {
		t.Parallel()
		body := strings.Repeat("b", telemetry.AdminMaxBodyBytes+1)
		// Once with its length declared, once chunked (the length known only by reading it).
		for _, r := range []io.Reader{strings.NewReader(body), io.MultiReader(strings.NewReader(body))} {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+addr+"/healthz", r)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(got), `"code":"PAYLOAD_TOO_LARGE"`) ||
				!strings.Contains(string(got), "4096 bytes") {
				t.Fatalf("oversized body: %s %s", resp.Status, got)
			}
		}
	})

	t.Run("ordinary GET", func(t *testing.T) {
		t.Parallel()
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /healthz: %s", resp.Status)
		}
	})
}
