// Package testserver is the echo service the platform's tests and benchmarks run against: grpc-go's
// interop TestService (real generated code), with counters and hooks so tests can assert what the server saw.
package testserver

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// Echo implements TestService: UnaryCall echoes the payload, StreamingOutputCall sends one response per
// ResponseParameters entry, StreamingInputCall sums payload sizes, FullDuplexCall echoes each message.
type Echo struct {
	testgrpc.UnimplementedTestServiceServer

	// Calls counts handler invocations of UnaryCall (attempts that reached the handler).
	Calls atomic.Int64
	// Unary, when set, handles UnaryCall instead of the echo.
	Unary func(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error)
	// BeforeStreamSend, when set, runs before each StreamingOutputCall response is sent.
	BeforeStreamSend func(ctx context.Context, i int) error
}

// UnaryCall echoes the request payload.
func (e *Echo) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	e.Calls.Add(1)
	if e.Unary != nil {
		return e.Unary(ctx, req)
	}
	return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
}

// EmptyCall returns at once.
func (e *Echo) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	return &testgrpc.Empty{}, nil
}

// StreamingOutputCall sends one message per ResponseParameters entry.
func (e *Echo) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	for i, p := range req.GetResponseParameters() {
		if e.BeforeStreamSend != nil {
			if err := e.BeforeStreamSend(stream.Context(), i); err != nil {
				return err
			}
		}
		body := make([]byte, p.GetSize())
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: body}}); err != nil {
			return err
		}
	}
	return nil
}

// StreamingInputCall sums the payload sizes of the received messages.
func (e *Echo) StreamingInputCall(stream grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
	var sum int32
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: sum})
		}
		if err != nil {
			return err
		}
		sum += int32(len(m.GetPayload().GetBody()))
	}
}

// FullDuplexCall echoes every message.
func (e *Echo) FullDuplexCall(stream grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: m.GetPayload()}); err != nil {
			return err
		}
	}
}

// Listen returns a loopback listener on a free port.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return lis
}

// Start registers e on srv, serves it on loopback until the test ends, and returns the address.
func Start(t testing.TB, srv *grpc.Server, e *Echo) string {
	t.Helper()
	testgrpc.RegisterTestServiceServer(srv, e)
	lis := Listen(t)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// Client dials addr without any platform behaviour, plus opts, closing it when the test ends.
func Client(t testing.TB, addr string, opts ...grpc.DialOption) testgrpc.TestServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return testgrpc.NewTestServiceClient(conn)
}
