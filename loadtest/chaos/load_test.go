package chaos_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/loadtest/audit"
	"github.com/shopmesh/shopmesh/loadtest/chaos"
)

// fakeGateway answers the first attempt of every third order 503 + Retry-After: 1, every seventh 500,
// the rest 201; it records the keys of every attempt.
type fakeGateway struct {
	mu       sync.Mutex
	attempts map[string]int
	n        int
}

func (f *fakeGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/v1/dev/token":
		_, _ = w.Write([]byte(`{"token":"tok"}`))
	case "/v1/orders":
		key := r.Header.Get("Idempotency-Key")
		f.mu.Lock()
		if _, ok := f.attempts[key]; !ok {
			f.n++
		}
		f.attempts[key]++
		first, n := f.attempts[key] == 1, f.n
		f.mu.Unlock()
		switch {
		case key == "" || r.Header.Get("Authorization") != "Bearer tok":
			w.WriteHeader(http.StatusBadRequest)
		case n%7 == 0:
			w.WriteHeader(http.StatusInternalServerError)
		case n%3 == 0 && first:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusCreated)
			_, _ = fmt.Fprintf(w, `{"id":"o-%s"}`, key)
		}
	default:
		http.NotFound(w, r)
	}
}

// TestLoadRetriesWithTheSameKey: a 503 with Retry-After is retried with the same Idempotency-Key and
// then accepted; a 500 is final; the per-second buckets add up; the report marks the 500 as a failure.
func TestLoadRetriesWithTheSameKey(t *testing.T) {
	t.Parallel()
	gw := &fakeGateway{attempts: map[string]int{}}
	srv := httptest.NewServer(gw)
	defer srv.Close()
	l := &chaos.Load{Base: srv.URL, Rate: 50, Customers: 3, KeyPrefix: "t"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := l.Prepare(ctx, t0); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	time.AfterFunc(time.Second, func() { close(stop) })
	l.Run(ctx, stop)

	samples := l.Recorder().Samples()
	if len(samples) < 10 {
		t.Fatalf("%d samples in a second at 50/s", len(samples))
	}
	var ok, e500, retried int
	for _, s := range samples {
		switch {
		case s.Accepted:
			ok++
			if s.OrderID != "o-"+s.Key || s.Status != "201" {
				t.Errorf("accepted %+v", s)
			}
		case s.Status == "500":
			e500++
		default:
			t.Errorf("unexpected outcome %+v", s)
		}
		if s.Attempts == 2 {
			retried++
		}
	}
	gw.mu.Lock()
	for k, n := range gw.attempts {
		if n > 2 {
			t.Errorf("key %s sent %d times", k, n)
		}
	}
	keys := len(gw.attempts)
	gw.mu.Unlock()
	if keys != len(samples) || retried == 0 || e500 == 0 || ok+e500 != len(samples) {
		t.Fatalf("keys %d, samples %d, ok %d, 500 %d, retried %d", keys, len(samples), ok, e500, retried)
	}
	sum := 0
	for _, s := range l.Recorder().Seconds() {
		sum += s.Sent
		if s.OK+count(s.Errors) != s.Sent {
			t.Fatalf("second %d: ok %d + errors %v != sent %d", s.T, s.OK, s.Errors, s.Sent)
		}
	}
	if sum != len(samples) {
		t.Fatalf("seconds add up to %d, want %d", sum, len(samples))
	}

	r := chaos.Result{ID: "RX", Title: "test", Errors: map[string]int{"500": e500}, Audit: &audit.Report{},
		Seconds: l.Recorder().Seconds(), FaultStartS: 0.2, FaultEndS: 0.6, RecoverS: -1}
	rep := chaos.Report{Started: t0, Results: []chaos.Result{r}}
	if !rep.Failed() {
		t.Fatal("a 500 must fail the campaign")
	}
	dir := t.TempDir()
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	html, _ := os.ReadFile(filepath.Join(dir, "report.html"))
	md, _ := os.ReadFile(filepath.Join(dir, "report.md"))
	var back chaos.Report
	data, _ := os.ReadFile(filepath.Join(dir, "report.json"))
	if err := json.Unmarshal(data, &back); err != nil || len(back.Results) != 1 {
		t.Fatalf("report.json: %v", err)
	}
	if !strings.Contains(string(html), "<svg") || !strings.Contains(string(html), "fault") || !strings.Contains(string(md), "| RX test | **FAIL**") {
		t.Fatalf("report:\n%s\n%s", md, html)
	}
	r.Errors = map[string]int{"503": 1}
	if (chaos.Report{Results: []chaos.Result{r}}).Failed() {
		t.Fatal("a 503 alone must not fail the campaign")
	}
}

func count(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// A connection dropped before any answer (the single gateway restarting) is retried with the same key,
// so the order is placed once and the client sees no error.
func TestLoadRetriesConnectionErrorsWithTheSameKey(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	attempts := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/dev/token" {
			_, _ = w.Write([]byte(`{"token":"tok"}`))
			return
		}
		key := r.Header.Get("Idempotency-Key")
		mu.Lock()
		attempts[key]++
		n := attempts[key]
		mu.Unlock()
		if n <= 2 { // the first two attempts of every order: the connection drops with no answer
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = fmt.Fprintf(w, `{"id":"o-%s"}`, key)
	}))
	defer srv.Close()
	l := &chaos.Load{Base: srv.URL, Rate: 20, Customers: 2, KeyPrefix: "n"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Prepare(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	time.AfterFunc(500*time.Millisecond, func() { close(stop) })
	l.Run(ctx, stop)
	samples := l.Recorder().Samples()
	if len(samples) == 0 {
		t.Fatal("no samples")
	}
	// Go's transport itself resends a request with an Idempotency-Key once when a reused connection
	// turns out dead, so the load sees one or two failed attempts of its own before the answer.
	for _, s := range samples {
		if !s.Accepted || s.Attempts < 2 || s.Status != "201" {
			t.Fatalf("sample %+v: want accepted after a retry", s)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for key, n := range attempts {
		if n != 3 {
			t.Fatalf("key %s: %d attempts reached the server, want 3 (two dropped, one answered)", key, n)
		}
	}
}
