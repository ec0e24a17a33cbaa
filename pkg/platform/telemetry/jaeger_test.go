package telemetry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"testing"
	"time"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
	"github.com/shopmesh/shopmesh/pkg/platform/telemetry"
)

// TestJaegerReceivesTrace sends one traced RPC over OTLP to the real Jaeger and
// reads the trace back from its query API.
func TestJaegerReceivesTrace(t *testing.T) {
	t.Parallel()
	query := infratest.Require(t, infratest.JaegerQueryURL)
	endpoint := infratest.Shared(t, "jaeger")

	cfg := telemetry.DefaultConfig(fmt.Sprintf("telemetry-test-%d", time.Now().UnixNano()))
	cfg.OTLPEndpoint, cfg.Insecure = endpoint, true
	cfg.Version, cfg.InstanceID, cfg.Environment = "v0.0.1", "test-1", "test"
	tel, err := telemetry.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	c := startRPC(t, tel)
	ctx, parent := tel.Tracer("test").Start(callCtx(t), "jaeger-test")
	if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Fatalf("UnaryCall: %v", err)
	}
	parent.End()
	traceID := parent.SpanContext().TraceID().String()

	sctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// The server ends its span just after the client has the answer; give it a moment
	// before Shutdown flushes and closes the exporter.
	time.Sleep(50 * time.Millisecond)
	if err := tel.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}

	u := query + "/api/traces?limit=20&service=" + url.QueryEscape(cfg.ServiceName)
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		n, err := spansInTrace(t.Context(), u, traceID)
		if err == nil && n >= 3 {
			return
		}
		last = fmt.Sprintf("%d spans, err %v", n, err)
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("trace %s not in Jaeger within 30s (last: %s)", traceID, last)
}

func spansInTrace(ctx context.Context, u, traceID string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %s", resp.Status)
	}
	var body struct {
		Data []struct {
			TraceID string            `json:"traceID"`
			Spans   []json.RawMessage `json:"spans"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, err
	}
	for _, tr := range body.Data {
		if tr.TraceID == traceID {
			return len(tr.Spans), nil
		}
	}
	return 0, nil
}
