package localstack_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/shopmesh/shopmesh/deploy/localstack"
)

// The infra env of an authenticated set (INFRA_AUTH=1) gives the stack the servers' credentials; the
// endpoints' variables are not among them.
func TestReadInfraEnvCredentials(t *testing.T) {
	path := filepath.Join(t.TempDir(), "infra.env")
	env := `export DATABASE_URL=postgres://shopmesh:shopmesh@127.0.0.1:55432/shopmesh?sslmode=disable
export KAFKA_BROKERS=127.0.0.1:19092
export NATS_URL=nats://127.0.0.1:14222
export NATS_USER=admin NATS_PASSWORD=adminpw
export INVENTORY_NATS_USER=inventory INVENTORY_NATS_PASSWORD=invpw
export ORDER_KAFKA_USERNAME=order ORDER_KAFKA_PASSWORD=orderpw
export NACOS_ADDR=127.0.0.1:18848
export NACOS_USERNAME=admin NACOS_PASSWORD=nacospw
`
	if err := os.WriteFile(path, []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := localstack.ReadInfraEnv(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"INVENTORY_NATS_USER": "inventory", "INVENTORY_NATS_PASSWORD": "invpw",
		"ORDER_KAFKA_USERNAME": "order", "ORDER_KAFKA_PASSWORD": "orderpw",
		"NACOS_USERNAME": "admin", "NACOS_PASSWORD": "nacospw",
	}
	for k, v := range want {
		if e.Credentials[k] != v {
			t.Errorf("Credentials[%s] = %q, want %q", k, e.Credentials[k], v)
		}
	}
	for _, k := range []string{"NATS_URL", "NACOS_ADDR", "KAFKA_BROKERS"} {
		if _, ok := e.Credentials[k]; ok {
			t.Errorf("Credentials holds the endpoint %s", k)
		}
	}
}
