// Package healthcheck is the client side of the `<service> healthcheck` subcommand that container
// runtimes run inside the container (compose `healthcheck`, Docker HEALTHCHECK): one grpc.health.v1
// Check, or one HTTP GET for a process without a gRPC server, bounded by Timeout.
package healthcheck

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
)

// Timeout bounds one check, dial included.
const Timeout = 3 * time.Second

// ErrNotServing is returned when the server answered with a status other than SERVING.
var ErrNotServing = errors.New("not serving")

// Run asks the gRPC server at addr for the health of the whole server (service "") and returns nil
// only when it answers SERVING. creds nil dials in plaintext (the HEALTH_ADDR sidecar); otherwise pass
// the service's own mTLS client credentials. The call gets Timeout unless ctx ends sooner.
func Run(ctx context.Context, addr string, creds credentials.TransportCredentials) error {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", addr, err)
	}
	defer conn.Close()
	resp, err := healthgrpc.NewHealthClient(conn).Check(ctx, &healthgrpc.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", addr, err)
	}
	if s := resp.GetStatus(); s != healthgrpc.HealthCheckResponse_SERVING {
		return fmt.Errorf("healthcheck %s: %w (%s)", addr, ErrNotServing, s)
	}
	return nil
}

// HTTP GETs url and returns nil only on a 2xx answer, within Timeout.
func HTTP(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", url, err)
	}
	transport := &http.Transport{Proxy: nil}
	if strings.HasPrefix(url, "https://") {
		// Only the process's own port on loopback is checked (see GatewayHTTPS): its certificate names
		// the public host, not 127.0.0.1, so it cannot be verified by name here.
		transport.TLSClientConfig = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // loopback self-check
	}
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("healthcheck %s: %w (HTTP %d)", url, ErrNotServing, resp.StatusCode)
	}
	return nil
}

// Loopback turns a listen address (":50051", "0.0.0.0:50051", "[::]:9090") into the address a check
// inside the same container dials: 127.0.0.1 with the same port.
func Loopback(listenAddr string) (string, error) {
	_, port, err := net.SplitHostPort(strings.TrimSpace(listenAddr))
	if err != nil {
		return "", fmt.Errorf("healthcheck: %q is not host:port: %w", listenAddr, err)
	}
	if port == "" || port == "0" {
		return "", fmt.Errorf("healthcheck: %q has no fixed port to dial", listenAddr)
	}
	return net.JoinHostPort("127.0.0.1", port), nil
}
