package main

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/services/gateway/internal/fakes"
)

// S6 slowloris: a client that dribbles its request headers (one byte every 100 ms, never finishing) is
// cut off by ReadHeaderTimeout; the server closes the connection instead of holding it forever.
func TestSlowHeaderClientIsCutOff(t *testing.T) {
	t.Parallel()
	b := fakes.Start(t)
	ctx, stop := context.WithCancel(context.Background())
	gw := startGateway(ctx, t, map[string]string{
		"GATEWAY_PROFILE":                     "dev",
		"GATEWAY_HTTP_ADDR":                   "127.0.0.1:0",
		"GATEWAY_TARGETS_ORDER_ADDRESSES":     b.Addrs["order"],
		"GATEWAY_TARGETS_INVENTORY_ADDRESSES": b.Addrs["inventory"],
		"GATEWAY_TARGETS_PAYMENT_ADDRESSES":   b.Addrs["payment"],
		"GATEWAY_READ_HEADER_TIMEOUT":         "500ms",
		"GATEWAY_HTTP_SHUTDOWN_TIMEOUT":       "2s",
	})
	defer func() { stop(); <-gw.done }()
	conn, err := net.DialTimeout("tcp", gw.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := conn.Write([]byte("GET /v1/products HTTP/1.1\r\nHost: x\r\nX-Slow: ")); err != nil {
		t.Fatal(err)
	}
	// Dribble one header byte every 100 ms; the request never completes. A read that ends (EOF, reset,
	// or the 408 Go may answer before closing) or a failing write shows the server dropped us. Bounded:
	// a server that keeps the connection 15 s fails the test.
	var ended error
	for i := 0; i < 150 && ended == nil; i++ {
		time.Sleep(100 * time.Millisecond)
		if _, err := conn.Write([]byte("a")); err != nil {
			ended = err
			break
		}
		_ = conn.SetReadDeadline(time.Now().Add(time.Millisecond))
		var buf [512]byte
		n, err := conn.Read(buf[:])
		switch {
		case n > 0:
			t.Logf("server answered %q", buf[:n])
			ended = errors.New("answered")
		case err != nil && !errors.Is(err, os.ErrDeadlineExceeded):
			ended = err
		}
	}
	held := time.Since(start)
	if ended == nil {
		t.Fatalf("connection still open after %v of dribbled headers", held)
	}
	t.Logf("connection ended: %v", ended)
	t.Logf("slow-header client cut off after %v (ReadHeaderTimeout 500ms)", held.Round(10*time.Millisecond))
}
