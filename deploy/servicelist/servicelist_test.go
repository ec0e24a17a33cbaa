package servicelist_test

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/shopmesh/shopmesh/deploy/servicelist"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// tree writes one services/<dir>/service.yaml per entry under a temporary root.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for dir, body := range files {
		if err := os.MkdirAll(filepath.Join(root, "services", dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "services", dir, servicelist.File), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestLoadRepository(t *testing.T) {
	t.Parallel()
	list, err := servicelist.Load(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	got := servicelist.Names(list)
	if want := []string{"inventory", "payment", "order", "gateway"}; !slices.Equal(got, want) {
		t.Fatalf("start order %v, want %v", got, want)
	}
	gw, ok := servicelist.Find(list, "gateway")
	if !ok || gw.Kind != servicelist.KindHTTP || gw.Prefix() != "GATEWAY" || gw.Dir != "services/gateway" {
		t.Errorf("gateway = %+v, %v", gw, ok)
	}
	// The Kafka ACLs of `INFRA_AUTH=1 infra.sh up` (deploy/cmd/kafkaacl) come from these.
	if p, _ := servicelist.Find(list, "payment"); !slices.Equal(p.KafkaWrites, []string{"shopmesh.payment.events", "shopmesh.order.events.dlq"}) ||
		!slices.Equal(p.KafkaReads, []string{"shopmesh.order.events"}) || !slices.Equal(p.KafkaGroups, []string{"payment"}) {
		t.Errorf("payment's Kafka topics and groups: %+v", p)
	}
	// The NATS permissions of infra.sh (deploy/cmd/natsauth) and of compose's and the dev overlay's
	// nats.conf (servicegen) come from these: the table infra.sh had by hand.
	inv, _ := servicelist.Find(list, "inventory")
	if got := inv.NATSPermissions(); !slices.Equal(got.Publish, []string{"shopmesh.stock.>", "$JS.API.INFO",
		"$JS.API.STREAM.CREATE.SHOPMESH_STOCK", "$JS.API.STREAM.UPDATE.SHOPMESH_STOCK", "$JS.API.STREAM.INFO.SHOPMESH_STOCK"}) ||
		!slices.Equal(got.Subscribe, []string{"shopmesh.stock.>", "_INBOX.>"}) {
		t.Errorf("inventory's NATS permissions: %+v", got)
	}
	if o, _ := servicelist.Find(list, "order"); o.NATSSubjects != "shopmesh.order.status" || o.NATSStream != "SHOPMESH_ORDER_STATUS" {
		t.Errorf("order's NATS subjects and stream: %q %q", o.NATSSubjects, o.NATSStream)
	}
	if p, _ := servicelist.Find(list, "payment"); len(p.NATSPermissions().Publish) != 0 {
		t.Errorf("payment does not use NATS, yet has permissions %+v", p.NATSPermissions())
	}
	if _, ok := servicelist.Find(list, "shipping"); ok {
		t.Error("Find(shipping) found a service that does not exist")
	}
}

func TestLoadDefaultsAndOrder(t *testing.T) {
	t.Parallel()
	root := tree(t, map[string]string{
		"b":    "name: b\nkind: grpc\ndev_port: 5001\n",
		"a":    "name: a\nkind: grpc\ndev_port: 5002\ncalls: [c]\n",
		"c":    "name: c\nkind: grpc\ndev_port: 5003\ndev_instances: 3\nreplicas: 2\n",
		"edge": "name: edge\nkind: http\ndev_port: 8080\ncalls: [a, b]\n",
	})
	list, err := servicelist.Load(root)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := servicelist.Names(list), []string{"b", "c", "a", "edge"}; !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
	b, _ := servicelist.Find(list, "b")
	if b.DevInstances != 1 || b.Replicas != 1 {
		t.Errorf("defaults: %+v", b)
	}
	if got := servicelist.Names(servicelist.Callers(list, "a")); !slices.Equal(got, []string{"edge"}) {
		t.Errorf("Callers(a) = %v", got)
	}
}

func TestLoadRejects(t *testing.T) {
	t.Parallel()
	ok := "name: ok\nkind: grpc\ndev_port: 6000\n"
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  []string // every one must be in the error
	}{
		{"name differs from folder", map[string]string{"ok": ok, "x": "name: y\nkind: grpc\ndev_port: 6001\n"},
			[]string{"services/x/service.yaml", "name", `"y"`}},
		{"name not a DNS label", map[string]string{"Bad_Name": "name: Bad_Name\nkind: grpc\ndev_port: 6001\n"},
			[]string{"services/Bad_Name/service.yaml", "name", "DNS label"}},
		{"unknown kind", map[string]string{"x": "name: x\nkind: rest\ndev_port: 6001\n"},
			[]string{"services/x/service.yaml", "kind", `"rest"`}},
		{"unknown field", map[string]string{"x": "name: x\nkind: grpc\ndev_prot: 6001\n"},
			[]string{"services/x/service.yaml", "dev_prot"}},
		{"duplicate port", map[string]string{"ok": ok, "x": "name: x\nkind: grpc\ndev_port: 6000\n"},
			[]string{"services/x/service.yaml", "dev_port", "6000", "ok"}},
		{"instances overlap the next port", map[string]string{"ok": ok, "x": "name: x\nkind: grpc\ndev_port: 5999\ndev_instances: 2\n"},
			[]string{"dev_port", "6000"}},
		{"unknown call", map[string]string{"ok": ok, "x": "name: x\nkind: grpc\ndev_port: 6001\ncalls: [ok, nope]\n"},
			[]string{"services/x/service.yaml", "calls", `"nope"`}},
		{"calls the edge", map[string]string{"ok": "name: ok\nkind: http\ndev_port: 6000\n", "x": "name: x\nkind: grpc\ndev_port: 6001\ncalls: [ok]\n"},
			[]string{"services/x/service.yaml", "calls", "http"}},
		{"kafka topics without kafka", map[string]string{"x": "name: x\nkind: grpc\ndev_port: 6001\nkafka_writes: [x.events]\n"},
			[]string{"services/x/service.yaml", "kafka_writes", "needs kafka: true"}},
		{"kafka wildcard topic", map[string]string{"x": "name: x\nkind: grpc\ndev_port: 6001\nkafka: true\nkafka_writes: ['*']\n"},
			[]string{"services/x/service.yaml", "kafka_writes", `"*"`}},
		{"kafka reads without a group", map[string]string{"x": "name: x\nkind: grpc\ndev_port: 6001\nkafka: true\nkafka_reads: [y.events]\n"},
			[]string{"services/x/service.yaml", "kafka_groups"}},
		{"nats without subjects", map[string]string{"x": "name: x\nkind: grpc\ndev_port: 6001\nnats: true\nnats_stream: X\n"},
			[]string{"services/x/service.yaml", "nats_subjects"}},
		{"nats wildcard subjects", map[string]string{"x": "name: x\nkind: grpc\ndev_port: 6001\nnats: true\nnats_subjects: x.>\nnats_stream: X\n"},
			[]string{"services/x/service.yaml", "nats_subjects", `"x.>"`}},
		{"nats without stream", map[string]string{"x": "name: x\nkind: grpc\ndev_port: 6001\nnats: true\nnats_subjects: x.events\n"},
			[]string{"services/x/service.yaml", "nats_stream"}},
		{"nats subjects without nats", map[string]string{"x": "name: x\nkind: grpc\ndev_port: 6001\nnats_subjects: x.events\n"},
			[]string{"services/x/service.yaml", "nats_subjects", "needs nats: true"}},
		{"cycle", map[string]string{
			"a":  "name: a\nkind: grpc\ndev_port: 6001\ncalls: [b]\n",
			"b":  "name: b\nkind: grpc\ndev_port: 6002\ncalls: [c]\n",
			"c":  "name: c\nkind: grpc\ndev_port: 6003\ncalls: [a]\n",
			"ok": ok,
		}, []string{"cycle", "a -> b -> c -> a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := servicelist.Load(tree(t, tc.files))
			if err == nil {
				t.Fatal("Load accepted the list")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if _, err := servicelist.Load(t.TempDir()); err == nil {
		t.Error("Load accepted a root with no services")
	}
}
