package manifests_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/shopmesh/shopmesh/deploy/devsecrets"
	"github.com/shopmesh/shopmesh/deploy/servicelist"
)

var (
	// envAssign is NAME=value or NAME: value (.env, compose environment, shell, ConfigMap data).
	envAssign = regexp.MustCompile(`^\s*(?:-\s+)?(?:export\s+)?([A-Z][A-Z0-9_]*)\s*[=:]\s*(.*)$`)
	// secretName is a variable holding a secret: a password, a secret or token, a key list. (A DSN's
	// password is found by urlPassword, or by secretKey in the key=value form.)
	secretName = regexp.MustCompile(`(PASSWORD|PASSWD|SECRET|TOKEN|_KEYS)$`)
	// secretKey is a configuration key holding a secret, anywhere on a line (YAML, inline maps of
	// nats.conf, key=value lists).
	secretKey = regexp.MustCompile(`(?:^|[^A-Za-z0-9_])"?(password|passwd|secret|token|api_key|client_secret)"?\s*[=:]\s*([^,}\s]*)`)
	// k8sEnvName is the "- name: X" line of a container env entry, whose "value:" follows.
	k8sEnvName = regexp.MustCompile(`^\s*-\s+name:\s+([A-Z][A-Z0-9_]*)\s*$`)
	k8sValue   = regexp.MustCompile(`^\s*value:\s*(.*)$`)
	// urlPassword is the password of a URL's userinfo (scheme://user:password@host).
	urlPassword = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@"']+:([^@\s/"']+)@`)
	topLevelKey = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9_]*):`)
)

// literal reports whether v (a value as written) is a literal rather than a reference: not empty,
// not an interpolation or shell expansion ($VAR, ${VAR}, $(cmd)) or printf verb, not a YAML map/valueFrom.
func literal(v string) bool {
	v = strings.TrimSpace(v)
	if i := strings.Index(v, " #"); i >= 0 {
		v = strings.TrimSpace(v[:i])
	}
	v = strings.Trim(v, `"'`)
	return v != "" && !strings.HasPrefix(v, "$") && !strings.HasPrefix(v, "{") && !strings.HasPrefix(v, "#") &&
		!strings.HasPrefix(v, "%s") && // a printf verb filled from the environment
		!strings.HasPrefix(v, "secrets/") // a kustomize file the dev overlay's secretGenerator reads
}

// scanSecrets returns every place of content (a committed deployment file named name) that holds a
// secret value: a secret-named variable or key with a literal value, a URL with a password, a
// kustomize secretGenerator with literals, a Kubernetes Secret object.
func scanSecrets(name, content string) []string {
	var found []string
	add := func(line int, format string, args ...any) {
		found = append(found, fmt.Sprintf("%s:%d: %s", name, line, fmt.Sprintf(format, args...)))
	}
	lines := strings.Split(content, "\n")
	block := ""      // the current top-level YAML key
	pendingEnv := "" // a secret-named "- name:" waiting for its value line
	for i, l := range lines {
		n := i + 1
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, "//") {
			continue
		}
		if m := topLevelKey.FindStringSubmatch(l); m != nil {
			block = m[1]
		}
		if pendingEnv != "" {
			if m := k8sValue.FindStringSubmatch(l); len(m) > 1 && literal(m[1]) {
				add(n, "%s has a literal value", pendingEnv)
			}
			if trimmed != "" {
				pendingEnv = ""
			}
		}
		if m := k8sEnvName.FindStringSubmatch(l); len(m) > 1 && secretName.MatchString(m[1]) {
			pendingEnv = m[1]
			continue
		}
		if m := envAssign.FindStringSubmatch(l); len(m) > 2 && secretName.MatchString(m[1]) && literal(m[2]) {
			add(n, "%s has a literal value", m[1])
		}
		for _, m := range secretKey.FindAllStringSubmatch(l, -1) {
			if literal(m[2]) {
				add(n, "key %s has a literal value", m[1])
			}
		}
		for _, m := range urlPassword.FindAllStringSubmatch(l, -1) {
			if literal(m[1]) {
				add(n, "a URL with a password")
			}
		}
		if block == "secretGenerator" && strings.HasPrefix(trimmed, "literals:") {
			add(n, "a secretGenerator with literals (read generated files instead)")
		}
		if trimmed == "kind: Secret" {
			add(n, "a Kubernetes Secret object")
		}
	}
	return found
}

// committedDeployFiles returns the files git tracks (or would add) under deploy/compose and deploy/k8s.
func committedDeployFiles(t *testing.T, root string) []string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	out, err := exec.Command("git", "-C", root, "ls-files", "-co", "--exclude-standard", "--", "deploy/compose", "deploy/k8s").Output()
	if err != nil {
		t.Skipf("git ls-files: %v (not a git checkout)", err)
	}
	files := strings.Fields(string(out))
	if len(files) == 0 {
		t.Fatal("git lists no file under deploy/compose and deploy/k8s")
	}
	return files
}

// TestNoCommittedSecrets: no file of deploy/compose or deploy/k8s that git tracks holds a secret value;
// every one comes from `make secrets` (compose env files, the dev overlay's generated files) or, in
// prod, from Secrets the operator provides. The folder `make secrets` writes into the dev overlay is
// ignored by git.
func TestNoCommittedSecrets(t *testing.T) {
	root := repoRoot(t)
	files := committedDeployFiles(t, root)
	for _, f := range files {
		if strings.HasPrefix(f, "deploy/k8s/overlays/dev/secrets/") {
			t.Errorf("%s is committed; the folder make secrets writes must stay ignored (.gitignore)", f)
			continue
		}
		if strings.HasSuffix(f, ".go") {
			continue // program source (the stand-ins' helpers, issue 19): a variable named password is not a value; gosec lints it
		}
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			if os.IsNotExist(err) {
				continue // deleted in the working tree
			}
			t.Fatal(err)
		}
		for _, finding := range scanSecrets(f, string(b)) {
			t.Error(finding)
		}
	}
	t.Logf("scanned %d files", len(files))
	for _, p := range []string{"deploy/k8s/overlays/dev/secrets/x", ".run/secrets/x"} {
		if err := exec.Command("git", "-C", root, "check-ignore", "-q", p).Run(); err != nil {
			t.Errorf("%s is not ignored by git: %v", p, err)
		}
	}
}

// TestComposeDotEnvHasNoSecret: deploy/compose/.env holds versions and ports only.
func TestComposeDotEnvHasNoSecret(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "compose", ".env"))
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		if k, _, ok := strings.Cut(l, "="); ok && (secretName.MatchString(strings.TrimSpace(k)) || strings.Contains(k, "PASSWORD") || strings.Contains(k, "SECRET") || strings.Contains(k, "TOKEN")) {
			t.Errorf(".env:%d: %s is a secret; it belongs in the files of make secrets", i+1, k)
		}
	}
}

// TestSecretScanFindsSecrets: the scan finds a secret in each form the deployment files used to hold
// them (compose .env, a DSN with its password, a k8s env value, secretGenerator literals, a Secret
// object) and accepts references. Values are assembled here so that no secret-looking assignment is
// committed in this file.
func TestSecretScanFindsSecrets(t *testing.T) {
	v := "not" + "-a-real-value-0123456789"
	eq := func(k string) string { return k + "=" + v }
	for _, tc := range []struct {
		name, content string
		want          int
	}{
		{".env", eq("POSTGRES_"+"PASSWORD") + "\n" + eq("GATEWAY_JWT_"+"SECRET") + "\n" + eq("NACOS_AUTH_"+"TOKEN") + "\n", 3},
		{"compose.yaml", "  ORDER_DSN: \"postgres://order:" + v + "@postgres:5432/order\"\n", 1},
		{"compose.yaml", "  ORDER_DSN: \"host=postgres user=order pass" + "word=" + v + "\"\n", 1},
		{"compose.yaml", "  GATEWAY_JWT_" + "KEYS: k1:" + v + "\n", 1},
		{"infra.yaml", "          env:\n            - name: NACOS_AUTH_" + "TOKEN\n              value: " + v + "\n", 1},
		{"kustomization.yaml", "secretGenerator:\n  - name: gateway-jwt\n    literals:\n      - secret=" + v + "\n", 2},
		{"secret.yaml", "apiVersion: v1\nkind: Secret\nstringData:\n  pass" + "word: " + v + "\n", 2},
		{"nats.conf", "  users = [ {user: order, pass" + "word: " + v + "} ]\n", 1},
		{"nats.conf", "    pass" + "word: " + v + "\n", 1},
		// References are fine.
		{"compose.yaml", "  ORDER_DSN: \"postgres://order:${ORDER_DB_" + "PASSWORD}@postgres:5432/order\"\n  POSTGRES_" + "PASSWORD: ${POSTGRES_" + "PASSWORD}\n", 0},
		{"infra.yaml", "            - name: POSTGRES_" + "PASSWORD\n              valueFrom:\n                secretKeyRef: {name: postgres-admin, key: password}\n", 0},
		{"kustomization.yaml", "secretGenerator:\n  - name: gateway-jwt\n    files:\n      - keys=secrets/gateway-jwt-keys\nconfigMapGenerator:\n  - name: x\n    literals:\n      - a=b\n", 0},
		{"nats.conf", "    pass" + "word: $ORDER_NATS_" + "PASSWORD\n", 0},
	} {
		if got := scanSecrets(tc.name, tc.content); len(got) != tc.want {
			t.Errorf("%s %q: found %d %q, want %d", tc.name, tc.content, len(got), got, tc.want)
		}
	}
}

// composeProject loads deploy/compose with the env files of secrets (SHOPMESH_SECRETS_DIR).
func composeProject(dir, secrets string) (*cli.ProjectOptions, error) {
	return cli.NewProjectOptions([]string{filepath.Join(dir, "compose.yaml")},
		cli.WithWorkingDirectory(dir), cli.WithEnvFiles(filepath.Join(dir, ".env")), cli.WithDotEnv,
		cli.WithEnv([]string{"SHOPMESH_SECRETS_DIR=" + secrets}), cli.WithProfiles([]string{"grafana"}))
}

// TestComposeRefusesWithoutSecrets: before `make secrets` compose refuses to load the project, naming
// the env file it misses.
func TestComposeRefusesWithoutSecrets(t *testing.T) {
	opts, err := composeProject(filepath.Join(repoRoot(t), "deploy", "compose"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, err = opts.LoadProject(context.Background())
	if err == nil || !strings.Contains(err.Error(), "compose/") || !strings.Contains(err.Error(), ".env") {
		t.Fatalf("compose loaded without the secrets of make secrets: %v", err)
	}
	t.Logf("compose says: %v", err)
}

// TestK8sDevRefusesWithoutSecrets: the dev overlay does not render before `make secrets`.
func TestK8sDevRefusesWithoutSecrets(t *testing.T) {
	dir := copyK8s(t, repoRoot(t))
	_, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(dir, "overlays", "dev"))
	if err == nil || !strings.Contains(err.Error(), "secrets/") {
		t.Fatalf("the dev overlay rendered without the files of make secrets: %v", err)
	}
	t.Logf("kustomize says: %v", err)
}

// copyK8s copies deploy/k8s into a temporary folder, without what `make secrets` and `make k8s-render`
// write there.
func copyK8s(t *testing.T, root string) string {
	t.Helper()
	src, dst := filepath.Join(root, "deploy", "k8s"), filepath.Join(t.TempDir(), "k8s")
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if r := filepath.ToSlash(rel); r == "out" || r == "overlays/dev/secrets" {
			return filepath.SkipDir
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// generated is one run of `make secrets` into temporary folders: the compose env files' folder, a copy
// of deploy/k8s with the dev overlay's files, and the values.
type generated struct {
	dir, k8s string
	vals     map[string]string
}

func generateSecrets(t *testing.T, root string, list []servicelist.Service) generated {
	t.Helper()
	g := generated{dir: filepath.Join(t.TempDir(), "secrets"), k8s: copyK8s(t, root)}
	if _, err := devsecrets.Ensure(devsecrets.Options{Dir: g.dir, K8sDir: filepath.Join(g.k8s, "overlays", "dev", "secrets"), Services: list}); err != nil {
		t.Fatal(err)
	}
	vals, err := devsecrets.ReadValues(g.dir, list)
	if err != nil {
		t.Fatal(err)
	}
	g.vals = vals
	return g
}

// usesNacos: the environment env of the service with prefix p talks to Nacos (registry or config
// center); only then are its Nacos credentials needed.
func usesNacos(env map[string]string, p string) bool {
	return env[p+"_REGISTRY_BACKEND"] == "nacos" || env[p+"_CONFIG_CENTER_BACKEND"] == "nacos"
}

// notProvided are the secret settings (without the <P>_ prefix) the services read that compose and
// the Kubernetes overlays leave unset on purpose, with the reason.
var notProvided = map[string]string{
	"JWT_SECRET": "GATEWAY_JWT_KEYS replaces it (kid rotation)",
}

// natsVar is a variable reference of nats.conf ($NAME), resolved from the server's environment.
var natsVar = regexp.MustCompile(`\$([A-Z][A-Z0-9_]*)`)

// natsQuoted is a quoted string of nats.conf.
var natsQuoted = regexp.MustCompile(`"[^"]*"`)

// checkNATSUsers: nats.conf has a user per service that uses NATS (its password a $<P>_NATS_PASSWORD
// reference) and no user for another, and the server's environment, env, sets every variable the file
// references to its generated value (a missing one stops the server).
func checkNATSUsers(t *testing.T, conf string, env map[string]string, list []servicelist.Service, vals map[string]string) {
	t.Helper()
	want := map[string]string{"NATS_ADMIN_PASSWORD": vals["nats-admin-password"]}
	for _, s := range list {
		line := fmt.Sprintf("{ user: %s, password: $%s_NATS_PASSWORD,", s.Name, s.Prefix())
		if strings.Contains(conf, line) != s.NATS {
			t.Errorf("nats.conf: %q present %v, want %v (nats: %v)", line, !s.NATS, s.NATS, s.NATS)
		}
		if s.NATS {
			want[s.Prefix()+"_NATS_PASSWORD"] = vals[s.Name+"-nats-password"]
		}
	}
	if !strings.Contains(conf, "authorization {") {
		t.Error("nats.conf has no authorization block")
	}
	// Outside quoted strings ("$JS.API.INFO" is a subject of a permission, not a variable).
	for _, m := range natsVar.FindAllStringSubmatch(natsQuoted.ReplaceAllString(conf, `""`), -1) {
		if env[m[1]] == "" {
			t.Errorf("nats.conf references $%s, which the NATS server's environment does not set", m[1])
		}
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("the NATS server's %s is not the value make secrets generated", k)
		}
	}
}

// checkSecretEnv: the secret variables s reads in a deployment are set to the values `make secrets`
// generated (its DSN with its own database password, the JWT keys).
func checkSecretEnv(t *testing.T, s servicelist.Service, env, vals map[string]string) {
	t.Helper()
	p := s.Prefix()
	want := map[string]string{}
	if s.Database {
		want[p+"_DSN"] = devsecrets.DSN(s.Name, vals[s.Name+"-db-password"])
	}
	if isHTTP(s) {
		want[p+"_JWT_KEYS"] = vals[s.Name+"-jwt-keys"]
	}
	if s.Kafka {
		want[p+"_KAFKA_PASSWORD"] = vals[s.Name+"-kafka-password"]
		if env[p+"_KAFKA_USERNAME"] != s.Name {
			t.Errorf("%s: %s_KAFKA_USERNAME = %q, want its own user %s", s.Name, p, env[p+"_KAFKA_USERNAME"], s.Name)
		}
	}
	if usesNacos(env, p) {
		want[p+"_REGISTRY_NACOS_PASSWORD"] = vals[s.Name+"-nacos-password"]
		if env[p+"_REGISTRY_NACOS_USERNAME"] != s.Name {
			t.Errorf("%s: %s_REGISTRY_NACOS_USERNAME = %q, want its own user %s", s.Name, p, env[p+"_REGISTRY_NACOS_USERNAME"], s.Name)
		}
	}
	if s.NATS {
		want[p+"_NATS_PASSWORD"] = vals[s.Name+"-nats-password"]
		if env[p+"_NATS_USER"] != s.Name {
			t.Errorf("%s: %s_NATS_USER = %q, want its own user %s", s.Name, p, env[p+"_NATS_USER"], s.Name)
		}
	}
	for _, k := range sortedKeys(want) {
		if env[k] != want[k] || want[k] == "" {
			t.Errorf("%s: %s is not the value make secrets generated", s.Name, k)
		}
	}
}
