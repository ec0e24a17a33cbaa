package platform_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
)

// wantShuttingDown checks the error a stream ended with at drain: UNAVAILABLE, reason SHUTTING_DOWN.
func wantShuttingDown(t *testing.T, what string, err error) {
	t.Helper()
	if status.Code(err) != codes.Unavailable || rpcerr.Reason(err) != platform.ReasonShuttingDown {
		t.Errorf("%s ended with %v, want UNAVAILABLE with reason %s", what, err, platform.ReasonShuttingDown)
	}
}

// TestDrainEndsStreams: streams that would live as long as their client wants (a server stream
// waiting on its context, a bidi stream waiting in Recv) end at drain with UNAVAILABLE, while a unary
// call in flight still completes, and Serve returns without waiting for ShutdownTimeout.
func TestDrainEndsStreams(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = 30 * time.Second
	cfg := testConfig("echo")
	cfg.Server.ShutdownTimeout = shutdownTimeout
	cfg.Server.StreamDefaultDeadline = time.Hour
	cfg.Server.StreamMaxDeadline = time.Hour
	unaryStarted, release := make(chan struct{}), make(chan struct{})
	echo := &testserver.Echo{
		Unary: func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			close(unaryStarted)
			<-release // ignores its context: only finishing ends it
			return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: []byte("done")}}, nil
		},
		BeforeStreamSend: func(ctx context.Context, i int) error {
			if i == 0 {
				return nil
			}
			<-ctx.Done() // a watch: nothing more to send until the caller leaves
			return ctx.Err()
		},
	}
	srv := echoServer(t, cfg, echo)
	c := testserver.Client(t, srv.addr)
	// Bounded well below ShutdownTimeout: before the fix the streams only ended when it ran out.
	ctx, cancel := context.WithTimeout(t.Context(), shutdownTimeout/2)
	defer cancel()

	watch, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{
		ResponseParameters: []*testgrpc.ResponseParameters{{Size: 1}, {Size: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("first watch message: %v", err)
	}
	bidi, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := bidi.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := bidi.Recv(); err != nil {
		t.Fatalf("bidi echo: %v", err)
	}
	unary := make(chan error, 1)
	go func() {
		resp, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		if err == nil && string(resp.GetPayload().GetBody()) != "done" {
			err = status.Errorf(codes.DataLoss, "unary answered %q", resp.GetPayload().GetBody())
		}
		unary <- err
	}()
	<-unaryStarted

	stopAt := time.Now()
	srv.stop()

	_, err = watch.Recv()
	wantShuttingDown(t, "server stream", err)
	_, err = bidi.Recv()
	wantShuttingDown(t, "bidi stream", err)
	select {
	case <-srv.p.Stopping():
	default:
		t.Error("Stopping not closed while streams were ended")
	}

	close(release)
	if err := <-unary; err != nil {
		t.Errorf("unary call in flight at drain: %v", err)
	}
	if err := srv.wait(); err != nil {
		t.Errorf("Serve: %v", err)
	}
	if elapsed := time.Since(stopAt); elapsed >= shutdownTimeout {
		t.Errorf("Serve returned after %v, ShutdownTimeout is %v: streams held GracefulStop", elapsed, shutdownTimeout)
	}
}

// TestStreamEndingNormallyAtDrainStaysOK: a stream that finishes by itself is not turned into an error
// because the server is draining.
func TestStreamEndingNormallyAtDrainStaysOK(t *testing.T) {
	t.Parallel()
	cfg := testConfig("echo")
	started, release := make(chan struct{}), make(chan struct{})
	echo := &testserver.Echo{BeforeStreamSend: func(_ context.Context, i int) error {
		if i == 1 {
			close(started)
			<-release
		}
		return nil
	}}
	srv := echoServer(t, cfg, echo)
	c := testserver.Client(t, srv.addr)
	s, err := c.StreamingOutputCall(t.Context(), &testgrpc.StreamingOutputCallRequest{
		ResponseParameters: []*testgrpc.ResponseParameters{{Size: 1}, {Size: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	srv.stop()
	<-srv.p.Stopping()
	close(release)
	got := 0
	for {
		if _, err := s.Recv(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Errorf("stream ended with %v, want EOF", err)
			}
			break
		}
		got++
	}
	if got != 2 {
		t.Errorf("got %d of 2 messages", got)
	}
	if err := srv.wait(); err != nil {
		t.Errorf("Serve: %v", err)
	}
}
