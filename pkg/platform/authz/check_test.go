package authz_test

import (
	"strings"
	"testing"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/shopmesh/shopmesh/pkg/platform/authz"
)

// complete gives every method of the interop TestService its own rule.
func complete() authz.Rules {
	sd := testgrpc.TestService_ServiceDesc
	r := authz.Rules{}
	for _, m := range sd.Methods {
		r["/"+sd.ServiceName+"/"+m.MethodName] = []string{authz.Edge}
	}
	for _, s := range sd.Streams {
		r["/"+sd.ServiceName+"/"+s.StreamName] = []string{"order"}
	}
	return r
}

func TestCheckRules(t *testing.T) {
	t.Parallel()
	sd := testgrpc.TestService_ServiceDesc
	if err := authz.CheckRules(complete(), sd); err != nil {
		t.Fatalf("complete rules: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(authz.Rules)
		want   []string
	}{
		{"a method without a rule", func(r authz.Rules) { delete(r, "/grpc.testing.TestService/UnaryCall") },
			[]string{"/grpc.testing.TestService/UnaryCall has no rule"}},
		{"a stream without a rule", func(r authz.Rules) { delete(r, "/grpc.testing.TestService/FullDuplexCall") },
			[]string{"/grpc.testing.TestService/FullDuplexCall has no rule"}},
		{"a wildcard instead of a rule", func(r authz.Rules) {
			delete(r, "/grpc.testing.TestService/UnaryCall")
			r["/grpc.testing.TestService/*"] = []string{authz.Edge}
		}, []string{"/grpc.testing.TestService/UnaryCall has no rule", "/grpc.testing.TestService/* is no method"}},
		{"a method nobody may call", func(r authz.Rules) { r["/grpc.testing.TestService/EmptyCall"] = nil },
			[]string{"EmptyCall: nobody may call it"}},
		{"a stale key", func(r authz.Rules) { r["/grpc.testing.TestService/Gone"] = []string{"order"} },
			[]string{"/grpc.testing.TestService/Gone is no method"}},
		{"a bad caller", func(r authz.Rules) { r["/grpc.testing.TestService/EmptyCall"] = []string{"Order"} },
			[]string{`bad caller "Order"`}},
	} {
		r := complete()
		tc.change(r)
		err := authz.CheckRules(r, sd)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: got %v, want %q", tc.name, err, w)
			}
		}
	}
}
