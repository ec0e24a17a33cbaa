// Command newservice creates a shopmesh service in the one shape every service has (`make new-service
// NAME=shipping`): the contract proto/shopmesh/<name>/v1/<name>.proto (a unary write with an idempotency
// key, a unary read, a server stream) and services/<name>/ (service.yaml, go.mod, cmd, config, domain,
// app, events, store with its migration, rpc with its authorization policy, and their tests), from the
// templates under template/. Then it wires the service in: `make proto`, `go mod tidy` in the new module
// and `make gen` (servicegen: go.work, Dockerfile, compose, k8s, Prometheus, postgres-init from the
// service list), and prints what to do next.
//
//	newservice -name shipping [-root dir] [-wire=false]
//
// An invalid name or one already taken is refused before anything is written.
package main

import (
	"bytes"
	"embed"
	"errors"
	"flag"
	"fmt"
	"go/format"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/shopmesh/shopmesh/deploy/servicelist"
)

//go:embed all:template
var templates embed.FS

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "new-service:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("newservice", flag.ContinueOnError)
	fl.SetOutput(stdout)
	root := fl.String("root", "", "repository root (default: the directory holding go.work, from the working directory up)")
	name := fl.String("name", "", "the new service's name: lowercase letters and digits, starting with a letter, 2-21 characters")
	wire := fl.Bool("wire", true, "after writing the files, run make proto, go mod tidy (in the new module) and make gen")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (the name goes in -name)", fl.Args())
	}
	if *root == "" {
		r, err := findRoot()
		if err != nil {
			return err
		}
		*root = r
	}
	files, d, err := plan(*root, *name)
	if err != nil {
		return err
	}
	if err := write(*root, files); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %d files: proto/shopmesh/%s/v1/%s.proto and services/%s/ (dev port %d)\n",
		len(files), d.Name, d.Name, d.Name, d.DevPort)
	if *wire {
		if err := wireIn(*root, d.Name, stdout); err != nil {
			return fmt.Errorf("%w\nthe files are written; fix the cause and run the remaining steps by hand (make proto; cd services/%s && go mod tidy; make gen)", err, d.Name)
		}
	}
	fmt.Fprintf(stdout, `
services/%[1]s is ready. Next:
  cd services/%[1]s && go test ./...        its tests (store on SQLite, and PostgreSQL when DATABASE_URL is set)
  make run                                  the suite with %[1]s on 127.0.0.1:%[2]d
  make lint test                            everything, including the compose and k8s checks
Then make it yours: the contract in proto/shopmesh/%[1]s/v1/%[1]s.proto (then make proto), the model in
internal/domain, use cases and their ports in internal/app, events in internal/events, tables in
migrations/ and internal/store, handlers in internal/rpc (who may call them: internal/rpc/policy.go),
settings in internal/config; dependencies (calls, nats, replicas) in services/%[1]s/service.yaml, then
make gen. Commit the new files with the regenerated ones (go.work, deploy/).
`, d.Name, d.DevPort)
	return nil
}

// data is what the templates see.
type data struct {
	Name      string // shipping
	Title     string // Shipping
	Prefix    string // SHIPPING
	Module    string // github.com/shopmesh/shopmesh/services/shipping
	PB        string // shippingv1: the generated contract's package
	PBImport  string // github.com/shopmesh/shopmesh/proto/gen/go/shipping/v1
	DevPort   int
	GoVersion string
	Requires  []string // "path version" of every direct dependency
	Replaces  []string // "old => new version" from go.work
}

var validName = regexp.MustCompile(`^[a-z][a-z0-9]{1,20}$`)

// reserved are names a service cannot take, and why.
var reserved = func() map[string]string {
	m := map[string]string{"edge": "authz.Edge: policies use it for the customer-facing entry point"}
	for _, n := range []string{"platform", "proto", "gateway", "internal", "shopmesh", "events", "validate",
		"deploy", "loadtest", "service", "services", "cmd", "pkg", "bin", "docs", "gen", "test", "testdata",
		"vendor", "main", "all", "infra"} {
		m[n] = "a folder or package of the repository"
	}
	for _, n := range []string{"break", "case", "chan", "const", "continue", "default", "defer", "else",
		"fallthrough", "for", "func", "go", "goto", "if", "import", "interface", "map", "package", "range",
		"return", "select", "struct", "switch", "type", "var", "string", "error", "any", "nil", "true", "false"} {
		m[n] = "a Go keyword or predeclared name"
	}
	return m
}()

// checkName refuses a name that is not a usable service name or is taken.
func checkName(root, name string) error {
	switch {
	case name == "":
		return errors.New("no name: make new-service NAME=<name> (lowercase letters and digits, e.g. shipping)")
	case !validName.MatchString(name):
		return fmt.Errorf("name %q: must be a lowercase DNS label usable as a Go and proto package: "+
			"a letter, then 1-20 lowercase letters or digits (no '-', '_', capitals or dots)", name)
	case reserved[name] != "":
		return fmt.Errorf("name %q is reserved (%s); choose another", name, reserved[name])
	}
	for _, p := range []string{"services/" + name, "proto/shopmesh/" + name, "proto/gen/go/" + name} {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			return fmt.Errorf("name %q is taken: %s exists", name, p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// plan checks the name and renders every file in memory: nothing is written unless all of it works.
func plan(root, name string) (map[string][]byte, data, error) {
	if err := checkName(root, name); err != nil {
		return nil, data{}, err
	}
	list, err := servicelist.Load(root)
	if err != nil {
		return nil, data{}, fmt.Errorf("the service list: %w", err)
	}
	d := data{
		Name: name, Title: strings.ToUpper(name[:1]) + name[1:], Prefix: strings.ToUpper(name),
		Module: "github.com/shopmesh/shopmesh/services/" + name, PB: name + "v1",
		PBImport: "github.com/shopmesh/shopmesh/proto/gen/go/" + name + "/v1",
		DevPort:  nextPort(list),
	}
	if d.GoVersion, d.Replaces, err = workspace(root); err != nil {
		return nil, data{}, err
	}
	if d.Requires, err = requires(root); err != nil {
		return nil, data{}, err
	}
	files := map[string][]byte{}
	err = fs.WalkDir(templates, "template", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		src, err := templates.ReadFile(p)
		if err != nil {
			return err
		}
		t, err := template.New(p).Option("missingkey=error").Parse(string(src))
		if err != nil {
			return err
		}
		var out bytes.Buffer
		if err := t.Execute(&out, d); err != nil {
			return err
		}
		rel := strings.ReplaceAll(strings.TrimSuffix(strings.TrimPrefix(p, "template/"), ".tmpl"), "_name_", name)
		b := out.Bytes()
		if strings.HasSuffix(rel, ".go") {
			// Names of different lengths shift the alignment gofmt wants.
			if b, err = format.Source(b); err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
		}
		files[rel] = b
		return nil
	})
	if err != nil {
		return nil, data{}, fmt.Errorf("templates: %w", err)
	}
	// The module starts from the platform's checksums; go mod tidy keeps what it needs.
	sum, err := os.ReadFile(filepath.Join(root, "pkg/platform/go.sum"))
	if err != nil {
		return nil, data{}, err
	}
	files["services/"+name+"/go.sum"] = sum
	return files, d, nil
}

// nextPort is the first dev port of a new gRPC service: the next ten above every port the list uses
// for gRPC (order 50051, inventory 50061-62, payment 50071-72 → 50081), and past any port taken.
func nextPort(list []servicelist.Service) int {
	top := 50041
	for _, s := range list {
		if s.Kind == servicelist.KindGRPC {
			top = max(top, s.DevPort+s.DevInstances-1)
		}
	}
	port := (top/10+1)*10 + 1
	for slices.ContainsFunc(list, func(s servicelist.Service) bool {
		return port >= s.DevPort && port < s.DevPort+max(1, s.DevInstances)
	}) {
		port += 10
	}
	return port
}

// workspace reads go.work's go version and its replace directives (the new module repeats them so it
// builds alone too, as go mod tidy and the Dockerfile build it).
func workspace(root string) (string, []string, error) {
	b, err := os.ReadFile(filepath.Join(root, "go.work"))
	if err != nil {
		return "", nil, err
	}
	var version string
	var replaces []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "go "); ok {
			version = strings.TrimSpace(v)
		}
		if r, ok := strings.CutPrefix(line, "replace "); ok && !strings.Contains(r, "=> .") {
			replaces = append(replaces, strings.TrimSpace(r))
		}
	}
	if version == "" {
		return "", nil, errors.New("go.work: no go version line")
	}
	return version, replaces, nil
}

// requires lists the new module's direct dependencies at the versions pkg/platform uses, so the
// workspace keeps one version of each.
func requires(root string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(root, "pkg/platform/go.mod"))
	if err != nil {
		return nil, err
	}
	versions := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require ")); len(f) >= 2 && strings.HasPrefix(f[1], "v") {
			versions[f[0]] = f[1]
		}
	}
	out := []string{"github.com/shopmesh/shopmesh/pkg/platform v0.0.0", "github.com/shopmesh/shopmesh/proto v0.0.0"}
	for _, p := range []string{"github.com/google/uuid", "github.com/segmentio/kafka-go",
		"github.com/twmb/franz-go/pkg/kfake", "google.golang.org/grpc", "google.golang.org/protobuf"} {
		v, ok := versions[p]
		if !ok {
			return nil, fmt.Errorf("pkg/platform/go.mod does not require %s: the template needs its version", p)
		}
		out = append(out, p+" "+v)
	}
	slices.Sort(out)
	return out, nil
}

// write creates every file, refusing (before writing any) if one exists.
func write(root string, files map[string][]byte) error {
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range files {
			if !yield(n) {
				return
			}
		}
	})
	for _, n := range names {
		if _, err := os.Lstat(filepath.Join(root, n)); err == nil {
			return fmt.Errorf("%s exists; nothing written", n)
		}
	}
	for _, n := range names {
		p := filepath.Join(root, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, files[n], 0o644); err != nil {
			return err
		}
	}
	return nil
}

// wireIn generates the contract's code, completes the module's requirements and regenerates every
// deploy file from the service list, which now names the service.
func wireIn(root, name string, stdout io.Writer) error {
	steps := []struct {
		dir  string
		argv []string
		env  []string
	}{
		{".", []string{"make", "--no-print-directory", "proto"}, nil},
		{path.Join("services", name), []string{"go", "mod", "tidy"}, []string{"GOFLAGS=-mod=mod"}},
		{".", []string{"make", "--no-print-directory", "gen"}, nil},
	}
	for _, s := range steps {
		fmt.Fprintf(stdout, "== %s (in %s)\n", strings.Join(s.argv, " "), s.dir)
		cmd := exec.Command(s.argv[0], s.argv[1:]...) //nolint:noctx // a CLI step run to completion, as make would; Ctrl-C reaches it
		cmd.Dir = filepath.Join(root, s.dir)
		cmd.Env = append(os.Environ(), s.env...)
		cmd.Stdout, cmd.Stderr = stdout, stdout
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w", strings.Join(s.argv, " "), err)
		}
	}
	return nil
}

// findRoot walks up from the working directory to the directory holding go.work.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.work in %s or above: run from the repository or pass -root", dir)
		}
	}
}
