package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/services/gateway/internal/fakes"
)

// gatewayRun is a gateway command a test started.
type gatewayRun struct {
	addr string     // the bound HTTP address
	done chan error // the command's result, sent once all its log lines were read

	mu    sync.Mutex
	msgs  []string // the msg of every log line
	admin string   // the admin port's address, from its "admin serving" line
}

// adminAddr is the bound admin address (GATEWAY_ADMIN_ADDR 127.0.0.1:0), once logged.
func (g *gatewayRun) adminAddr(t *testing.T) string {
	t.Helper()
	for range 100 {
		g.mu.Lock()
		a := g.admin
		g.mu.Unlock()
		if a != "" {
			return a
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal(`no "admin serving" line`)
	return ""
}

// logged reports whether the command logged a line with this msg.
func (g *gatewayRun) logged(msg string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Contains(g.msgs, msg)
}

// startGateway runs the gateway command with env (its HTTP address on 127.0.0.1:0) until ctx ends;
// the bound address comes from the platform's "serving" log line.
func startGateway(ctx context.Context, t *testing.T, env map[string]string) *gatewayRun {
	t.Helper()
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	g := &gatewayRun{done: make(chan error, 1)}
	pr, pw := io.Pipe()
	addr, read := make(chan string, 1), make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var l struct{ Msg, Addr, Protocol string }
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue
			}
			g.mu.Lock()
			g.msgs = append(g.msgs, l.Msg)
			if l.Msg == "admin serving" {
				g.admin = l.Addr
			}
			g.mu.Unlock()
			if l.Msg == "serving" && l.Protocol == "http" {
				addr <- l.Addr
			}
		}
	}()
	go func() {
		err := runService(ctx, nil, lookup, pw)
		_ = pw.Close()
		<-read
		g.done <- err
	}()
	select {
	case g.addr = <-addr:
		return g
	case err := <-g.done:
		t.Fatalf("the gateway stopped before serving: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no serving line")
	}
	return nil
}

// TestRun starts the gateway command on 127.0.0.1:0 in front of fake backends, mints a dev token,
// places an order, checks readiness, opens an event stream on a pending order, and stops: during the
// drain delay /readyz answers 503 while requests are still served, then the stream ends and the
// command returns nil.
func TestRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b := fakes.Start(t)
	env := map[string]string{
		"GATEWAY_PROFILE":                     "dev",
		"GATEWAY_HTTP_ADDR":                   "127.0.0.1:0",
		"GATEWAY_TARGETS_ORDER_ADDRESSES":     b.Addrs["order"],
		"GATEWAY_TARGETS_INVENTORY_ADDRESSES": b.Addrs["inventory"],
		"GATEWAY_TARGETS_PAYMENT_ADDRESSES":   b.Addrs["payment"],
		"GATEWAY_HTTP_SHUTDOWN_TIMEOUT":       "5s", // the older name of GATEWAY_SERVER_SHUTDOWN_TIMEOUT
		"GATEWAY_SERVER_DRAIN_DELAY":          "5s",
		// Short enough that a stream outliving them proves they do not cut streams.
		"GATEWAY_READ_TIMEOUT":  "200ms",
		"GATEWAY_WRITE_TIMEOUT": "200ms",
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	gw := startGateway(runCtx, t, env)
	base := "http://" + gw.addr
	checkHealth(ctx, t, env, gw.addr)

	// do makes one request and returns its status and decoded JSON body (the body is closed).
	do := func(method, path, token, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	code, m := do(http.MethodPost, "/v1/dev/token", "", `{"customer_id":"cust-1"}`)
	if code != http.StatusOK {
		t.Fatalf("dev token: %d %v", code, m)
	}
	tok := m["token"].(string)
	if code, m := do(http.MethodPost, "/v1/orders", tok, `{"items":[{"sku":"SKU-1","quantity":1}]}`); code != http.StatusCreated || m["status"] != "CONFIRMED" {
		t.Fatalf("create: %d %v", code, m)
	}
	if code, m := do(http.MethodGet, "/readyz", "", ""); code != http.StatusOK {
		t.Fatalf("readyz: %d %v", code, m)
	}
	watch := func() (string, *bufio.Scanner) {
		t.Helper()
		_, m := do(http.MethodPost, "/v1/orders", tok, `{"items":[{"sku":"SLOW-1","quantity":1}]}`)
		id := m["id"].(string)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/orders/"+id+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		stream, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = stream.Body.Close() })
		sc := bufio.NewScanner(stream.Body)
		if !sc.Scan() || !strings.Contains(sc.Text(), "PENDING") {
			t.Fatalf("first event %q", sc.Text())
		}
		return id, sc
	}

	// A stream idle for longer than the server's read and write timeouts still gets its next event.
	first, sc := watch()
	time.Sleep(time.Second)
	b.Order.Confirm(first)
	for sc.Scan() && !strings.Contains(sc.Text(), "CONFIRMED") {
	}
	if !strings.Contains(sc.Text(), "CONFIRMED") {
		t.Fatalf("the stream was cut before CONFIRMED: %v", sc.Err())
	}

	id, sc := watch()

	stop()
	// The drain: the instance leaves the load balancer (/readyz 503) before it refuses requests.
	for i := 0; ; i++ {
		if code, _ := do(http.MethodGet, "/readyz", "", ""); code == http.StatusServiceUnavailable {
			break
		}
		if i == 200 {
			t.Fatal("/readyz still answers 200 after the stop began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, m := do(http.MethodGet, "/v1/products", tok, ""); code != http.StatusOK {
		t.Fatalf("products during the drain delay: %d %v", code, m)
	}
	for sc.Scan() { // the stream must end by itself at shutdown
	}
	select {
	case err := <-gw.done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		// The stream ended at the drain: the shutdown did not have to cut it after its timeout.
		if !gw.logged("stopped gracefully") {
			t.Fatalf("the shutdown was not graceful; logged %q", gw.msgs)
		}
	case <-ctx.Done():
		t.Fatal("run did not return after cancel")
	}
	for i := 0; b.Order.Watchers(id) != 0; i++ { // the cancel reaches the fake asynchronously
		if i == 500 {
			t.Fatalf("%d watches still open at the order service", b.Order.Watchers(id))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	t.Parallel()
	err := runService(context.Background(), nil, func(k string) (string, bool) {
		return map[string]string{"GATEWAY_PROFILE": "prod"}[k], k == "GATEWAY_PROFILE"
	}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "jwt_secret (GATEWAY_JWT_SECRET)") {
		t.Fatalf("err %v", err)
	}
}
