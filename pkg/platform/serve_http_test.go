package platform_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform"
)

// getStatus is GET url's status code, or 0 when the request fails.
func getStatus(ctx context.Context, url string) int {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// TestServeHTTPLifecycle: ServeHTTP serves requests with the admin server beside them; at shutdown
// /readyz turns 503, an event stream watching Stopping ends, a request in flight still completes,
// nothing is registered in the registry, and ServeHTTP returns nil.
func TestServeHTTPLifecycle(t *testing.T) {
	t.Parallel()
	cfg := testConfig("gateway")
	cfg.AdminAddr = freeAddr(t)
	cfg.Server.ShutdownTimeout = 30 * time.Second
	cfg.Server.DrainDelay = 50 * time.Millisecond
	reg := &fakeRegistry{}
	p := newPlatform(t, cfg, platform.WithRegistry(reg))

	slowStarted, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "hello") })
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, _ *http.Request) {
		close(slowStarted)
		<-release // ignores shutdown: only finishing ends it
		fmt.Fprint(w, "slow done")
	})
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: ready\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-p.Stopping():
			fmt.Fprint(w, "event: bye\n\n")
		case <-r.Context().Done():
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.ServeHTTP(ctx, srv, lis) }()
	t.Cleanup(func() {
		stop()
		select {
		case <-release:
		default:
			close(release)
		}
	})
	base, admin := "http://"+lis.Addr().String(), "http://"+cfg.AdminAddr

	cctx, cancel := context.WithTimeout(t.Context(), 15*time.Second) // well below ShutdownTimeout
	defer cancel()
	if code, body := httpGet(t, base+"/hello"); code != http.StatusOK || body != "hello" {
		t.Fatalf("GET /hello = %d %q", code, body)
	}
	eventually(t, "/readyz 200 while serving", func() bool { return getStatus(cctx, admin+"/readyz") == http.StatusOK })

	req, _ := http.NewRequestWithContext(cctx, http.MethodGet, base+"/events", nil)
	events, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer events.Body.Close()
	rd := bufio.NewReader(events.Body)
	if line, err := rd.ReadString('\n'); err != nil || line != "data: ready\n" {
		t.Fatalf("first event line %q, %v", line, err)
	}
	slow := make(chan string, 1)
	go func() {
		req, _ := http.NewRequestWithContext(cctx, http.MethodGet, base+"/slow", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			slow <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		slow <- fmt.Sprint(resp.StatusCode, " ", string(b))
	}()
	<-slowStarted

	stop()
	eventually(t, "/readyz 503 at drain", func() bool {
		return getStatus(cctx, admin+"/readyz") == http.StatusServiceUnavailable
	})
	rest, err := io.ReadAll(rd)
	if err != nil || !strings.Contains(string(rest), "event: bye") {
		t.Errorf("event stream after drain: %q, %v; want it ended by Stopping", rest, err)
	}
	close(release)
	if got := <-slow; got != "200 slow done" {
		t.Errorf("request in flight at drain: %s", got)
	}
	if err := <-served; err != nil {
		t.Errorf("ServeHTTP: %v", err)
	}
	if getStatus(cctx, base+"/hello") != 0 {
		t.Error("the HTTP server still answers after ServeHTTP returned")
	}
	if getStatus(cctx, admin+"/readyz") != 0 {
		t.Error("the admin server still answers after ServeHTTP returned")
	}
	if got := reg.get(); len(got) != 0 {
		t.Errorf("registry events %v: an HTTP front server is not registered", got)
	}
}

// TestServeHTTPReturnsServerError: a server that cannot serve is an error, not a clean stop.
func TestServeHTTPReturnsServerError(t *testing.T) {
	t.Parallel()
	p := newPlatform(t, testConfig("gateway"))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_ = lis.Close()
	srv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: time.Second}
	if err := p.ServeHTTP(t.Context(), srv, lis); err == nil {
		t.Fatal("ServeHTTP on a closed listener returned nil")
	}
	select {
	case <-p.Stopping():
	default:
		t.Error("Stopping still open after ServeHTTP returned")
	}
}
