package nacos_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos/nacostest"
	"github.com/shopmesh/shopmesh/pkg/platform/discovery"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
)

// TestSpreadAndRemoval: three instances share calls; a deregistered one and a killed one (Nacos
// connection closed without deregistering) stop receiving calls, with no failed call throughout.
func TestSpreadAndRemoval(t *testing.T) {
	addr := nacostest.Require(t)
	svc := serviceName("spread")
	ins := []*instance{startInstance(t, addr, svc), startInstance(t, addr, svc), startInstance(t, addr, svc)}

	client := dial(t, newClient(t, addr, ""), svc)
	l := startLoad(client, 4, "c")
	defer l.finish()
	d := waitFor(t, 30*time.Second, "all three instances receive calls", func() bool {
		return ins[0].echo.Calls.Load() > 0 && ins[1].echo.Calls.Load() > 0 && ins[2].echo.Calls.Load() > 0
	})
	t.Logf("spread reached all 3 instances after %v", d.Round(time.Millisecond))

	t0 := time.Now()
	ins[0].deregister(t, svc)
	removal := waitQuiet(t, ins[0], t0, 2*time.Second, 30*time.Second)
	t.Logf("deregistered instance: last call %v after Deregister returned", removal.Round(time.Millisecond))

	t1 := time.Now()
	if err := ins[1].reg.Close(); err != nil {
		t.Fatal(err)
	}
	kill := waitQuiet(t, ins[1], t1, 2*time.Second, 30*time.Second)
	t.Logf("killed instance (connection closed, no deregister): last call %v after the kill", kill.Round(time.Millisecond))

	before := ins[2].echo.Calls.Load()
	waitFor(t, 10*time.Second, "survivor keeps serving", func() bool { return ins[2].echo.Calls.Load() > before+50 })
	l.finish()
	t.Logf("calls=%d errors=%d per-instance=%d/%d/%d", l.calls.Load(), l.errs.Load(),
		ins[0].echo.Calls.Load(), ins[1].echo.Calls.Load(), ins[2].echo.Calls.Load())
	if n := l.errs.Load(); n != 0 {
		t.Fatalf("%d failed calls, last: %v", n, l.lastErr.Load())
	}
}

// TestAutoAdvertise: two instances listening on every interface (":0", as services do) and registering
// without an advertise host, each over its own Nacos connection like two replicas, appear in Nacos as
// two instances with the host's interface address, not a loopback or a shared name, and a resolver
// client reaches both at those addresses.
func TestAutoAdvertise(t *testing.T) {
	addr := nacostest.Require(t)
	if !hasInterfaceAddress(t) {
		t.Skip("this host has no up, non-loopback interface with a global unicast address to advertise")
	}
	svc := serviceName("auto")
	var ins []*instance
	for range 2 {
		in := &instance{echo: &testserver.Echo{}}
		lis, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		in.srv = grpc.NewServer()
		healthgrpc.RegisterHealthServer(in.srv, health.NewServer())
		testgrpc.RegisterTestServiceServer(in.srv, in.echo)
		go func() { _ = in.srv.Serve(lis) }()
		t.Cleanup(in.srv.Stop)
		in.addr = lis.Addr().String() // "[::]:port"
		in.reg = newClient(t, addr, "")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = in.reg.Register(ctx, discovery.Instance{Service: svc, Addr: in.addr})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		ins = append(ins, in)
	}

	hosts := instanceList(t, addr, svc)
	if len(hosts) != 2 {
		t.Fatalf("Nacos holds %d instances of %s, want 2: %+v", len(hosts), svc, hosts)
	}
	ports := map[int]bool{}
	for _, h := range hosts {
		ip := net.ParseIP(h.IP)
		if ip == nil || ip.IsLoopback() || !ip.IsGlobalUnicast() {
			t.Errorf("instance %s:%d: not a global unicast, non-loopback address", h.IP, h.Port)
		}
		if h.IP != hosts[0].IP {
			t.Errorf("instances on one host advertise %s and %s", hosts[0].IP, h.IP)
		}
		ports[h.Port] = true
	}
	for _, in := range ins {
		_, p, _ := net.SplitHostPort(in.addr)
		if n, _ := strconv.Atoi(p); !ports[n] {
			t.Errorf("listener %s is not among the registered ports %v", in.addr, ports)
		}
	}
	t.Logf("Nacos holds %s:%d and %s:%d", hosts[0].IP, hosts[0].Port, hosts[1].IP, hosts[1].Port)

	client := dial(t, newClient(t, addr, ""), svc)
	l := startLoad(client, 2, "auto")
	defer l.finish()
	d := waitFor(t, 30*time.Second, "both instances receive calls at their advertised address", func() bool {
		return ins[0].echo.Calls.Load() > 0 && ins[1].echo.Calls.Load() > 0
	})
	l.finish()
	t.Logf("both reached after %v; calls=%d errors=%d per-instance=%d/%d", d.Round(time.Millisecond),
		l.calls.Load(), l.errs.Load(), ins[0].echo.Calls.Load(), ins[1].echo.Calls.Load())
	if n := l.errs.Load(); n != 0 {
		t.Fatalf("%d failed calls, last: %v", n, l.lastErr.Load())
	}
}

func hasInterfaceAddress(t *testing.T) bool {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.IsGlobalUnicast() {
				return true
			}
		}
	}
	return false
}

type nacosHost struct {
	IP   string `json:"ip"`
	Port int    `json:"port"`
}

// instanceList reads the service's instances from Nacos' open API (what any Nacos client is told),
// waiting until it holds two.
func instanceList(t *testing.T, nacosAddr, svc string) []nacosHost {
	t.Helper()
	var hosts []nacosHost
	waitFor(t, 15*time.Second, "Nacos lists both instances", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		u := "http://" + nacosAddr + "/nacos/v1/ns/instance/list?serviceName=" + url.QueryEscape(svc)
		if tok, err := nacostest.AccessToken(ctx, nacosAddr); err != nil {
			return false
		} else if tok != "" {
			u += "&accessToken=" + url.QueryEscape(tok)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var body struct {
			Hosts []nacosHost `json:"hosts"`
		}
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&body) != nil {
			return false
		}
		hosts = body.Hosts
		return len(hosts) >= 2
	})
	return hosts
}
