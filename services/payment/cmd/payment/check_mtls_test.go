package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// TestHealthcheckMTLS is the compose set-up: the compose profile (mTLS required, no plaintext health
// port), the service's own certificate, and `payment healthcheck` dialling the main port with it.
func TestHealthcheckMTLS(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	ca, err := mtls.NewCA("test CA", time.Now().Add(-time.Minute), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue("payment", time.Now().Add(-time.Minute), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"ca.pem": ca.CertPEM, "payment.pem": cert, "payment-key.pem": key} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	env := map[string]string{
		"PAYMENT_PROFILE":                 "compose",
		"PAYMENT_LISTEN_ADDR":             "127.0.0.1:0",
		"PAYMENT_DSN":                     "sqlite:" + filepath.Join(dir, "payment.db"),
		"KAFKA_BROKERS":                   cluster.ListenAddrs()[0],
		"PAYMENT_TLS_CA_FILE":             filepath.Join(dir, "ca.pem"),
		"PAYMENT_TLS_CERT_FILE":           filepath.Join(dir, "payment.pem"),
		"PAYMENT_TLS_KEY_FILE":            filepath.Join(dir, "payment-key.pem"),
		"PAYMENT_SERVER_DRAIN_DELAY":      "0s",
		"PAYMENT_CONSUMER_MAX_WAIT":       "100ms",
		"PAYMENT_SERVER_SHUTDOWN_TIMEOUT": "5s",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	logs, logw := io.Pipe()
	serving := make(chan servingLine, 1)
	go scanServing(logs, serving)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, nil, lookup, logw); _ = logw.Close() }()
	var target string
	select {
	case line := <-serving:
		target = line.Addr
	case err := <-done:
		t.Fatalf("run returned before serving: %v", err)
	case <-ctx.Done():
		t.Fatal("service never served")
	}
	checkHealth(ctx, t, env, target)

	// Without the client certificate the same check must fail: the port is mTLS only.
	plain := map[string]string{"PAYMENT_PROFILE": "test", "PAYMENT_LISTEN_ADDR": target, "PAYMENT_DSN": env["PAYMENT_DSN"],
		"KAFKA_BROKERS": env["KAFKA_BROKERS"]}
	if err := run(ctx, []string{"healthcheck"}, func(k string) (string, bool) { v, ok := plain[k]; return v, ok }, &bytes.Buffer{}); err == nil {
		t.Error("plaintext healthcheck against the mTLS port: want an error")
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}
