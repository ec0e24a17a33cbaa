package main

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/shopmesh/shopmesh/deploy/devsecrets"
	"github.com/shopmesh/shopmesh/deploy/servicelist"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// copyTree copies what servicegen reads and writes (and what compose and kustomize need to load the
// result) from the repository into a temporary root.
func copyTree(t *testing.T) string {
	t.Helper()
	src, dst := repoRoot(t), t.TempDir()
	paths := []string{"go.work", "deploy/docker", "deploy/compose", "deploy/k8s"}
	svcs, err := filepath.Glob(filepath.Join(src, "services", "*", "service.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range svcs {
		rel, _ := filepath.Rel(src, s)
		paths = append(paths, rel)
	}
	for _, p := range paths {
		err := filepath.WalkDir(filepath.Join(src, p), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(src, path)
			if r := filepath.ToSlash(rel); strings.HasPrefix(r, "deploy/k8s/out/") || strings.HasPrefix(r, "deploy/k8s/overlays/dev/secrets/") {
				return nil // outputs, not sources (make k8s-render, make secrets)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(rel)), 0o755); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func gen(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(args, &out)
	return out.String(), err
}

func read(t *testing.T, root, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func write(t *testing.T, root, rel, body string) {
	t.Helper()
	p := filepath.Join(root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRepositoryUpToDate is the golden check: the committed files are what the list generates.
func TestRepositoryUpToDate(t *testing.T) {
	t.Parallel()
	out, err := gen(t, "-check", "-root", repoRoot(t))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

const shipping = `name: shipping
kind: grpc
dev_port: 50081
database: true
calls: [inventory]
kafka: true
kafka_writes: [shopmesh.shipping.events]
kafka_reads: [shopmesh.order.events]
kafka_groups: [shipping]
`

// TestNewService adds a service to a copy of the repository and checks that every generated file
// names it, that compose and kustomize load the result with the new edges, and that a second run
// changes nothing.
func TestNewService(t *testing.T) {
	t.Parallel()
	root := copyTree(t)
	write(t, root, "services/shipping/service.yaml", shipping)
	out, err := gen(t, "-root", root)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []struct{ file, text string }{
		{"go.work", "\t./services/shipping\n"},
		{"deploy/docker/Dockerfile", "COPY services/shipping/go.mod services/shipping/go.sum services/shipping/\n"},
		{"deploy/docker/Dockerfile", "SERVICE=inventory|payment|order|shipping|gateway is required"},
		{"deploy/compose/compose.yaml", "x-shipping-env: &shipping-env"},
		{"deploy/compose/compose.yaml", "  shipping-migrate:\n"},
		{"deploy/compose/init/postgres-init.sh", `shipping) pw="$SHIPPING_DB_PASSWORD" ;;`},
		{"deploy/compose/config/prometheus.yml", "- names: [inventory, payment, order, shipping, gateway]"},
		{"deploy/compose/init/kafka-setup.sh", "user shipping \"$SHIPPING_KAFKA_PASSWORD\"\nallow shipping topic shopmesh.shipping.events Write Create\nallow shipping topic shopmesh.order.events Read\nallow shipping group shipping Read\n"},
		{"deploy/k8s/overlays/dev/kafka-setup.sh", "user shipping \"$SHIPPING_KAFKA_PASSWORD\"\n"},
		{"deploy/compose/init/nacos-setup.sh", "user shipping \"$SHIPPING_NACOS_PASSWORD\"\n"},
		{"deploy/k8s/overlays/dev/nacos-setup.sh", "user shipping \"$SHIPPING_NACOS_PASSWORD\"\n"},
		{"deploy/k8s/overlays/dev/kustomization.yaml", "name: shipping-kafka"},
		{"deploy/k8s/overlays/dev/kustomization.yaml", "      - shipping=secrets/shipping-kafka-password\n"},
		{"deploy/k8s/overlays/dev/kustomization.yaml", "      - shipping=secrets/shipping-nacos-password\n"},
		{"deploy/k8s/overlays/dev/infra.yaml", "secretKeyRef: {name: kafka-users, key: shipping}"},
		{"deploy/k8s/overlays/dev/infra.yaml", "secretKeyRef: {name: nacos-users, key: shipping}"},
		{"deploy/k8s/base/kustomization.yaml", "  - shipping.yaml\n"},
		{"deploy/k8s/base/shipping.yaml", "name: shipping-headless"},
		{"deploy/k8s/dev-secrets.sh", "for svc in inventory payment order shipping gateway; do"},
		{"deploy/k8s/overlays/dev/postgres-init.sh", `shipping) pw="$SHIPPING_DB_PASSWORD" ;;`},
		{"deploy/k8s/overlays/dev/kustomization.yaml", "name: shipping-db"},
		{"deploy/k8s/overlays/dev/infra.yaml", "name: SHIPPING_DB_PASSWORD"},
		{"deploy/k8s/overlays/prod/kustomization.yaml", "name: shopmesh/shipping\n"},
		{"deploy/k8s/overlays/prod/services.yaml", "name: shipping-config"},
	} {
		if !strings.Contains(read(t, root, want.file), want.text) {
			t.Errorf("%s does not contain %q", want.file, want.text)
		}
	}
	// Hand-written parts stay.
	if got := read(t, root, "deploy/compose/compose.yaml"); !strings.Contains(got, "x-migrate: &migrate") || !strings.Contains(got, "  grafana:\n") {
		t.Error("compose.yaml lost its hand-written parts")
	}

	// Idempotent: a second run writes nothing, and -check agrees.
	if out, err := gen(t, "-root", root); err != nil || out != "" {
		t.Errorf("second run: %v, wrote\n%s", err, out)
	}
	if out, err := gen(t, "-check", "-root", root); err != nil {
		t.Errorf("-check after gen: %v\n%s", err, out)
	}

	// make secrets in the copy: the compose env files and the dev overlay's files, with shipping's.
	list, err := servicelist.Load(root)
	if err != nil {
		t.Fatal(err)
	}
	secrets := filepath.Join(root, ".run", "secrets")
	if _, err := devsecrets.Ensure(devsecrets.Options{Dir: secrets, K8sDir: filepath.Join(root, "deploy", "k8s", "overlays", "dev", "secrets"), Services: list}); err != nil {
		t.Fatal(err)
	}
	vals, err := devsecrets.ReadValues(secrets, list)
	if err != nil {
		t.Fatal(err)
	}

	p := loadCompose(t, filepath.Join(root, "deploy", "compose"))
	s, ok := p.Services["shipping"]
	if !ok {
		t.Fatal("compose: no service shipping")
	}
	for dep, cond := range map[string]string{
		"shipping-migrate": types.ServiceConditionCompletedSuccessfully,
		"inventory":        types.ServiceConditionHealthy,
		"kafka-setup":      types.ServiceConditionCompletedSuccessfully,
		"nacos-setup":      types.ServiceConditionCompletedSuccessfully,
	} {
		if s.DependsOn[dep].Condition != cond {
			t.Errorf("compose: shipping depends_on %s = %+v, want %s", dep, s.DependsOn[dep], cond)
		}
	}
	if _, ok := s.DependsOn["nats"]; ok {
		t.Error("compose: shipping waits for NATS, which it does not use")
	}
	for k, want := range map[string]string{"SHIPPING_KAFKA_USERNAME": "shipping", "SHIPPING_KAFKA_PASSWORD": vals["shipping-kafka-password"],
		"SHIPPING_REGISTRY_NACOS_USERNAME": "shipping", "SHIPPING_REGISTRY_NACOS_PASSWORD": vals["shipping-nacos-password"]} {
		if v := s.Environment[k]; v == nil || *v != want {
			t.Errorf("compose: %s is not its own user / generated password: %v", k, v)
		}
	}
	if v := p.Services["kafka-setup"].Environment["SHIPPING_KAFKA_PASSWORD"]; v == nil || *v != vals["shipping-kafka-password"] {
		t.Error("compose: kafka-setup does not get the generated SHIPPING_KAFKA_PASSWORD")
	}
	if v := s.Environment["SHIPPING_DSN"]; v == nil || *v != devsecrets.DSN("shipping", vals["shipping-db-password"]) {
		t.Errorf("compose: SHIPPING_DSN is not the generated one: %v", v)
	}
	if pg := p.Services["postgres"].Environment["SHIPPING_DB_PASSWORD"]; pg == nil || *pg != vals["shipping-db-password"] {
		t.Errorf("compose: postgres does not get the generated SHIPPING_DB_PASSWORD")
	}

	for _, overlay := range []string{"dev", "prod"} {
		objs := render(t, filepath.Join(root, "deploy", "k8s", "overlays", overlay))
		for _, name := range []string{"Deployment/shipping", "Service/shipping-headless", "NetworkPolicy/shipping", "HorizontalPodAutoscaler/shipping"} {
			if _, ok := objs[name]; !ok {
				t.Errorf("k8s %s: no %s", overlay, name)
			}
		}
		// The edge shipping -> inventory: admitted by inventory's ingress and shipping's egress.
		if !strings.Contains(objs["NetworkPolicy/inventory"], `"app.kubernetes.io/name":"shipping"`) {
			t.Errorf("k8s %s: NetworkPolicy inventory does not admit shipping", overlay)
		}
		if !strings.Contains(objs["NetworkPolicy/shipping"], `"app.kubernetes.io/name":"inventory"`) {
			t.Errorf("k8s %s: NetworkPolicy shipping may not call inventory", overlay)
		}
		if strings.Contains(objs["NetworkPolicy/shipping"], `"port":4222`) {
			t.Errorf("k8s %s: shipping may reach NATS, which it does not use", overlay)
		}
	}
}

// TestRemovedService: a base file servicegen wrote for a service no longer in the list is removed.
func TestRemovedService(t *testing.T) {
	t.Parallel()
	root := copyTree(t)
	write(t, root, "services/shipping/service.yaml", shipping)
	if out, err := gen(t, "-root", root); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if err := os.RemoveAll(filepath.Join(root, "services", "shipping")); err != nil {
		t.Fatal(err)
	}
	out, err := gen(t, "-check", "-root", root)
	if !errors.Is(err, errDrift) || !strings.Contains(out, "deploy/k8s/base/shipping.yaml") {
		t.Errorf("-check: %v\n%s", err, out)
	}
	if out, err := gen(t, "-root", root); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(root, "deploy", "k8s", "base", "shipping.yaml")); !os.IsNotExist(err) {
		t.Errorf("base/shipping.yaml still there: %v", err)
	}
	if strings.Contains(read(t, root, "deploy/compose/compose.yaml"), "shipping") {
		t.Error("compose.yaml still names shipping")
	}
	// A hand-written file in base/ is never removed.
	if _, err := os.Stat(filepath.Join(root, "deploy", "k8s", "base", "default-deny.yaml")); err != nil {
		t.Error(err)
	}
}

// TestCheckReportsDrift: a hand edit inside a region fails -check with a diff naming the line, writes
// nothing, and gen puts the region back while keeping edits outside it.
func TestCheckReportsDrift(t *testing.T) {
	t.Parallel()
	root := copyTree(t)
	const rel = "deploy/compose/config/prometheus.yml"
	orig := read(t, root, rel)
	edited := strings.Replace(orig, "- names: [inventory, payment, order, gateway]", "- names: [order]", 1)
	edited = strings.Replace(edited, "scrape_interval: 10s", "scrape_interval: 15s", 1)
	if edited == orig {
		t.Fatal("test setup: prometheus.yml has changed shape")
	}
	write(t, root, rel, edited)
	out, err := gen(t, "-check", "-root", root)
	if !errors.Is(err, errDrift) {
		t.Fatalf("-check: %v, want errDrift", err)
	}
	for _, want := range []string{"--- " + rel, "-      - names: [order]", "+      - names: [inventory, payment, order, gateway]"} {
		if !strings.Contains(out, want) {
			t.Errorf("diff does not contain %q:\n%s", want, out)
		}
	}
	if read(t, root, rel) != edited {
		t.Error("-check wrote the file")
	}
	if _, err := gen(t, "-root", root); err != nil {
		t.Fatal(err)
	}
	if got := read(t, root, rel); got != strings.Replace(orig, "scrape_interval: 10s", "scrape_interval: 15s", 1) {
		t.Errorf("after gen:\n%s", got)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	t.Run("region markers missing", func(t *testing.T) {
		t.Parallel()
		root := copyTree(t)
		const rel = "deploy/compose/config/prometheus.yml"
		write(t, root, rel, strings.ReplaceAll(read(t, root, rel), "# END generated", "# end"))
		if _, err := gen(t, "-root", root); err == nil || !strings.Contains(err.Error(), rel) {
			t.Errorf("err = %v, want one naming %s", err, rel)
		}
	})
	t.Run("invalid list", func(t *testing.T) {
		t.Parallel()
		root := copyTree(t)
		write(t, root, "services/shipping/service.yaml", strings.Replace(shipping, "[inventory]", "[billing]", 1))
		before := read(t, root, "deploy/compose/compose.yaml")
		if _, err := gen(t, "-root", root); err == nil || !strings.Contains(err.Error(), `"billing"`) {
			t.Errorf("err = %v, want an unknown call", err)
		}
		if read(t, root, "deploy/compose/compose.yaml") != before {
			t.Error("an invalid list wrote files")
		}
	})
}

func loadCompose(t *testing.T, dir string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(dir, "compose.yaml")},
		cli.WithWorkingDirectory(dir), cli.WithEnvFiles(filepath.Join(dir, ".env")), cli.WithDotEnv)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose-go: %v", err)
	}
	return p
}

// render runs kustomize on dir and returns each object as JSON by "Kind/name".
func render(t *testing.T, dir string) map[string]string {
	t.Helper()
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out := map[string]string{}
	for _, r := range res.Resources() {
		b, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		out[r.GetKind()+"/"+r.GetName()] = string(b)
	}
	return out
}
