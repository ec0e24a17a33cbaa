package validation_test

import (
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/validation"
)

type violations []rpcerr.FieldViolation

func (v violations) Error() string                            { return "invalid" }
func (v violations) FieldViolations() []rpcerr.FieldViolation { return v }

// validate rejects a negative response_size and an empty payload body in streamed uploads.
func validate(m proto.Message) error {
	switch m := m.(type) {
	case *testpb.SimpleRequest:
		if m.GetResponseSize() < 0 {
			return violations{{Field: "response_size", Description: "must be >= 0"}}
		}
	case *testpb.StreamingInputCallRequest:
		if len(m.GetPayload().GetBody()) == 0 {
			return violations{{Field: "payload.body", Description: "must not be empty"}}
		}
	}
	return nil
}

func start(t *testing.T) (testpb.TestServiceClient, *testserver.Echo) {
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(validation.UnaryServerInterceptor(validate)),
		grpc.ChainStreamInterceptor(validation.StreamServerInterceptor(validate)),
	)
	echo := &testserver.Echo{}
	return testserver.Client(t, testserver.Start(t, srv, echo)), echo
}

func TestUnaryInvalidRequestNamesTheField(t *testing.T) {
	t.Parallel()
	client, echo := start(t)
	_, err := client.UnaryCall(t.Context(), &testpb.SimpleRequest{ResponseSize: -1})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("code = %v, want INVALID_ARGUMENT", status.Code(err))
	}
	vs := rpcerr.Violations(err)
	if len(vs) != 1 || vs[0].Field != "response_size" {
		t.Errorf("violations = %+v, want response_size", vs)
	}
	if rpcerr.Reason(err) != rpcerr.ReasonValidation {
		t.Errorf("reason = %q", rpcerr.Reason(err))
	}
	if n := echo.Calls.Load(); n != 0 {
		t.Errorf("handler ran %d times for an invalid request", n)
	}
	if _, err := client.UnaryCall(t.Context(), &testpb.SimpleRequest{ResponseSize: 1}); err != nil {
		t.Errorf("valid request: %v", err)
	}
}

func TestClientStreamValidatesEachMessage(t *testing.T) {
	t.Parallel()
	client, _ := start(t)
	stream, err := client.StreamingInputCall(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: []byte("ok")}}); err != nil {
		t.Fatal(err)
	}
	// The second message is invalid; the server ends the stream with INVALID_ARGUMENT.
	if err := stream.Send(&testpb.StreamingInputCallRequest{}); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	_, err = stream.CloseAndRecv()
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("code = %v, want INVALID_ARGUMENT", status.Code(err))
	}
	if vs := rpcerr.Violations(err); len(vs) != 1 || vs[0].Field != "payload.body" {
		t.Errorf("violations = %+v", vs)
	}

	ok, err := client.StreamingInputCall(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_ = ok.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: []byte("abc")}})
	resp, err := ok.CloseAndRecv()
	if err != nil || resp.GetAggregatedPayloadSize() != 3 {
		t.Errorf("valid stream: %v, %v", resp, err)
	}
}

func TestToStatus(t *testing.T) {
	t.Parallel()
	if validation.ToStatus(nil) != nil {
		t.Error("nil stays nil")
	}
	st := status.Error(codes.FailedPrecondition, "x")
	if validation.ToStatus(st) != st { //nolint:errorlint // the same value must come back, not a wrapped one
		t.Error("status errors pass through")
	}
	if got := validation.ToStatus(errors.New("rule 7 is malformed")); status.Code(got) != codes.Internal {
		t.Errorf("validator failure: %v, want INTERNAL", got)
	}
}
