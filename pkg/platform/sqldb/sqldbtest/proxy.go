package sqldbtest

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
)

// Proxy is a TCP proxy in front of a database server that a test can take down and bring back, to
// see a service through an outage of its database without stopping the server other tests share.
type Proxy struct {
	t      testing.TB
	target string // host:port of the server
	addr   string // host:port the proxy listens on

	mu      sync.Mutex
	lis     net.Listener // nil while down
	stalled bool         // connections are accepted and never answered
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

// NewProxy starts a proxy to the server dsn names (postgres://) and returns it; DSN gives dsn with the
// proxy's address. The proxy is closed when the test ends.
func NewProxy(t testing.TB, dsn string) *Proxy {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("proxy: parse DSN: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{t: t, target: u.Host, addr: lis.Addr().String(), conns: map[net.Conn]struct{}{}}
	p.serve(lis)
	t.Cleanup(func() {
		p.Down()
		p.wg.Wait()
	})
	return p
}

// DSN returns dsn with its host:port replaced by the proxy's.
func (p *Proxy) DSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		p.t.Fatalf("proxy: parse DSN: %v", err)
	}
	u.Host = p.addr
	return u.String()
}

// Down makes the database unreachable: open connections are reset and new ones refused, as when the
// server is stopped.
func (p *Proxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lis != nil {
		_ = p.lis.Close()
		p.lis = nil
	}
	p.resetLocked()
}

// Stall makes the database hang: open connections are reset, new ones are accepted and never
// answered, as with a server that stopped responding or a network that drops packets.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = true
	p.resetLocked()
}

func (p *Proxy) resetLocked() {
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST, like a server that went away
		}
		_ = c.Close()
		delete(p.conns, c)
	}
}

// Up serves connections again, on the same address.
func (p *Proxy) Up() {
	p.t.Helper()
	p.mu.Lock()
	up := p.lis != nil
	if p.stalled {
		p.stalled = false
		p.resetLocked() // the hung connections fail now rather than never
	}
	p.mu.Unlock()
	if up {
		return
	}
	lis, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy: listen again on %s: %v", p.addr, err)
	}
	p.serve(lis)
}

func (p *Proxy) serve(lis net.Listener) {
	p.mu.Lock()
	p.lis = lis
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.pipe(c) })
		}
	})
}

func (p *Proxy) pipe(client net.Conn) {
	p.mu.Lock()
	if p.stalled {
		p.conns[client] = struct{}{} // reset by Down, Up or the end of the test
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = client.Close()
		return
	}
	p.mu.Lock()
	if p.lis == nil { // went down meanwhile
		p.mu.Unlock()
		_ = client.Close()
		_ = server.Close()
		return
	}
	p.conns[client], p.conns[server] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(server, client); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, server); done <- struct{}{} }()
	<-done
	p.mu.Lock()
	for _, c := range []net.Conn{client, server} {
		_ = c.Close()
		delete(p.conns, c)
	}
	p.mu.Unlock()
	<-done
}
