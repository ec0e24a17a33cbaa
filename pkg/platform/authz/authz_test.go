package authz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
)

func TestAuthorizerDecides(t *testing.T) {
	t.Parallel()
	policy := authz.Func(func(_ context.Context, method string) error {
		switch method {
		case "/grpc.testing.TestService/EmptyCall":
			return nil
		case "/grpc.testing.TestService/UnaryCall":
			return errors.New("caller order may not call this: internal detail")
		}
		return status.Error(codes.Unauthenticated, "no identity")
	})
	log := slog.New(slog.DiscardHandler)
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(authz.UnaryServerInterceptor(policy, log)),
		grpc.ChainStreamInterceptor(authz.StreamServerInterceptor(policy, log)),
	)
	echo := &testserver.Echo{}
	client := testserver.Client(t, testserver.Start(t, srv, echo))

	if _, err := client.EmptyCall(t.Context(), &testpb.Empty{}); err != nil {
		t.Errorf("allowed call: %v", err)
	}
	_, err := client.UnaryCall(t.Context(), &testpb.SimpleRequest{})
	if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != "permission denied" {
		t.Errorf("denied call: %v, want PERMISSION_DENIED without details", err)
	}
	if echo.Calls.Load() != 0 {
		t.Error("handler ran for a denied call")
	}
	stream, err := client.FullDuplexCall(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unauthenticated {
		t.Errorf("stream: %v, want the authorizer's own UNAUTHENTICATED", err)
	}
}

func TestAllowAll(t *testing.T) {
	t.Parallel()
	if err := (authz.AllowAll{}).Authorize(t.Context(), "/x.Y/Z"); err != nil {
		t.Error(err)
	}
}

// A refusal whose status names the caller and the method (as Policy's does) reaches the caller as
// "permission denied" only, unary and streaming; a reason in its details is kept.
func TestDenialNamesNeitherCallerNorMethod(t *testing.T) {
	t.Parallel()
	policy := authz.Func(func(_ context.Context, method string) error {
		st, err := status.New(codes.PermissionDenied, "permission denied: order may not call "+method).
			WithDetails(&errdetails.ErrorInfo{Reason: "NOT_ALLOWED", Domain: "shopmesh"})
		if err != nil {
			return err
		}
		return st.Err()
	})
	var logs bytes.Buffer // written by the server goroutines, read after the calls returned
	var mu sync.Mutex
	log := slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logs}, nil))
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(authz.UnaryServerInterceptor(policy, log)),
		grpc.ChainStreamInterceptor(authz.StreamServerInterceptor(policy, log)),
	)
	client := testserver.Client(t, testserver.Start(t, srv, &testserver.Echo{}))

	_, err := client.UnaryCall(t.Context(), &testpb.SimpleRequest{})
	stream, serr := client.FullDuplexCall(t.Context())
	if serr != nil {
		t.Fatal(serr)
	}
	_, rerr := stream.Recv()
	for name, err := range map[string]error{"unary": err, "stream": rerr} {
		st := status.Convert(err)
		if st.Code() != codes.PermissionDenied || st.Message() != "permission denied" {
			t.Errorf("%s: %v, want PERMISSION_DENIED with the message \"permission denied\"", name, err)
		}
		if m := st.Message(); strings.Contains(m, "order") || strings.Contains(m, "TestService") {
			t.Errorf("%s: message %q names the caller or the method", name, m)
		}
		if rpcerr.Reason(err) != "NOT_ALLOWED" {
			t.Errorf("%s: reason %q, want the authorizer's NOT_ALLOWED kept", name, rpcerr.Reason(err))
		}
		// The caller gets a request id; the log has the detail under it.
		id := rpcerr.ErrorInfo(err).GetMetadata()[authz.RequestIDKey]
		if id == "" {
			t.Fatalf("%s: no request id in the ErrorInfo metadata: %v", name, rpcerr.ErrorInfo(err))
		}
		mu.Lock()
		found := false
		for l := range strings.Lines(logs.String()) {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m[authz.RequestIDKey] == id {
				e, _ := m["err"].(string)
				found = strings.Contains(e, "order may not call /grpc.testing.TestService/")
			}
		}
		mu.Unlock()
		if !found {
			t.Errorf("%s: no log line under request id %s with the detail:\n%s", name, id, logs.String())
		}
	}
	// A refusal that carried no ErrorInfo gets one, with the id.
	err = authz.Refuse(t.Context(), nil, "/x.Y/Z", status.Error(codes.PermissionDenied, "permission denied: a may not call /x.Y/Z"))
	if st := status.Convert(err); st.Message() != "permission denied" || rpcerr.Reason(err) != "FORBIDDEN" ||
		rpcerr.ErrorInfo(err).GetMetadata()[authz.RequestIDKey] == "" {
		t.Errorf("Refuse without ErrorInfo: %v %v", err, rpcerr.ErrorInfo(err))
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
