package config_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
)

var updateCommitted = flag.Bool("update-committed-secrets", false,
	"add the hash of every secret-looking value found in the repository to committed_secrets.go")

// found is a secret-looking value in a file of the repository.
type found struct {
	where string // path:line, and "HEAD:" for the committed version
	name  string // what it was assigned to
	value string
}

var (
	// assignment is NAME=value or name: value with a credential-like name (GATEWAY_JWT_SECRET=…,
	// POSTGRES_PASSWORD: …, password=…, NACOS_AUTH_TOKEN=…, GATEWAY_JWT_KEYS=…, …token.secret.key=…).
	assignment = regexp.MustCompile(`(?i)\b([a-z0-9_.-]*(?:secret|password|passwd|token|_keys|secret\.key))["']?[ \t]*[:=][ \t]*("[^"\n]*"|'[^'\n]*'|[^\s;}#]+)`)
	// goAssignment is the same in Go source, for string literals only (the rest is code, not a value).
	goAssignment = regexp.MustCompile(`(?i)\b(\w*(?:secret|password|passwd|token|keys))"?[ \t]*(?::=|=|:)[ \t]*("[^"\n]+"|` + "`[^`\n]+`" + `)`)
	// userinfo is the password of a URL: scheme://user:password@host.
	userinfo = regexp.MustCompile(`\b[a-z][a-z0-9+.-]*://([^/\s:@"'$]+):([^@\s/"'$]+)@`)
	// literal is an item of a kustomize secretGenerator's literals: - key=value.
	literal = regexp.MustCompile(`^\s*-\s*([A-Za-z0-9_.-]+)=(\S+)\s*$`)
	// yamlEntry is a key: value line of a Secret's stringData.
	yamlEntry = regexp.MustCompile(`^\s+([A-Za-z0-9_.-]+):\s*("[^"]*"|'[^']*'|\S+)\s*$`)
)

// notAValue is what placeholder refuses besides the prefixes: a variable's name (KAFKA_PASSWORD) or a
// relative path (secrets/postgres-password, a kustomize secretGenerator file).
var notAValue = regexp.MustCompile(`^([A-Z][A-Z0-9_]*|[a-z0-9._-]+(/[a-z0-9._-]+)+)$`)

// placeholder reports values that are references, paths, code or elisions rather than credentials.
func placeholder(v string) bool {
	if v == "" || strings.ContainsAny(v[:1], "${<[*/&|\\+") || strings.ContainsAny(v, "%()[]") ||
		strings.Contains(v, "…") || strings.Contains(v, "...") || notAValue.MatchString(v) {
		return true
	}
	switch strings.ToLower(v) {
	case "true", "false", "null", "nil", "none", "required", "optional", "redacted", "[redacted]":
		return true
	}
	return false
}

// scan returns the secret-looking values of one file.
func scan(path string, data []byte) []found {
	var out []found
	goFile := strings.HasSuffix(path, ".go")
	block := "" // "literals" or "stringData" while inside one (YAML)
	indent := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		where := path + ":" + strconv.Itoa(n)
		add := func(name, v string) {
			if len(v) >= 2 && (v[0] == '"' || v[0] == '\'' || v[0] == '`') && v[len(v)-1] == v[0] {
				v = v[1 : len(v)-1]
			}
			v = strings.TrimSpace(v)
			if strings.Contains(strings.ToLower(name), "page") {
				return // a page token (pagination) is no credential
			}
			if !placeholder(v) {
				out = append(out, found{where: where, name: name, value: v})
			}
		}
		switch {
		case goFile && !strings.HasPrefix(strings.TrimSpace(line), "//"):
			for _, m := range goAssignment.FindAllStringSubmatchIndex(line, -1) {
				if rest := strings.TrimSpace(line[m[1]:]); strings.HasPrefix(rest, "+") {
					continue // the start of a longer value ("k1:" + secret): its pieces are not the value
				}
				add(line[m[2]:m[3]], line[m[4]:m[5]])
			}
		case !goFile:
			// "name: value" is YAML's assignment, but prose in comments and Markdown ("key password: the
			// NATS user's"): there only name=value counts.
			prose := strings.HasSuffix(path, ".md") || strings.HasPrefix(strings.TrimSpace(line), "#")
			for _, m := range assignment.FindAllStringSubmatch(line, -1) {
				if prose && !strings.Contains(strings.TrimPrefix(m[0], m[1]), "=") {
					continue
				}
				v := m[2]
				if !strings.HasSuffix(strings.ToLower(m[1]), "keys") && !strings.HasPrefix(v, `"`) && !strings.HasPrefix(v, "'") {
					v, _, _ = strings.Cut(v, ",") // a list or a YAML flow mapping goes on after the comma
				}
				add(m[1], v)
			}
		}
		for _, m := range userinfo.FindAllStringSubmatch(line, -1) {
			add(m[1]+"'s URL password", m[2])
		}
		trimmed := strings.TrimSpace(line)
		lead := len(line) - len(strings.TrimLeft(line, " \t"))
		switch {
		case strings.HasSuffix(trimmed, "literals:"):
			block, indent = "literals", lead
			continue
		case trimmed == "stringData:":
			block, indent = "stringData", lead
			continue
		}
		if block == "" || trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if lead < indent || (lead == indent && !strings.HasPrefix(trimmed, "-")) {
			block = ""
			continue
		}
		if block == "literals" {
			if m := literal.FindStringSubmatch(line); m != nil {
				add(m[1], m[2])
			}
		} else if m := yamlEntry.FindStringSubmatch(line); m != nil {
			add(m[1], m[2])
		}
	}
	return out
}

// repoRoot is the directory holding go.work above the test's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("not inside the shopmesh repository (no go.work above)")
		}
		dir = parent
	}
}

// skipped are files the scan does not read: binary and generated ones, and the list itself.
func skipped(path string, data []byte) bool {
	return strings.HasSuffix(path, ".sum") || strings.HasSuffix(path, ".pb.go") || strings.Contains(path, "/gen/") ||
		strings.HasSuffix(path, "committed_secrets.go") || len(data) > 4<<20 || bytes.IndexByte(data, 0) >= 0
}

// repoFiles calls fn with every tracked file: the working tree's version (what is about to be
// committed) and HEAD's (what is committed, though the working tree may have removed it since).
func repoFiles(t *testing.T, root string, fn func(path string, data []byte)) {
	t.Helper()
	git := func(args ...string) *exec.Cmd {
		cmd := exec.CommandContext(t.Context(), "git", args...)
		cmd.Dir = root
		return cmd
	}
	tracked, err := git("ls-files", "-z").Output()
	if err != nil {
		t.Skipf("git ls-files: %v (not a git checkout?)", err)
	}
	for p := range strings.SplitSeq(strings.TrimSuffix(string(tracked), "\x00"), "\x00") {
		data, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			continue // deleted in the working tree
		}
		if !skipped(p, data) {
			fn(p, data)
		}
	}
	tree, err := git("ls-tree", "-r", "-z", "HEAD").Output()
	if err != nil {
		t.Fatalf("git ls-tree HEAD: %v", err)
	}
	type blob struct{ id, path string }
	var blobs []blob
	for e := range strings.SplitSeq(strings.TrimSuffix(string(tree), "\x00"), "\x00") {
		meta, p, ok := strings.Cut(e, "\t")
		if f := strings.Fields(meta); ok && len(f) == 3 && f[1] == "blob" {
			blobs = append(blobs, blob{f[2], p})
		}
	}
	cmd := git("cat-file", "--batch")
	var ids strings.Builder
	for _, b := range blobs {
		ids.WriteString(b.id + "\n")
	}
	cmd.Stdin = strings.NewReader(ids.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReaderSize(out, 1<<20)
	for _, b := range blobs {
		header, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("git cat-file: %v", err)
		}
		f := strings.Fields(header)
		size, err := strconv.Atoi(f[len(f)-1])
		if err != nil {
			t.Fatalf("git cat-file header %q", header)
		}
		data := make([]byte, size+1) // and the newline after it
		if _, err := io.ReadFull(r, data); err != nil {
			t.Fatalf("git cat-file: %v", err)
		}
		if !skipped(b.path, data[:size]) {
			fn("HEAD:"+b.path, data[:size])
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("git cat-file: %v", err)
	}
}

// TestCommittedSecretsAreRefused walks every file of the repository (working tree and HEAD) for
// secret-looking values — NAME_SECRET=, NAME_PASSWORD=, NAME_TOKEN=, NAME_KEYS=, password=, a URL's
// user:password@, a kustomize secretGenerator literal, a Secret's stringData, a Go string assigned to a
// …Secret/…Password name — and fails while one of them is not refused in prod (config.CommittedSecret).
// A newly committed secret therefore fails until it is on the list:
//
//	go test ./pkg/platform/config -run TestCommittedSecretsAreRefused -update-committed-secrets
//
// adds it (nothing is ever removed: a value once committed stays readable in the history).
func TestCommittedSecretsAreRefused(t *testing.T) {
	root := repoRoot(t)
	var all []found
	repoFiles(t, root, func(path string, data []byte) { all = append(all, scan(path, data)...) })
	if len(all) == 0 {
		t.Fatal("the scan found nothing: the patterns no longer match the repository")
	}
	missing := map[string]found{} // by value
	for _, f := range all {
		for _, v := range config.SecretParts(f.value, true) {
			if !config.CommittedSecret(v) {
				if _, seen := missing[v]; !seen {
					missing[v] = found{where: f.where, name: f.name, value: v}
				}
			}
		}
	}
	if len(missing) == 0 {
		t.Logf("%d secret-looking values in the repository, every one refused in prod", len(all))
		return
	}
	if *updateCommitted {
		if err := addCommitted(filepath.Join(root, "pkg", "platform", "config", "committed_secrets.go"), missing); err != nil {
			t.Fatal(err)
		}
		t.Logf("added %d values to committed_secrets.go", len(missing))
		return
	}
	var lines []string
	for _, f := range missing {
		lines = append(lines, fmt.Sprintf("%s: %s = %q", f.where, f.name, f.value))
	}
	slices.Sort(lines)
	t.Errorf("%d committed values are not refused in prod (a secret committed to the repository protects nothing: "+
		"generate it instead, e.g. make secrets; if the value must stay, run this test with -update-committed-secrets):\n%s",
		len(missing), strings.Join(lines, "\n"))
}

// addCommitted rewrites the list with the hashes of missing added.
func addCommitted(path string, missing map[string]found) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	begin, end := []byte("\treturn []string{\n"), []byte("\t}\n}\n")
	i := bytes.Index(src, begin)
	j := bytes.LastIndex(src, end)
	if i < 0 || j < i {
		return errors.New("committed_secrets.go: no list found")
	}
	var hashes []string
	for l := range strings.Lines(string(src[i+len(begin) : j])) {
		if h := strings.Trim(strings.TrimSpace(l), `",`); h != "" {
			hashes = append(hashes, h)
		}
	}
	for v := range missing {
		sum := sha256.Sum256([]byte(v))
		hashes = append(hashes, hex.EncodeToString(sum[:]))
	}
	slices.Sort(hashes)
	hashes = slices.Compact(hashes)
	var b bytes.Buffer
	b.Write(src[:i+len(begin)])
	for _, h := range hashes {
		fmt.Fprintf(&b, "\t\t%q,\n", h)
	}
	b.Write(src[j:])
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// TestScanFindsEveryShape keeps the scan's patterns honest: each shape of committed secret is found.
func TestScanFindsEveryShape(t *testing.T) {
	t.Parallel()
	cases := map[string]struct{ file, text, want string }{
		"env file":        {"deploy/compose/.env", "GATEWAY_JWT_SECRET=abc-123\n", "abc-123"},
		"yaml env":        {"k8s.yaml", "  POSTGRES_PASSWORD: \"pw-1\"\n", "pw-1"},
		"lowercase":       {"x.properties", "nacos.core.auth.plugin.nacos.token.secret.key=c2VjcmV0a2V5\n", "c2VjcmV0a2V5"},
		"jwt keys":        {".env", "GATEWAY_JWT_KEYS=new:k-1,old:k-2\n", "new:k-1,old:k-2"},
		"url":             {"README.md", "DATABASE_URL=postgres://u:pw-2@db:5432/x\n", "pw-2"},
		"dsn parameter":   {"x.sh", "psql 'host=db password=pw-3 dbname=x'\n", "pw-3"},
		"go constant":     {"x.go", "const DevJWTSecret = \"dev-1\" //nolint\n", "dev-1"},
		"go map":          {"x_test.go", "\t\"GATEWAY_JWT_SECRET\": \"go-2\",\n", "go-2"},
		"go prefix":       {"x_test.go", "\t\"GATEWAY_JWT_KEYS\": \"k1:\" + fresh + \",k2:go-4\",\n", ""},
		"go url":          {"x_test.go", "dsn := \"postgres://svc:go-3@h/db\"\n", "go-3"},
		"kustomize":       {"kustomization.yaml", "secretGenerator:\n  - name: db\n    literals:\n      - inventory=lit-1\n", "lit-1"},
		"secret manifest": {"s.yaml", "kind: Secret\nstringData:\n  token: sd-1\n  other: sd-2\nkind: X\n", "sd-2"},
	}
	for name, c := range cases {
		var got []string
		for _, f := range scan(c.file, []byte(c.text)) {
			got = append(got, f.value)
		}
		if c.want == "" && len(got) > 0 || c.want != "" && !slices.Contains(got, c.want) {
			t.Errorf("%s: found %q, want %q among them", name, got, c.want)
		}
	}
	for _, text := range []string{"GATEWAY_JWT_SECRET=${GATEWAY_JWT_SECRET}\n", "POSTGRES_PASSWORD: $(cat /run/x)\n",
		"GATEWAY_JWT_KEYS=new:…,old:…\n", "secretKeyRef: {name: a, key: b}\n", "GATEWAY_JWT_SECRET_FILE=/run/s\n"} {
		if f := scan("x.env", []byte(text)); len(f) != 0 {
			t.Errorf("%q: found %v, want nothing (references and placeholders are not values)", text, f)
		}
	}
}

// TestRefuseCommittedSecrets: in a config, a committed value is refused as a Secret, as a URL's
// password or a password= parameter of any string, and as one key of a kid:secret list; a generated one
// is not.
func TestRefuseCommittedSecrets(t *testing.T) {
	t.Parallel()
	const committed = "shopmesh-dev-secret-do-not-use-in-prod" // the gateway's dev profile secret
	if !config.CommittedSecret(committed) {
		t.Fatal("the dev JWT secret is not on the list")
	}
	type nested struct{ Password config.Secret }
	type cfg struct {
		config.Database
		JWTKeys config.Secret
		Kafka   nested
		Plain   string
	}
	fresh := "Zt4ugq3x0qk6b1w9YfR2mJ7sPA8cVnLd"
	good := cfg{Database: config.Database{DSN: "postgres://svc:" + fresh + "@db/x"}, JWTKeys: config.Secret("k1:" + fresh),
		Kafka: nested{Password: config.Secret(fresh)}, Plain: committed}
	if err := config.RefuseCommittedSecrets(&good); err != nil {
		t.Fatalf("generated values refused: %v", err)
	}
	bad := cfg{Database: config.Database{DSN: "host=db user=svc password=" + committed}, JWTKeys: config.Secret("k2:" + fresh + ",k1:" + committed),
		Kafka: nested{Password: committed}}
	err := config.RefuseCommittedSecrets(&bad)
	for _, want := range []string{
		"dsn: a value committed in the shopmesh repository; generate one (make secrets)",
		"jwt_keys: a value committed", "kafka.password: a value committed",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not contain %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), committed) {
		t.Error("the error quotes the secret")
	}
}
