package smoke_test

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/clients"
	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
)

// TestNacos registers an ephemeral instance over the SDK's gRPC protocol (HTTP
// port + 1000), discovers it, deregisters it and sees it go.
func TestNacos(t *testing.T) {
	t.Parallel()
	addr := infratest.Require(t, infratest.NacosAddr)
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("NACOS_ADDR %q: %v", addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 64)
	if err != nil {
		t.Fatalf("NACOS_ADDR port %q: %v", portStr, err)
	}
	// Not t.TempDir: the SDK keeps writing its log files for a moment after CloseClient,
	// which makes TempDir's strict cleanup fail; removal here is best effort.
	dir, err := os.MkdirTemp("", "shopmesh-nacos-smoke-") //nolint:usetesting // see above
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	cc := constant.NewClientConfig(
		constant.WithTimeoutMs(5000),
		constant.WithNotLoadCacheAtStart(true),
		constant.WithUpdateCacheWhenEmpty(true),
		constant.WithCacheDir(dir+"/cache"),
		constant.WithLogDir(dir+"/log"),
		constant.WithLogLevel("warn"),
	)
	sc := []constant.ServerConfig{*constant.NewServerConfig(host, port)}
	client, err := clients.NewNamingClient(vo.NacosClientParam{ClientConfig: cc, ServerConfigs: sc})
	if err != nil {
		t.Fatalf("naming client: %v", err)
	}
	defer client.CloseClient()

	svc := fmt.Sprintf("smoke-%d", time.Now().UnixNano())
	reg := vo.RegisterInstanceParam{
		Ip: "127.0.0.1", Port: 50051, ServiceName: svc, Weight: 1,
		Enable: true, Healthy: true, Ephemeral: true,
		Metadata: map[string]string{"version": "smoke", "grpc_port": "50051"},
	}
	if ok, err := client.RegisterInstance(reg); err != nil || !ok {
		t.Fatalf("register: ok=%v err=%v", ok, err)
	}
	waitInstances(t, func() (int, error) {
		ins, err := client.SelectInstances(vo.SelectInstancesParam{ServiceName: svc, HealthyOnly: true})
		if err != nil {
			return 0, err
		}
		for _, in := range ins {
			if in.Port != 50051 || in.Metadata["version"] != "smoke" {
				return 0, fmt.Errorf("unexpected instance %+v", in)
			}
		}
		return len(ins), nil
	}, 1)

	if ok, err := client.DeregisterInstance(vo.DeregisterInstanceParam{Ip: "127.0.0.1", Port: 50051, ServiceName: svc, Ephemeral: true}); err != nil || !ok {
		t.Fatalf("deregister: ok=%v err=%v", ok, err)
	}
	waitInstances(t, func() (int, error) {
		svcInfo, err := client.GetService(vo.GetServiceParam{ServiceName: svc})
		if err != nil {
			return 0, err
		}
		return len(svcInfo.Hosts), nil
	}, 0)
	t.Logf("Nacos %s: registered, discovered and deregistered %s", addr, svc)
}

// waitInstances polls until count() reports want instances (discovery is
// eventually consistent), failing after a bound.
func waitInstances(t *testing.T, count func() (int, error), want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var n int
	var err error
	for time.Now().Before(deadline) {
		if n, err = count(); err == nil && n == want {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("instances = %d (err %v), want %d", n, err, want)
}
