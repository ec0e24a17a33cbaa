package nacos_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos"
	"github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos/nacostest"
	"github.com/shopmesh/shopmesh/pkg/platform/discovery"
)

// Against a Nacos that authenticates its clients (infra.sh with INFRA_AUTH=1: NACOS_USERNAME and
// NACOS_PASSWORD set), a client without the credential cannot register, one with it registers and
// another one with it resolves and calls the instance. Skipped against a Nacos without authentication.
func TestClientsLogIn(t *testing.T) {
	addr := nacostest.Require(t)
	if os.Getenv(nacostest.Username) == "" {
		t.Skip("NACOS_USERNAME is not set: this Nacos does not authenticate (start it with INFRA_AUTH=1)")
	}
	svc := serviceName("auth")

	t.Run("without credentials", func(t *testing.T) {
		anon, err := nacos.New(nacos.Default(addr, nacostest.Dir(t)), testLogger(t), prometheus.NewRegistry())
		if err == nil {
			t.Cleanup(func() { _ = anon.Close() })
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err = anon.Register(ctx, discovery.Instance{Service: svc, Addr: "127.0.0.1:1"})
		}
		if err == nil {
			t.Fatal("a client without credentials registered an instance")
		}
		t.Logf("refused: %v", err)
		if list := openAPIInstances(t, addr, svc); strings.Contains(list, `"port":1,`) {
			t.Fatalf("the instance is listed: %s", list)
		}
	})

	t.Run("with credentials", func(t *testing.T) {
		in := startInstance(t, addr, svc)
		client := dial(t, newClient(t, addr, ""), svc)
		waitFor(t, 30*time.Second, "the registered instance answers through the resolver", func() bool {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("auth")}})
			return err == nil && in.from("auth") > 0
		})
	})
}

// openAPIInstances lists svc's instances through the open API as NACOS_USERNAME.
func openAPIInstances(t *testing.T, addr, svc string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	token, err := nacostest.Login(ctx, addr, os.Getenv(nacostest.Username), os.Getenv(nacostest.Password))
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{"serviceName": {svc}, "accessToken": {token}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/nacos/v1/ns/instance/list?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("instance list as %s: %d %s", os.Getenv(nacostest.Username), resp.StatusCode, body)
	}
	return string(body)
}
