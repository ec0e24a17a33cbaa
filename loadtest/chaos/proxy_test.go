package chaos_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/loadtest/chaos"
)

// echoServer answers every line with the same line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip writes line and reads the echo, within d.
func roundTrip(c net.Conn, r *bufio.Reader, line string, d time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	s, err := r.ReadString('\n')
	return strings.TrimSpace(s), err
}

// TestProxyBlackholeHoldsAndHeals: during a blackhole an open connection gets no answer and a new one
// is accepted but not served; after Heal both carry the held bytes and new ones; Close leaves no
// goroutine behind.
func TestProxyBlackholeHoldsAndHeals(t *testing.T) {
	before := runtime.NumGoroutine()
	p, err := chaos.NewProxy("127.0.0.1:0", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	open, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	ro := bufio.NewReader(open)
	if got, err := roundTrip(open, ro, "before", 5*time.Second); err != nil || got != "before" {
		t.Fatalf("through the proxy: %q %v", got, err)
	}

	p.Blackhole()
	if got, err := roundTrip(open, ro, "held", 300*time.Millisecond); err == nil {
		t.Fatalf("open connection answered %q during the blackhole", got)
	}
	fresh, err := net.DialTimeout("tcp", p.Addr(), 2*time.Second)
	if err != nil {
		t.Fatalf("a new connection must be accepted during the blackhole: %v", err)
	}
	defer fresh.Close()
	rf := bufio.NewReader(fresh)
	if got, err := roundTrip(fresh, rf, "new", 300*time.Millisecond); err == nil {
		t.Fatalf("new connection answered %q during the blackhole", got)
	}

	p.Heal()
	// The bytes held during the blackhole arrive now, in order.
	_ = open.SetDeadline(time.Now().Add(5 * time.Second))
	if s, err := ro.ReadString('\n'); err != nil || strings.TrimSpace(s) != "held" {
		t.Fatalf("held bytes after heal: %q %v", s, err)
	}
	if got, err := roundTrip(open, ro, "after", 5*time.Second); err != nil || got != "after" {
		t.Fatalf("open connection after heal: %q %v", got, err)
	}
	_ = fresh.SetDeadline(time.Now().Add(5 * time.Second))
	if s, err := rf.ReadString('\n'); err != nil || strings.TrimSpace(s) != "new" {
		t.Fatalf("new connection's held bytes after heal: %q %v", s, err)
	}

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	_ = open.Close()
	_ = fresh.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for runtime.NumGoroutine() > before+2 { // the echo server's accept loop and its handlers may linger
		select {
		case <-ctx.Done():
			t.Fatalf("goroutines: %d before, %d after Close", before, runtime.NumGoroutine())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestProxyDelay: with Delay(d) an answer takes at least d; Heal removes it.
func TestProxyDelay(t *testing.T) {
	p, err := chaos.NewProxy("127.0.0.1:0", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	p.Delay(300 * time.Millisecond)
	start := time.Now()
	if got, err := roundTrip(c, r, "slow", 5*time.Second); err != nil || got != "slow" {
		t.Fatalf("delayed round trip: %q %v", got, err)
	}
	// A lower bound on an injected delay, not a timing assertion on the system under test.
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Fatalf("answer after %v with a 300ms delay", el)
	}
	p.Heal()
	if got, err := roundTrip(c, r, "fast", 5*time.Second); err != nil || got != "fast" {
		t.Fatalf("after heal: %q %v", got, err)
	}
}
