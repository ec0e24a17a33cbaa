package telemetry

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// An internal test: the exporter's target string cannot name a DNS server through Config, so this
// dials the collector the way newOTLPExporter does (collectorDialOptions) over a dns:// target.

type okCollector struct {
	collectortrace.UnimplementedTraceServiceServer
}

func (okCollector) Export(context.Context, *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// silentTXTResolver is a loopback DNS server that answers A queries with 127.0.0.1 and AAAA queries
// with no record, and never answers TXT: a resolver that forwards names it does not know to an
// upstream it cannot reach, as Docker's embedded DNS does for grpc's "_grpc_config.<host>" lookup.
func silentTXTResolver(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen udp: %v", err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			i := 12 // header, then the question's labels
			for i < n && q[i] != 0 {
				i += int(q[i]) + 1
			}
			if i+5 > n {
				continue
			}
			qtype := binary.BigEndian.Uint16(q[i+1:])
			const typeA, typeTXT = 1, 16
			if qtype == typeTXT {
				continue
			}
			resp := append([]byte(nil), q[:i+5]...)
			resp[2], resp[3] = 0x81, 0x80           // response, recursion desired/available, no error
			binary.BigEndian.PutUint16(resp[6:], 0) // answers
			binary.BigEndian.PutUint16(resp[8:], 0)
			binary.BigEndian.PutUint16(resp[10:], 0)
			if qtype == typeA {
				binary.BigEndian.PutUint16(resp[6:], 1)
				// name (pointer to the question), A, IN, TTL 60, 4 bytes: 127.0.0.1
				resp = append(resp, 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1)
			}
			_, _ = pc.WriteTo(resp, from)
		}
	}()
	return pc.LocalAddr().String()
}

// TestCollectorExportDoesNotWaitForTXTLookup: with a collector that is up and a DNS server that
// answers its address but never the TXT service-config query, the first export goes through rather
// than waiting out its deadline (the compose gateway's "processor export timeout ... DeadlineExceeded").
func TestCollectorExportDoesNotWaitForTXTLookup(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, okCollector{})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	target := "dns://" + silentTXTResolver(t) + "/collector.test:" + port
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, collectorDialOptions()...)
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { _ = cc.Close() })

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if _, err := collectortrace.NewTraceServiceClient(cc).Export(ctx, &collectortrace.ExportTraceServiceRequest{}); err != nil {
		t.Fatalf("first export: %v", err)
	}
}
