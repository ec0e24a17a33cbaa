package platform_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// load is an open-loop caller: one call every 1/rate, each on its own goroutine, whatever the previous
// ones are doing.
type load struct {
	calls, failed atomic.Int64
	mu            sync.Mutex
	firstErrs     []string
	wg            sync.WaitGroup
}

func (l *load) run(ctx context.Context, rate int, call func(context.Context) error) {
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	start, issued := time.Now(), 0
	for {
		select {
		case <-ctx.Done():
			l.wg.Wait()
			return
		case <-tick.C:
		}
		// Catch up on ticks the ticker dropped, so the rate holds on a busy machine.
		due := int(time.Since(start) * time.Duration(rate) / time.Second)
		for ; issued < due; issued++ {
			l.fire(ctx, call)
		}
	}
}

func (l *load) fire(ctx context.Context, call func(context.Context) error) {
	l.wg.Go(func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		l.calls.Add(1)
		if err := call(cctx); err != nil {
			l.failed.Add(1)
			l.mu.Lock()
			if len(l.firstErrs) < 5 {
				l.firstErrs = append(l.firstErrs, err.Error())
			}
			l.mu.Unlock()
		}
	})
}

func leafSerial(t *testing.T, path string) *big.Int {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(path, path[:len(path)-len(".pem")]+"-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber
}

// servedSerial makes a fresh handshake to addr as identity (files in dir) and returns the serial of the
// certificate the server presented.
func servedSerial(t *testing.T, dir, identity, server, addr string) (*big.Int, error) {
	t.Helper()
	src, err := mtls.Load(mtls.Config{
		CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, identity+".pem"), KeyFile: filepath.Join(dir, identity+"-key.pem"),
	})
	if err != nil {
		return nil, err
	}
	defer src.Close()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, src.ClientConfig(server))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// S2: leaf rotation, then a CA rotation (new CA added to the bundle, leaves reissued under it, old CA
// removed), while 200 calls/s run through the facade over mTLS.
func TestRotationUnderLoad(t *testing.T) {
	t.Parallel()
	ca1, ca2 := testCA(t, "CA one"), testCA(t, "CA two")
	dir := certDir(t, ca1, "inventory", "order")
	policy := filepath.Join(dir, "policy.yaml")
	writeFile(t, policy, []byte("methods:\n  /grpc.testing.TestService/*: [spiffe://shopmesh.local/order]\n"))
	// Keep a leaf of the old CA for the last check.
	oldDir := t.TempDir()
	for _, f := range []string{"order.pem", "order-key.pem"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(oldDir, f), b)
	}

	var bySerial sync.Map // client certificate serial → calls seen by the handler
	echo := &testserver.Echo{Unary: func(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		if p, ok := peer.FromContext(ctx); ok {
			if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
				n, _ := bySerial.LoadOrStore(info.State.PeerCertificates[0].SerialNumber.String(), new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		}
		return &testgrpc.SimpleResponse{}, nil
	}}
	const reload = 50 * time.Millisecond
	scfg := tlsConfig("inventory", dir)
	scfg.TLS.ReloadInterval = reload
	scfg.AuthzPolicyFile = policy
	// Connections are recycled, so handshakes keep happening during every step of the rotation.
	scfg.Server.Keepalive.MaxConnectionAge = 300 * time.Millisecond
	scfg.Server.Keepalive.MaxConnectionAgeGrace = 5 * time.Second
	srv := echoServer(t, scfg, echo)

	ccfg := tlsConfig("order", dir)
	ccfg.TLS.ReloadInterval = reload
	ccfg.Targets["inventory"] = config.Target{Addresses: []string{srv.addr}}
	conn, err := newPlatform(t, ccfg).Dial("inventory")
	if err != nil {
		t.Fatal(err)
	}
	client := testgrpc.NewTestServiceClient(conn)

	// waitServed waits until fresh handshakes present the server certificate now on disk.
	waitServed := func(step string) {
		t.Helper()
		want := leafSerial(t, filepath.Join(dir, "inventory.pem"))
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, err := servedSerial(t, dir, "order", "inventory", srv.addr)
			if err == nil && got.Cmp(want) == 0 {
				t.Logf("%s: new handshakes present serial %s", step, got.Text(16))
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: server still presents %v (err %v), want %s", step, got, err, want.Text(16))
			}
			time.Sleep(reload)
		}
	}
	bundle := func(cas ...*mtls.CA) []byte {
		var b bytes.Buffer
		for _, ca := range cas {
			b.Write(ca.CertPEM)
		}
		return b.Bytes()
	}

	var l load
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(ctx, 200, func(ctx context.Context) error {
			_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
			return err
		})
	}()
	pause := func() { time.Sleep(1500 * time.Millisecond) }
	start := time.Now()

	pause()
	issueInto(t, dir, ca1, "inventory") // 1. leaf rotation under the same CA
	issueInto(t, dir, ca1, "order")
	waitServed("leaf rotation")
	pause()
	writeFile(t, filepath.Join(dir, "ca.pem"), bundle(ca2, ca1)) // 2. new CA trusted next to the old
	time.Sleep(10 * reload)                                      // every Source has reloaded the bundle
	issueInto(t, dir, ca2, "inventory")                          // 3. leaves from the new CA
	issueInto(t, dir, ca2, "order")
	waitServed("leaves under the new CA")
	pause()
	writeFile(t, filepath.Join(dir, "ca.pem"), bundle(ca2)) // 4. old CA removed
	time.Sleep(10 * reload)
	waitServed("old CA removed")
	pause()
	stop()
	<-done
	elapsed := time.Since(start)

	finalClient := leafSerial(t, filepath.Join(dir, "order.pem")).String()
	var finalCalls int64
	if n, ok := bySerial.Load(finalClient); ok {
		finalCalls = n.(*atomic.Int64).Load()
	}
	serials := 0
	bySerial.Range(func(any, any) bool { serials++; return true })
	t.Logf("rotation under load: %d calls in %v (%.0f/s), %d failed, %d client certificates seen by the server, %d calls with the final one",
		l.calls.Load(), elapsed.Round(time.Millisecond), float64(l.calls.Load())/elapsed.Seconds(), l.failed.Load(), serials, finalCalls)
	if l.failed.Load() != 0 {
		t.Errorf("%d of %d calls failed, first: %v", l.failed.Load(), l.calls.Load(), l.firstErrs)
	}
	if l.calls.Load() < 1000 {
		t.Errorf("only %d calls were made", l.calls.Load())
	}
	if serials < 3 || finalCalls == 0 {
		t.Errorf("server saw %d client certificates, %d calls with the final one: new handshakes did not use the new certificates", serials, finalCalls)
	}

	// A client still holding a leaf of the removed CA is refused, and the handler does not run for it.
	before := echo.Calls.Load()
	old, err := mtls.Load(mtls.Config{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(oldDir, "order.pem"), KeyFile: filepath.Join(oldDir, "order-key.pem")})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oc, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(old.ClientCredentials("inventory")))
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	cctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	_, err = testgrpc.NewTestServiceClient(oc).UnaryCall(cctx, &testgrpc.SimpleRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("old-CA client: got %v, want UNAVAILABLE (handshake refused)", err)
	}
	if n := echo.Calls.Load() - before; n != 0 {
		t.Errorf("handler ran %d times for the old-CA client", n)
	}
}
