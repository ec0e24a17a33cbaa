package main

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
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
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// copyRepo copies the repository's files (tracked and new, not ignored; what a clone plus the work in
// progress holds) into a temporary root, with bin/ (the pinned tools) linked, and returns it.
func copyRepo(t *testing.T) string {
	t.Helper()
	src, dst := repoRoot(t), t.TempDir()
	out, err := exec.Command("git", "-C", src, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, rel := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		b, err := os.ReadFile(filepath.Join(src, rel))
		if os.IsNotExist(err) {
			continue // deleted in the work tree
		}
		if err != nil {
			t.Fatal(err)
		}
		info, err := os.Stat(filepath.Join(src, rel))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, rel), b, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	abs, err := filepath.Abs(filepath.Join(src, "bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(abs, filepath.Join(dst, "bin")); err != nil {
		t.Fatal(err)
	}
	return dst
}

// copyMinimal copies what the generator reads before it writes: go.work, the service list, the
// platform's go.mod and go.sum, and the contracts' folder names.
func copyMinimal(t *testing.T) string {
	t.Helper()
	src, dst := repoRoot(t), t.TempDir()
	paths := []string{"go.work", "pkg/platform/go.mod", "pkg/platform/go.sum"}
	svcs, err := filepath.Glob(filepath.Join(src, "services", "*", "service.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range svcs {
		rel, _ := filepath.Rel(src, s)
		paths = append(paths, rel)
	}
	for _, p := range paths {
		b, err := os.ReadFile(filepath.Join(src, p))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"proto/shopmesh/order/v1", "proto/shopmesh/events/v1", "proto/gen/go/order/v1"} {
		if err := os.MkdirAll(filepath.Join(dst, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// tree lists every path under root.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		out = append(out, p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRefusesBadNames: an invalid, reserved or taken name is refused with a message naming the
// problem, and nothing is written.
func TestRefusesBadNames(t *testing.T) {
	root := copyMinimal(t)
	if err := os.MkdirAll(filepath.Join(root, "proto/shopmesh/billing"), 0o755); err != nil {
		t.Fatal(err)
	}
	before := tree(t, root)
	for name, want := range map[string]string{
		"":                       "no name",
		"Shipping":               "lowercase",
		"ship-ping":              "no '-'",
		"ship_ping":              "lowercase",
		"s":                      "1-20",
		"1shipping":              "a letter",
		"shippingshippingship1x": "1-20",
		"gateway":                "reserved",
		"platform":               "reserved",
		"internal":               "reserved",
		"proto":                  "reserved",
		"edge":                   "reserved",
		"func":                   "reserved",
		"payment":                "services/payment exists",
		"order":                  "services/order exists",
		"billing":                "proto/shopmesh/billing exists",
	} {
		var out bytes.Buffer
		err := run([]string{"-root", root, "-name", name, "-wire=false"}, &out)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("name %q: err = %v, want one saying %q", name, err, want)
		}
	}
	if after := tree(t, root); !slices.Equal(before, after) {
		t.Errorf("refusals wrote files:\nbefore %v\nafter  %v", before, after)
	}
}

// TestWritesTheShape: the files of the shape are written with every placeholder filled, the service
// takes the next free dev port, and a second run with the same name is refused without writing.
func TestWritesTheShape(t *testing.T) {
	root := copyMinimal(t)
	var out bytes.Buffer
	if err := run([]string{"-root", root, "-name", "shipping", "-wire=false"}, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, f := range []string{
		"proto/shopmesh/shipping/v1/shipping.proto",
		"services/shipping/service.yaml", "services/shipping/go.mod", "services/shipping/go.sum",
		"services/shipping/cmd/shipping/main.go", "services/shipping/cmd/shipping/wire.go",
		"services/shipping/cmd/shipping/main_test.go",
		"services/shipping/internal/config/config.go", "services/shipping/internal/domain/item.go",
		"services/shipping/internal/app/app.go", "services/shipping/internal/app/ports.go",
		"services/shipping/internal/events/events.go", "services/shipping/internal/store/store.go",
		"services/shipping/internal/rpc/server.go", "services/shipping/internal/rpc/errors.go",
		"services/shipping/internal/rpc/policy.go", "services/shipping/internal/rpc/policy_test.go",
		"services/shipping/migrations/migrations.go", "services/shipping/migrations/0001_items.up.sql",
		"services/shipping/migrations/0001_items.down.sql",
	} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		for _, bad := range []string{"{{", "<no value>", "_name_"} {
			if bytes.Contains(b, []byte(bad)) {
				t.Errorf("%s contains %q", f, bad)
			}
		}
	}
	list, err := servicelist.Load(root)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := servicelist.Find(list, "shipping")
	if !ok || s.DevPort != 50081 || s.Kind != servicelist.KindGRPC || !s.Database || !s.Kafka || len(s.Calls) != 0 {
		t.Errorf("service list entry = %+v (found %v); want grpc on 50081 with database and kafka", s, ok)
	}
	mod, err := os.ReadFile(filepath.Join(root, "services/shipping/go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"module github.com/shopmesh/shopmesh/services/shipping\n",
		"github.com/shopmesh/shopmesh/pkg/platform => ../../pkg/platform", "google.golang.org/grpc v"} {
		if !bytes.Contains(mod, []byte(want)) {
			t.Errorf("go.mod lacks %q:\n%s", want, mod)
		}
	}

	before := tree(t, root)
	err = run([]string{"-root", root, "-name", "shipping", "-wire=false"}, &out)
	if err == nil || !strings.Contains(err.Error(), "services/shipping exists") {
		t.Errorf("second run: %v, want a refusal naming services/shipping", err)
	}
	if after := tree(t, root); !slices.Equal(before, after) {
		t.Error("the refused second run wrote files")
	}
}

// TestGenerateEndToEnd generates a service into a throwaway copy of the repository, wired in (make
// proto, go mod tidy, make gen), then builds, vets and tests the new module there, checks that the
// deploy files name it and that `make gen` has nothing left to change. About a minute on 2 cores.
func TestGenerateEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("generates, builds and tests a whole service (-short)")
	}
	root := copyRepo(t)
	if _, err := os.Stat(filepath.Join(root, "bin", "buf")); err != nil {
		t.Skipf("needs the pinned tools (make tools): %v", err)
	}
	var out bytes.Buffer
	if err := run([]string{"-root", root, "-name", "shipping"}, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	mod := filepath.Join(root, "services", "shipping")
	steps := [][]string{{"go", "build", "./..."}, {"go", "vet", "./..."}, {"go", "test", "-count=1", "./..."}}
	if _, err := os.Stat(filepath.Join(root, "bin", "staticcheck")); err == nil {
		steps = append(steps, []string{filepath.Join(root, "bin", "staticcheck"), "./..."})
	}
	for _, argv := range steps {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Dir = mod
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s in services/shipping: %v\n%s", strings.Join(argv, " "), err, b)
		}
	}
	if b, err := exec.Command("gofmt", "-l", mod).CombinedOutput(); err != nil || len(b) > 0 {
		t.Errorf("gofmt -l: %v\n%s", err, b)
	}
	for file, want := range map[string]string{
		"go.work":                                   "./services/shipping",
		"deploy/compose/compose.yaml":               "shipping",
		"deploy/k8s/base/shipping.yaml":             "shipping",
		"deploy/compose/config/prometheus.yml":      "shipping",
		"deploy/compose/init/postgres-init.sh":      "shipping",
		"deploy/docker/Dockerfile":                  "services/shipping/go.mod",
		"proto/gen/go/shipping/v1/shipping.pb.go":   "package shippingv1",
		"services/shipping/internal/rpc/policy.go":  "authz.Edge",
		"proto/shopmesh/shipping/v1/shipping.proto": "idempotency_level = NO_SIDE_EFFECTS",
	} {
		b, err := os.ReadFile(filepath.Join(root, file))
		if err != nil || !bytes.Contains(b, []byte(want)) {
			t.Errorf("%s does not contain %q (%v)", file, want, err)
		}
	}
	check := exec.Command("go", "run", "./cmd/servicegen", "-root", root, "-check")
	check.Dir = filepath.Join(root, "deploy")
	if b, err := check.CombinedOutput(); err != nil {
		t.Errorf("make gen-check after new-service: %v\n%s", err, b)
	}
}

func TestNextPort(t *testing.T) {
	grpc := func(port, n int) servicelist.Service {
		return servicelist.Service{Kind: servicelist.KindGRPC, DevPort: port, DevInstances: n}
	}
	for _, c := range []struct {
		list []servicelist.Service
		want int
	}{
		{nil, 50051},
		{[]servicelist.Service{grpc(50051, 1), grpc(50061, 2), grpc(50071, 2)}, 50081},
		{[]servicelist.Service{grpc(50051, 1), grpc(50069, 3)}, 50081},
		// An HTTP service on the candidate port pushes it on.
		{[]servicelist.Service{grpc(50051, 1), {Kind: servicelist.KindHTTP, DevPort: 50061, DevInstances: 1}}, 50071},
	} {
		if got := nextPort(c.list); got != c.want {
			t.Errorf("nextPort(%+v) = %d, want %d", c.list, got, c.want)
		}
	}
}
