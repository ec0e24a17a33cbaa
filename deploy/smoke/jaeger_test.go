package smoke_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"

	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
)

// TestJaeger exports one span over OTLP/gRPC and reads it back through Jaeger's
// query API.
func TestJaeger(t *testing.T) {
	t.Parallel()
	endpoint := infratest.Require(t, infratest.OTLPEndpoint)
	query := infratest.Require(t, infratest.JaegerQueryURL)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(endpoint), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatalf("exporter: %v", err)
	}
	service := fmt.Sprintf("smoke-%d", time.Now().UnixNano())
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(service))),
	)
	_, span := tp.Tracer("smoke").Start(ctx, "place-order")
	span.SetAttributes(attribute.String("order.id", "smoke"))
	traceID := span.SpanContext().TraceID().String()
	span.End()
	if err := tp.Shutdown(ctx); err != nil { // flushes the batch
		t.Fatalf("flush: %v", err)
	}

	u := fmt.Sprintf("%s/api/traces?service=%s", query, url.QueryEscape(service))
	deadline := time.Now().Add(30 * time.Second)
	for {
		found, err := findTrace(ctx, u, traceID)
		if err == nil && found {
			t.Logf("Jaeger: trace %s of service %s read back from %s", traceID, service, query)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace %s not returned by %s (last error: %v)", traceID, u, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func findTrace(ctx context.Context, u, traceID string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("status %s", resp.Status)
	}
	var body struct {
		Data []struct {
			TraceID string `json:"traceID"`
			Spans   []struct {
				OperationName string `json:"operationName"`
			} `json:"spans"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return false, err
	}
	for _, tr := range body.Data {
		if tr.TraceID == traceID && len(tr.Spans) == 1 && tr.Spans[0].OperationName == "place-order" {
			return true, nil
		}
	}
	return false, nil
}
