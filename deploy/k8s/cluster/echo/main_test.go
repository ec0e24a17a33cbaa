package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestServeAndFetch runs the server on loopback and the client mode against it: the body names the pod,
// each request is logged (what the smoke test reads with kubectl logs), a 404 elsewhere is an error, and
// the server stops when its context ends.
func TestServeAndFetch(t *testing.T) {
	lis, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, lis, "pod-a", slog.New(slog.NewTextHandler(&logs, nil))) }()

	reqCtx, reqCancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer reqCancel()
	var out bytes.Buffer
	if err := fetchTo(reqCtx, &out, "http://"+lis.Addr().String()+"/hello"); err != nil {
		t.Fatalf("fetch: %v", err)
	}
	if got := out.String(); got != "echo from pod-a\n" {
		t.Errorf("body %q, want %q", got, "echo from pod-a\n")
	}
	if s := logs.String(); !strings.Contains(s, "msg=request") || !strings.Contains(s, "path=/hello") {
		t.Errorf("request not logged: %q", s)
	}

	// A server that answers 404: the client mode fails.
	notFound := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: time.Second}
	lis404, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = notFound.Serve(lis404) }()
	defer notFound.Close()
	if err := fetchTo(reqCtx, &out, "http://"+lis404.Addr().String()+"/"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("fetch of a 404: err %v, want one naming 404", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after its context ended")
	}
}

// syncBuffer is a bytes.Buffer the server's handler goroutines and the test can share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
