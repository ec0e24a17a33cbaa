package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
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
	// (no session cache), so each one is a full ECDHE + two ECDSA P-256 certificate verifications. The
	// listener runs in a child process (this binary again, see HandshakeServerEnv) so the server's CPU
	// per handshake is measured apart from the client's.
	addr, pid, err := startHandshakeServer(ctx, cl, dir)
	if err != nil {
		return nil, fmt.Errorf("handshake server: %w", err)
	}
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
		{Name: "MTLS/handshake/conc=4", Conc: 4, ServerProcess: true, Variants: []Variant{
			{Name: "default", Op: handshake(nil), Pids: []int{pid}},
			{Name: "x25519", Op: handshake([]tls.CurveID{tls.X25519}), Pids: []int{pid}}}},
	}, nil
}

// HandshakeServerEnv, set to a certificate directory, makes the bench binary serve TLS handshakes
// (ServeHandshakes) instead of benchmarking: the handshake case's server process.
const HandshakeServerEnv = "SHOPMESH_BENCH_HANDSHAKE_SERVER"

// ServeHandshakes listens on a loopback port with the "echo" identity of the certificates in dir,
// prints the address on stdout, completes every TLS handshake and closes the connection, until stdin
// closes (the parent ended).
func ServeHandshakes(ctx context.Context, dir string) error {
	src, err := source(dir, "echo")
	if err != nil {
		return err
	}
	defer func() { _ = src.Close() }()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", src.ServerConfig())
	if err != nil {
		return err
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		_ = lis.Close()
	}()
	fmt.Println(lis.Addr().String())
	for {
		c, err := lis.Accept()
		if err != nil {
			return nil
		}
		go func() {
			hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_ = c.(*tls.Conn).HandshakeContext(hctx)
			_ = c.Close()
		}()
	}
}

// startHandshakeServer runs ServeHandshakes in a child process and returns its address and pid.
func startHandshakeServer(ctx context.Context, cl *Cleanup, dir string) (string, int, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", 0, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), HandshakeServerEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", 0, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, err
	}
	cl.Add(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	type line struct {
		s   string
		err error
	}
	got := make(chan line, 1)
	go func() {
		s, err := bufio.NewReader(stdout).ReadString('\n')
		got <- line{strings.TrimSpace(s), err}
	}()
	select {
	case l := <-got:
		if l.err != nil {
			return "", 0, fmt.Errorf("no address from the child: %w", l.err)
		}
		return l.s, cmd.Process.Pid, nil
	case <-time.After(30 * time.Second):
		return "", 0, errors.New("no address from the child within 30 s")
	case <-ctx.Done():
		return "", 0, ctx.Err()
	}
}
