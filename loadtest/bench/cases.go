package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc/credentials/insecure"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
)

// ChainCases compares bare grpc-go with the platform chain (unary echo over loopback, one process, at
// concurrency 1 and 50). With otlpEndpoint set, a third variant exports traces there at sampleRatio.
func ChainCases(ctx context.Context, cl *Cleanup, otlpEndpoint string, sampleRatio float64) ([]Case, error) {
	bare, err := bareEcho(cl, insecure.NewCredentials(), insecure.NewCredentials())
	if err != nil {
		return nil, fmt.Errorf("bare echo: %w", err)
	}
	plat, err := platformEcho(ctx, cl, nil)
	if err != nil {
		return nil, fmt.Errorf("platform echo: %w", err)
	}
	vs := []Variant{{Name: "bare", Op: unaryOp(bare)}, {Name: "platform", Op: unaryOp(plat)}}
	if otlpEndpoint != "" {
		traced, err := platformEcho(ctx, cl, func(c *config.Config) {
			c.Telemetry.OTLPEndpoint, c.Telemetry.SampleRatio = otlpEndpoint, sampleRatio
		})
		if err != nil {
			return nil, fmt.Errorf("traced platform echo: %w", err)
		}
		vs = append(vs, Variant{Name: "platform-traced", Op: unaryOp(traced)})
	}
	return []Case{{Name: "Chain/conc=1", Conc: 1, Variants: vs}, {Name: "Chain/conc=50", Conc: 50, Variants: vs}}, nil
}

// MTLSCases compares plaintext with mutual TLS 1.3 (the shopmesh mtls.Source on both sides, certificates
// issued in process) on a bare grpc-go echo at concurrency 50, and measures full handshakes per second.
func MTLSCases(ctx context.Context, cl *Cleanup) ([]Case, error) {
	dir, err := os.MkdirTemp("", "shopmesh-bench-certs-")
	if err != nil {
		return nil, err
	}
	cl.Add(func() { _ = os.RemoveAll(dir) })
	if err := devCerts(dir, "echo", "bench"); err != nil {
		return nil, err
	}
	ssrc, err := source(dir, "echo")
	if err != nil {
		return nil, err
	}
	cl.Add(func() { _ = ssrc.Close() })
	csrc, err := source(dir, "bench")
	if err != nil {
		return nil, err
	}
	cl.Add(func() { _ = csrc.Close() })
	plain, err := bareEcho(cl, insecure.NewCredentials(), insecure.NewCredentials())
	if err != nil {
		return nil, err
	}
	secure, err := bareEcho(cl, ssrc.ServerCredentials(), csrc.ClientCredentials("echo"))
	if err != nil {
		return nil, fmt.Errorf("mtls echo: %w", err)
	}

	// Handshakes: a TLS listener that completes the handshake and closes; the client never resumes
	// (no session cache), so each one is a full ECDHE + two ECDSA P-256 certificate verifications.
	lis, err := tls.Listen("tcp", "127.0.0.1:0", ssrc.ServerConfig())
	if err != nil {
		return nil, err
	}
	cl.Add(func() { _ = lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).HandshakeContext(ctx)
				_ = c.Close()
			}()
		}
	}()
	addr := lis.Addr().String()
	handshake := func(curves []tls.CurveID) Op {
		return func(ctx context.Context) error {
			cfg := csrc.ClientConfig("echo")
			if curves != nil {
				cfg = cfg.Clone()
				cfg.CurvePreferences = curves
			}
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			return c.Close()
		}
	}
	return []Case{
		{Name: "MTLS/steady/conc=50", Conc: 50, Variants: []Variant{
			{Name: "plaintext", Op: unaryOp(plain)}, {Name: "mtls", Op: unaryOp(secure)}}},
		// default: Go's key shares (X25519MLKEM768 hybrid first); x25519: classic ECDHE only.
		{Name: "MTLS/handshake/conc=4", Conc: 4, Variants: []Variant{
			{Name: "default", Op: handshake(nil)}, {Name: "x25519", Op: handshake([]tls.CurveID{tls.X25519})}}},
	}, nil
}
