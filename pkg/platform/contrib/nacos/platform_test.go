package nacos_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos"
	"github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos/nacostest"
	"github.com/shopmesh/shopmesh/pkg/platform/discovery"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	"github.com/shopmesh/shopmesh/pkg/platform/registry"
)

func uniqueService(prefix string) string {
	return fmt.Sprintf("%s-%d-%08x", prefix, time.Now().UnixNano()%1e6, rand.Uint32())
}

// nacosInstances asks the Nacos server itself (its open API, not an SDK cache) which healthy instances
// service has.
func nacosInstances(addr, service string) ([]string, error) {
	q := url.Values{"serviceName": {service}, "groupName": {"DEFAULT_GROUP"}, "healthyOnly": {"true"}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if tok, err := nacostest.AccessToken(ctx, addr); err != nil {
		return nil, err
	} else if tok != "" {
		q.Set("accessToken", tok)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/nacos/v1/ns/instance/list?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("instance list: %s", resp.Status)
	}
	var body struct {
		Hosts []struct {
			IP      string `json:"ip"`
			Port    int    `json:"port"`
			Healthy bool   `json:"healthy"`
		} `json:"hosts"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	var out []string
	for _, h := range body.Hosts {
		if h.Healthy {
			out = append(out, net.JoinHostPort(h.IP, strconv.Itoa(h.Port)))
		}
	}
	slices.Sort(out)
	return out, nil
}

func waitUntil(t testing.TB, bound time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > bound {
			t.Fatalf("%s: not within %v", what, bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// orderedRegistry wraps the Nacos registry of one instance and records, when Serve deregisters, that the
// health was still SERVING when deregistration began and when the Nacos server stopped listing the
// instance: Serve flips health only after Deregister returned, so absentAt precedes NOT_SERVING.
type orderedRegistry struct {
	inner     discovery.Registry
	nacosAddr string
	health    func() healthgrpc.HealthCheckResponse_ServingStatus

	mu              sync.Mutex
	servingAtDereg  bool
	absentAt        time.Time
	absentCheckErrs []error
}

func (r *orderedRegistry) Register(ctx context.Context, in discovery.Instance) error {
	return r.inner.Register(ctx, in)
}

func (r *orderedRegistry) Deregister(ctx context.Context, in discovery.Instance) error {
	serving := r.health() == healthgrpc.HealthCheckResponse_SERVING
	if err := r.inner.Deregister(ctx, in); err != nil {
		return err
	}
	var absentAt time.Time
	var errs []error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		list, err := nacosInstances(r.nacosAddr, in.Service)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !slices.Contains(list, in.Addr) {
			absentAt = time.Now()
			break
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.servingAtDereg, r.absentAt, r.absentCheckErrs = serving, absentAt, errs
	return nil
}

// facadeNode is one instance built with the real facade, with its own Nacos connection (a process).
type facadeNode struct {
	addr         string
	echo         *testserver.Echo
	reg          *orderedRegistry
	cancel       context.CancelFunc
	wait         func() error // what Serve returned, once it has
	notServingAt atomic.Int64 // unix nanos of the first NOT_SERVING seen by a health watcher
}

func startFacadeNode(t *testing.T, nacosAddr, service string) *facadeNode {
	t.Helper()
	cfg := testConfig(service)
	cfg.Server.DrainDelay = 1500 * time.Millisecond
	nc, err := nacos.New(nacostest.Auth(nacos.Default(nacosAddr, nacostest.Dir(t))), quiet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	n := &facadeNode{echo: &testserver.Echo{}}
	n.reg = &orderedRegistry{inner: nc, nacosAddr: nacosAddr}
	p := newPlatform(t, cfg, platform.WithRegistry(n.reg))
	n.reg.health = func() healthgrpc.HealthCheckResponse_ServingStatus {
		st, _ := p.Health().Check(context.Background(), "")
		return st
	}
	srv := p.NewServer()
	testgrpc.RegisterTestServiceServer(srv, n.echo)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.addr = lis.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, srv, lis) }()
	n.wait = sync.OnceValue(func() error { return <-served })
	t.Cleanup(func() {
		cancel()
		_ = n.wait()
	})

	// Record when the instance reports NOT_SERVING, as a client's health check sees it.
	w, err := healthgrpc.NewHealthClient(dialRaw(t, n.addr)).Watch(t.Context(), &healthgrpc.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := w.Recv(); err != nil || m.GetStatus() != healthgrpc.HealthCheckResponse_SERVING {
		t.Fatalf("health watch: %v %v", m, err)
	}
	go func() {
		for {
			m, err := w.Recv()
			if err != nil {
				return
			}
			if m.GetStatus() != healthgrpc.HealthCheckResponse_SERVING {
				n.notServingAt.CompareAndSwap(0, time.Now().UnixNano())
			}
		}
	}()
	waitUntil(t, 10*time.Second, n.addr+" listed in Nacos", func() bool {
		list, err := nacosInstances(nacosAddr, service)
		return err == nil && slices.Contains(list, n.addr)
	})
	return n
}

// stop cancels the node's Serve and returns how long Serve took to return.
func (n *facadeNode) stop(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	n.cancel()
	if err := n.wait(); err != nil {
		t.Errorf("Serve %s: %v", n.addr, err)
	}
	return time.Since(start)
}

// TestRollingRestartUnderLoadNacos restarts each of three facade instances in turn while a facade client
// resolving nacos:///svc (round_robin, health checks, retries) calls them from 4 workers: no call fails,
// and every stopped instance had left the Nacos server's list before it reported NOT_SERVING.
func TestRollingRestartUnderLoadNacos(t *testing.T) {
	addr := nacostest.Require(t)
	svc := uniqueService("rolling")
	nodes := []*facadeNode{startFacadeNode(t, addr, svc), startFacadeNode(t, addr, svc), startFacadeNode(t, addr, svc)}

	resolverClient, err := nacos.New(nacostest.Auth(nacos.Default(addr, nacostest.Dir(t))), quiet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resolverClient.Close() })
	cp := newPlatform(t, testConfig("caller"), platform.WithResolver(resolverClient))
	conn, err := cp.Dial(svc)
	if err != nil {
		t.Fatal(err)
	}
	c := testgrpc.NewTestServiceClient(conn)

	var calls, failures atomic.Int64
	var lastErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
				cancel()
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					lastErr.Store(err.Error())
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	var stopOnce sync.Once
	finish := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	defer finish()

	d := waitUntil(t, 30*time.Second, "all three instances receive calls", func() bool {
		return nodes[0].echo.Calls.Load() > 200 && nodes[1].echo.Calls.Load() > 200 && nodes[2].echo.Calls.Load() > 200
	})
	t.Logf("all 3 instances had 200 calls %v after dialing", d.Round(time.Millisecond))

	var stopped []*facadeNode
	for i := range nodes {
		old := nodes[i]
		drain := old.stop(t)
		stopped = append(stopped, old)
		fresh := startFacadeNode(t, addr, svc)
		pickup := waitUntil(t, 30*time.Second, "new instance "+fresh.addr+" receives calls", func() bool {
			return fresh.echo.Calls.Load() > 200
		})
		t.Logf("restart %d: %s served %d calls, shutdown took %v (drain delay 1.5s); replacement %s had 200 calls %v after registering",
			i+1, old.addr, old.echo.Calls.Load(), drain.Round(time.Millisecond), fresh.addr, pickup.Round(time.Millisecond))
		if drain > 5*time.Second {
			t.Errorf("shutdown of %s took %v, want it bounded by the 1.5 s drain plus in-flight calls", old.addr, drain)
		}
		nodes[i] = fresh
	}
	before := make([]int64, len(nodes))
	for i, n := range nodes {
		before[i] = n.echo.Calls.Load()
	}
	waitUntil(t, 10*time.Second, "the new instances share the load", func() bool {
		for i, n := range nodes {
			if n.echo.Calls.Load() < before[i]+200 {
				return false
			}
		}
		return true
	})
	finish()

	per := make([]int64, 0, 6)
	for _, n := range append(stopped, nodes...) {
		per = append(per, n.echo.Calls.Load())
	}
	t.Logf("calls=%d errors=%d per-instance (old 1-3, new 1-3)=%v", calls.Load(), failures.Load(), per)
	if n := failures.Load(); n != 0 {
		t.Errorf("%d failed calls during the rolling restart, last: %v", n, lastErr.Load())
	}
	for _, n := range stopped {
		n.reg.mu.Lock()
		serving, absentAt, errs := n.reg.servingAtDereg, n.reg.absentAt, n.reg.absentCheckErrs
		n.reg.mu.Unlock()
		notServing := time.Unix(0, n.notServingAt.Load())
		switch {
		case !serving:
			t.Errorf("%s: health was not SERVING when deregistration began", n.addr)
		case absentAt.IsZero():
			t.Errorf("%s: still listed in Nacos 5 s after Deregister (errors: %v)", n.addr, errs)
		case n.notServingAt.Load() == 0:
			t.Errorf("%s: no health watcher saw NOT_SERVING", n.addr)
		case !absentAt.Before(notServing):
			t.Errorf("%s: NOT_SERVING at %v, before leaving Nacos at %v", n.addr, notServing, absentAt)
		default:
			t.Logf("%s: gone from Nacos %v before NOT_SERVING reached its health watcher", n.addr, notServing.Sub(absentAt).Round(time.Microsecond))
		}
	}
}

// TestRegistryFromConfigNacos selects Nacos by configuration alone: Serve registers the instance under
// its advertised address, a client platform's Dial resolves the service name through Nacos, the registry
// gauge is exported, and shutting down removes the instance (by deregistration, or with the connection
// when Close comes without one).
func TestRegistryFromConfigNacos(t *testing.T) {
	addr := nacostest.Require(t)
	svc := uniqueService("fromcfg")
	withNacos := func(service string) config.Config {
		cfg := testConfig(service)
		cfg.Registry.Backend = registry.Nacos
		dir := nacostest.Dir(t)
		cfg.Registry.Nacos.Addrs = []string{addr}
		cfg.Registry.Nacos.CacheDir, cfg.Registry.Nacos.LogDir = dir+"/cache", dir+"/log"
		cfg.Registry.Nacos.AdvertiseHost = "127.0.0.1"
		cfg.Registry.Nacos = nacostest.Auth(cfg.Registry.Nacos)
		return cfg
	}

	// One server listens on every interface, as services do (":port"): the advertised host is registered.
	metrics := prometheus.NewRegistry()
	sp, err := platform.New(context.Background(), withNacos(svc), quiet(), platform.WithBackends(nacos.Backend()), platform.WithMetrics(metrics))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	lis, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	port := lis.Addr().(*net.TCPAddr).Port
	echo := &testserver.Echo{}
	srv := sp.NewServer()
	testgrpc.RegisterTestServiceServer(srv, echo)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- sp.Serve(ctx, srv, lis) }()
	wait := sync.OnceValue(func() error { return <-served })
	t.Cleanup(func() { cancel(); _ = wait() })
	advertised := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	d := waitUntil(t, 10*time.Second, "registered as "+advertised, func() bool {
		list, err := nacosInstances(addr, svc)
		return err == nil && slices.Equal(list, []string{advertised})
	})
	t.Logf("registered as %s %v after Serve", advertised, d.Round(time.Millisecond))
	waitUntil(t, 10*time.Second, "shopmesh_registry_up = 1", func() bool { return registryUp(metrics) == 1 })

	// A second server is left running and its platform closed: the instance goes with the connection.
	sp2, err := platform.New(context.Background(), withNacos(svc), quiet(), platform.WithBackends(nacos.Backend()))
	if err != nil {
		t.Fatal(err)
	}
	r2 := serve(t, sp2, func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, &testserver.Echo{}) })
	waitUntil(t, 10*time.Second, "second instance registered", func() bool {
		list, err := nacosInstances(addr, svc)
		return err == nil && slices.Contains(list, r2.addr)
	})

	// The client names the service and nothing else: no Targets addresses with the nacos backend.
	cp, err := platform.New(context.Background(), withNacos("caller"), quiet(), platform.WithBackends(nacos.Backend()))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := cp.Dial(svc)
	if err != nil {
		t.Fatal(err)
	}
	if got := conn.Target(); got != "nacos:///"+svc {
		t.Errorf("dial target = %q", got)
	}
	c := testgrpc.NewTestServiceClient(conn)
	// Round robin spreads calls over the instances whose connection is ready; the first instance's may
	// become ready after the second's on a loaded machine, so call until it has had one.
	calls := 0
	waitUntil(t, 10*time.Second, "the first instance gets calls through nacos:///"+svc, func() bool {
		calls++
		if _, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{}); err != nil {
			t.Fatalf("call %d through nacos:///%s: %v", calls, svc, err)
		}
		return echo.Calls.Load() > 0
	})

	if err := sp2.Close(); err != nil {
		t.Fatal(err)
	}
	d = waitUntil(t, 15*time.Second, "closed platform's instance removed", func() bool {
		list, err := nacosInstances(addr, svc)
		return err == nil && !slices.Contains(list, r2.addr)
	})
	t.Logf("Close without Serve returning: instance gone from Nacos %v after Close", d.Round(time.Millisecond))

	cancel()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if list, err := nacosInstances(addr, svc); err != nil || slices.Contains(list, advertised) {
		t.Errorf("after Serve returned: instances %v, %v", list, err)
	}
	if err := cp.Close(); err != nil {
		t.Error(err)
	}
	if err := sp.Close(); err != nil {
		t.Error(err)
	}
	if _, err := cp.Dial(svc); err == nil {
		t.Error("Dial after Close succeeded")
	}
}

// registryUp returns the value of shopmesh_registry_up{backend="nacos"} in g (-1 when absent).
func registryUp(g prometheus.Gatherer) float64 {
	mfs, err := g.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() == "shopmesh_registry_up" && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}
