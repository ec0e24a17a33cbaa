package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/services/gateway/internal/fakes"
)

// TestRun starts the gateway with run() on 127.0.0.1:0 in front of fake backends, mints a dev token,
// places an order, checks readiness, opens an event stream on a pending order, and stops: the stream
// ends and run returns nil.
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
		"GATEWAY_HTTP_SHUTDOWN_TIMEOUT":       "5s",
		// Short enough that a stream outliving them proves they do not cut streams.
		"GATEWAY_READ_TIMEOUT":  "200ms",
		"GATEWAY_WRITE_TIMEOUT": "200ms",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	pr, pw := io.Pipe()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, nil, lookup, pw); _ = pw.Close() }()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var l struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "listening" {
				addr <- l.Addr
			}
		}
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("run returned early: %v", err)
	case <-ctx.Done():
		t.Fatal("no listening line")
	}
	checkHealth(ctx, t, env, strings.TrimPrefix(base, "http://"))

	do := func(method, path, token, body string) (*http.Response, map[string]any) {
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
		return resp, m
	}
	resp, m := do("POST", "/v1/dev/token", "", `{"customer_id":"cust-1"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("dev token: %d %v", resp.StatusCode, m)
	}
	tok := m["token"].(string)
	if resp, m := do("POST", "/v1/orders", tok, `{"items":[{"sku":"SKU-1","quantity":1}]}`); resp.StatusCode != http.StatusCreated || m["status"] != "CONFIRMED" {
		t.Fatalf("create: %d %v", resp.StatusCode, m)
	}
	if resp, m := do("GET", "/readyz", "", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz: %d %v", resp.StatusCode, m)
	}
	watch := func() (string, *bufio.Scanner) {
		t.Helper()
		_, m := do("POST", "/v1/orders", tok, `{"items":[{"sku":"SLOW-1","quantity":1}]}`)
		id := m["id"].(string)
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/orders/"+id+"/events", nil)
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
	for sc.Scan() { // the stream must end by itself at shutdown
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
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
	err := run(context.Background(), nil, func(k string) (string, bool) {
		return map[string]string{"GATEWAY_PROFILE": "prod"}[k], k == "GATEWAY_PROFILE"
	}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "jwt_secret") {
		t.Fatalf("err %v", err)
	}
}
