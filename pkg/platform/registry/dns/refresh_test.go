package dns_test

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	"github.com/shopmesh/shopmesh/pkg/platform/registry/dns"
)

// fakeDNS answers A queries for one name from a list the test changes; every other name is NXDOMAIN and
// AAAA queries get no records. UDP on loopback, enough of RFC 1035 for Go's resolver.
type fakeDNS struct {
	name string // lower case, no trailing dot
	mu   sync.Mutex
	ips  []netip.Addr
	conn net.PacketConn
}

func startFakeDNS(t *testing.T, name string, ips ...netip.Addr) *fakeDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDNS{name: name, ips: ips, conn: pc}
	t.Cleanup(func() { _ = pc.Close() })
	go f.serve()
	return f
}

func (f *fakeDNS) set(ips ...netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ips = ips
}

func (f *fakeDNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := f.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := f.answer(buf[:n]); resp != nil {
			_, _ = f.conn.WriteTo(resp, from)
		}
	}
}

func (f *fakeDNS) answer(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) < 1 {
		return nil
	}
	// The first question: labels, then type and class.
	i := 12
	var labels []string
	for i < len(q) && q[i] != 0 {
		l := int(q[i])
		if i+1+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i+1:i+1+l]))
		i += 1 + l
	}
	i++ // the root label
	if i+4 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i:])
	question := q[12 : i+4]
	name := strings.ToLower(strings.Join(labels, "."))

	f.mu.Lock()
	ips := append([]netip.Addr(nil), f.ips...)
	f.mu.Unlock()
	var answers [][]byte
	rcode := uint16(0)
	switch {
	case name != f.name:
		rcode = 3 // NXDOMAIN
	case qtype == 1: // A
		for _, ip := range ips {
			a := []byte{0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4} // name pointer, A, IN, TTL 0, 4 bytes
			a4 := ip.As4()
			answers = append(answers, append(a, a4[:]...))
		}
	}
	resp := make([]byte, 12, 512)
	copy(resp, q[:2])                                  // id
	binary.BigEndian.PutUint16(resp[2:], 0x8180|rcode) // response, recursion desired and available
	binary.BigEndian.PutUint16(resp[4:], 1)
	binary.BigEndian.PutUint16(resp[6:], uint16(len(answers)))
	resp = append(resp, question...)
	for _, a := range answers {
		resp = append(resp, a...)
	}
	return resp
}

// listenPair listens on 127.0.0.1 and 127.0.0.2 with the same port, as two pods of a headless Service
// share the service port.
func listenPair(t *testing.T) (a, b net.Listener, port int) {
	t.Helper()
	for range 20 {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.2:"+strconv.Itoa(port))
		if err == nil {
			return l1, l2, port
		}
		_ = l1.Close()
		if strings.Contains(err.Error(), "assign requested address") {
			t.Skipf("127.0.0.2 is not usable here: %v", err)
		}
	}
	t.Fatal("no port free on both 127.0.0.1 and 127.0.0.2")
	return nil, nil, 0
}

func serveEcho(t *testing.T, l net.Listener) *testserver.Echo {
	t.Helper()
	e := &testserver.Echo{}
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, e)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return e
}

// A scaled-up headless Service: a second pod's address appears in DNS while a client is connected. The
// resolver looks the name up again every Refresh, so the new pod gets calls without any connection
// failing. (grpc's built-in dns resolver would not look again until a connection broke.)
func TestNewAddressGetsCallsWithinRefresh(t *testing.T) {
	t.Parallel()
	l1, l2, port := listenPair(t)
	first, second := serveEcho(t, l1), serveEcho(t, l2)
	dnsServer := startFakeDNS(t, "inventory.shop.test", netip.MustParseAddr("127.0.0.1"))

	const refresh = 500 * time.Millisecond
	r, err := dns.New(dns.Config{Port: port, Suffix: ".shop.test", Refresh: refresh, Server: dnsServer.conn.LocalAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	target, b, err := r.Resolve("inventory")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(target, grpc.WithResolvers(b), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := testgrpc.NewTestServiceClient(conn)
	call := func() {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
			t.Fatalf("call: %v", err)
		}
	}
	for range 20 {
		call()
	}
	if first.Calls.Load() != 20 || second.Calls.Load() != 0 {
		t.Fatalf("before the scale-up: calls %d/%d, want 20/0", first.Calls.Load(), second.Calls.Load())
	}

	dnsServer.set(netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"))
	added := time.Now()
	deadline := added.Add(10 * time.Second)
	for second.Calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the new address got no call 10 s after it appeared in DNS (refresh %v)", refresh)
		}
		call()
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the new address got its first call %v after it appeared in DNS (refresh %v)", time.Since(added).Round(time.Millisecond), refresh)

	// And a pod leaving: its address disappears, calls stop reaching it.
	dnsServer.set(netip.MustParseAddr("127.0.0.2"))
	removed := time.Now()
	for {
		before := first.Calls.Load()
		for range 10 {
			call()
		}
		if first.Calls.Load() == before {
			break
		}
		if time.Since(removed) > 10*time.Second {
			t.Fatal("the removed address still gets calls 10 s after it left DNS")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the removed address stopped getting calls %v after it left DNS", time.Since(removed).Round(time.Millisecond))
}

// A pod replaced while the refresh is far off: when the old pod's connection breaks, grpc asks the
// resolver to look again, and the new address is found at once (not after Refresh, an hour here).
func TestConnectionErrorTriggersLookup(t *testing.T) {
	t.Parallel()
	l1, l2, port := listenPair(t)
	oldSrv := grpc.NewServer()
	old := &testserver.Echo{}
	testgrpc.RegisterTestServiceServer(oldSrv, old)
	go func() { _ = oldSrv.Serve(l1) }()
	t.Cleanup(oldSrv.Stop)
	fresh := serveEcho(t, l2)
	dnsServer := startFakeDNS(t, "payment", netip.MustParseAddr("127.0.0.1"))

	r, err := dns.New(dns.Config{Port: port, Refresh: time.Hour, MinInterval: 100 * time.Millisecond, Server: dnsServer.conn.LocalAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	target, b, _ := r.Resolve("payment")
	conn, err := grpc.NewClient(target, grpc.WithResolvers(b), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := testgrpc.NewTestServiceClient(conn)
	if _, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{}); err != nil || old.Calls.Load() != 1 {
		t.Fatalf("first call: %v (old pod saw %d)", err, old.Calls.Load())
	}

	dnsServer.set(netip.MustParseAddr("127.0.0.2"))
	oldSrv.Stop()
	replaced := time.Now()
	for fresh.Calls.Load() == 0 {
		if time.Since(replaced) > 10*time.Second {
			t.Fatal("the new pod got no call 10 s after the old one went away")
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, _ = c.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
		cancel()
	}
	t.Logf("the new pod got its first call %v after the old one went away (refresh 1 h)", time.Since(replaced).Round(time.Millisecond))
}

// A cold start: the headless Service has no ready pod, so the name has no address (NXDOMAIN / no
// records) while the callee starts. The resolver keeps looking every MinInterval instead of backing off,
// so the first call goes through soon after the pod appears in DNS. (Before, the not-found answers grew a
// backoff to 16 s here, and a client waited up to that long after the pod became Ready.)
func TestEmptyNameIsLookedUpAgainSoon(t *testing.T) {
	t.Parallel()
	l1, l2, port := listenPair(t)
	first := serveEcho(t, l1)
	_ = l2.Close()
	dnsServer := startFakeDNS(t, "inventory.shop.test")

	r, err := dns.New(dns.Config{Port: port, Suffix: ".shop.test", Refresh: time.Hour, MinInterval: 20 * time.Millisecond,
		Server: dnsServer.conn.LocalAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	target, b, err := r.Resolve("inventory")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(target, grpc.WithResolvers(b), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	conn.Connect()

	// Long enough for a doubling backoff from 20 ms to reach ~5 s between lookups.
	time.Sleep(5500 * time.Millisecond)
	dnsServer.set(netip.MustParseAddr("127.0.0.1"))
	appeared := time.Now()

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	c := testgrpc.NewTestServiceClient(conn)
	if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("no call reached the pod within 3 s of its address appearing in DNS: %v", err)
	}
	if first.Calls.Load() != 1 {
		t.Fatalf("calls = %d, want 1", first.Calls.Load())
	}
	t.Logf("first call %v after the address appeared", time.Since(appeared).Round(time.Millisecond))
}
