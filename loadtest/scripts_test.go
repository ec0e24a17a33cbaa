package loadtest_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/shopmesh/shopmesh/loadtest"
	"github.com/shopmesh/shopmesh/pkg/platform/infratest"

	_ "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	_ "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	_ "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
)

// k6 scenario keys are written as `<name>: {` followed by `executor:`.
var k6Scenario = regexp.MustCompile(`(?m)^\s*([A-Za-z0-9_]+):\s*\{\s*\n\s*executor:\s*'([a-z-]+)'`)

// TestK6Scripts checks every k6 script parses as an ES module (node --check; k6 itself is AGPL and not
// installed) and that each k6 scenario exists in the Go harness, uses a constant arrival rate and has
// thresholds, so the two suites do not drift apart.
func TestK6Scripts(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("k6", "*.js"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no k6 scripts: %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		if infratest.Required() {
			t.Fatal("node is needed to parse the k6 scripts (REQUIRE_INFRA=1)")
		}
		t.Log("node not found: only the scenario names are checked")
	}
	var seen []string
	for _, f := range files {
		if node != "" {
			// k6/package.json says "type": "module", so node parses the scripts as ES modules.
			if out, err := exec.Command(node, "--check", f).CombinedOutput(); err != nil {
				t.Errorf("node --check %s: %v\n%s", f, err, out)
			}
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(f) == "lib.js" {
			continue
		}
		ms := k6Scenario.FindAllStringSubmatch(string(src), -1)
		if len(ms) == 0 {
			t.Errorf("%s: no scenarios found", f)
		}
		for _, m := range ms {
			seen = append(seen, m[1])
			if !slices.Contains(loadtest.ScenarioNames(), m[1]) {
				t.Errorf("%s: k6 scenario %q is not in the Go harness (loadtest.Scenarios)", f, m[1])
			}
			if m[2] != "constant-arrival-rate" {
				t.Errorf("%s: scenario %s uses executor %s, want constant-arrival-rate", f, m[1], m[2])
			}
		}
		if !strings.Contains(string(src), "thresholds:") || !strings.Contains(string(src), "p(99)") ||
			!strings.Contains(string(src), "http_req_failed") {
			t.Errorf("%s: want thresholds on p(99) and http_req_failed", f)
		}
	}
	for _, s := range loadtest.Scenarios() {
		if s.Kind == loadtest.HTTP && !slices.Contains(seen, s.Name) {
			t.Errorf("HTTP scenario %q has no k6 script", s.Name)
		}
	}
}

// TestGHZConfigs checks every ghz config loads with ghz's own types, calls a method that exists, has
// the mTLS flags and matches a harness scenario, and every gRPC scenario has its config.
func TestGHZConfigs(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("ghz", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ghz configs: %v", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		names = append(names, name)
		c, err := loadtest.GHZConfig(root, name)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if c.Name != name {
			t.Errorf("%s: name %q, want the file name", f, c.Name)
		}
		if !slices.Contains(loadtest.ScenarioNames(), name) {
			t.Errorf("%s: no harness scenario of that name", f)
		}
		dot := strings.LastIndex(c.Call, ".")
		if dot < 0 {
			t.Errorf("%s: call %q: want package.Service.Method", f, c.Call)
			continue
		}
		method := c.Call[dot+1:]
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(c.Call[:dot]))
		if err != nil {
			t.Errorf("%s: service of %s: %v", f, c.Call, err)
			continue
		}
		if sd, ok := d.(protoreflect.ServiceDescriptor); !ok || sd.Methods().ByName(protoreflect.Name(method)) == nil {
			t.Errorf("%s: method %s does not exist", f, c.Call)
		}
		if _, err := os.Stat(filepath.Join(root, c.Proto)); err != nil {
			t.Errorf("%s: proto %s: %v", f, c.Proto, err)
		}
		if c.RootCert == "" || c.Cert == "" || c.Key == "" {
			t.Errorf("%s: want cacert, cert and key (mTLS)", f)
		}
		if c.RPS == 0 || c.Z == 0 {
			t.Errorf("%s: want a bounded open-loop run (rps and duration)", f)
		}
	}
	for _, s := range loadtest.Scenarios() {
		if s.Kind == loadtest.GRPC && !slices.Contains(names, s.Name) {
			t.Errorf("gRPC scenario %q has no ghz/%s.json", s.Name, s.Name)
		}
	}
}
