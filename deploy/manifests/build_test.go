package manifests_test

import (
	"bufio"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/shopmesh/shopmesh/deploy/servicelist"
)

// repoRoot is the directory holding go.work.
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
			t.Fatal("go.work not found above the test directory")
		}
		dir = parent
	}
}

// dockerfile is what the tests need from deploy/docker/Dockerfile.
type dockerfile struct {
	froms    []string          // image of every FROM, build args substituted
	args     map[string]string // ARG defaults
	buildEnv []string          // ENV of the build stage, NAME=value
	build    []string          // the `go build` command line: NAME=value assignments, then go and its args
	user     string            // USER of the final stage
	copies   [][]string        // COPY sources... destination of the build stage (no --from)
	workdir  string            // WORKDIR of the build stage
}

// varRef matches $NAME and ${NAME}.
func varRef() *regexp.Regexp { return regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`) }

func parseDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || (l == "" && cur.Len() == 0) {
			continue
		}
		if rest, ok := strings.CutSuffix(l, `\`); ok {
			cur.WriteString(rest + " ")
			continue
		}
		cur.WriteString(l)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	d := dockerfile{args: map[string]string{}}
	argRef := varRef()
	subst := func(s string) string {
		return argRef.ReplaceAllStringFunc(s, func(m string) string {
			if v, ok := d.args[argRef.FindStringSubmatch(m)[1]]; ok && v != "" {
				return v
			}
			return m
		})
	}
	stage := 0
	for _, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		switch strings.ToUpper(instr) {
		case "ARG":
			name, def, _ := strings.Cut(rest, "=")
			if _, seen := d.args[name]; !seen || def != "" {
				d.args[name] = def
			}
		case "FROM":
			stage++
			image, _, _ := strings.Cut(rest, " ")
			d.froms = append(d.froms, subst(image))
			d.user = ""
		case "ENV":
			if stage == 1 {
				d.buildEnv = append(d.buildEnv, shellFields(t, rest)...)
			}
		case "USER":
			d.user = rest
		case "WORKDIR":
			if stage == 1 {
				d.workdir = rest
			}
		case "COPY":
			if stage == 1 && !strings.HasPrefix(rest, "--") {
				d.copies = append(d.copies, strings.Fields(rest))
			}
		case "RUN":
			i := strings.Index(rest, "go build")
			if i < 0 {
				continue
			}
			// Back up over NAME=value assignments right before `go build`.
			head := strings.Fields(rest[:i])
			j := len(head)
			for j > 0 && regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`).MatchString(head[j-1]) {
				j--
			}
			d.build = shellFields(t, strings.Join(head[j:], " ")+" "+rest[i:])
		}
	}
	return d
}

// shellFields splits a command line the way sh does for the simple cases a Dockerfile uses: blanks
// separate words, double or single quotes group, and the quotes are removed.
func shellFields(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	var w strings.Builder
	inWord := false
	var quote rune
	for _, c := range s {
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				w.WriteRune(c)
			}
		case c == '"' || c == '\'':
			quote, inWord = c, true
		case c == ' ' || c == '\t':
			if inWord {
				out = append(out, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(c)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("unbalanced quote in %q", s)
	}
	if inWord {
		out = append(out, w.String())
	}
	return out
}

// buildServices runs the Dockerfile's `go build` for every service of list, as the build stage would
// (same packages, flags and environment), writing the binaries to dir.
func buildServices(t *testing.T, root, dir string, list []servicelist.Service) {
	d := parseDockerfile(t, filepath.Join(root, "deploy", "docker", "Dockerfile"))
	if len(d.build) == 0 {
		t.Fatal("Dockerfile: no RUN ... go build line")
	}
	if len(d.froms) < 2 {
		t.Fatalf("Dockerfile: want a multi-stage build, got FROM %v", d.froms)
	}
	for _, img := range d.froms {
		if !pinned(img) {
			t.Errorf("Dockerfile: FROM %s is not pinned to a version tag", img)
		}
	}
	final := d.froms[len(d.froms)-1]
	if !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		t.Errorf("Dockerfile: final stage %s is not distroless static or scratch", final)
	}
	if d.user == "" || d.user == "root" || strings.HasPrefix(d.user, "0") {
		t.Errorf("Dockerfile: final USER %q is not a non-root user", d.user)
	}
	var env []string
	i := 0
	for ; i < len(d.build) && strings.Contains(d.build[i], "="); i++ {
		env = append(env, d.build[i])
	}
	cmdline := d.build[i:]
	if len(cmdline) < 2 || cmdline[0] != "go" || cmdline[1] != "build" {
		t.Fatalf("Dockerfile: cannot parse the build command %q", d.build)
	}
	if !slicesContain(env, "CGO_ENABLED=0") || !slicesContain(cmdline, "-trimpath") {
		t.Errorf("Dockerfile: build %q must set CGO_ENABLED=0 and -trimpath (static, reproducible)", d.build)
	}
	// The build stage's file system: what its COPY lines take from the context (the repository root
	// minus .dockerignore), so a module the build needs but the Dockerfile does not copy fails here.
	stageRoot := t.TempDir()
	for _, c := range d.copies {
		if len(c) < 2 {
			t.Fatalf("Dockerfile: COPY %q", c)
		}
		dest := c[len(c)-1]
		if !filepath.IsAbs(dest) {
			dest = filepath.Join(d.workdir, dest)
		}
		for _, src := range c[:len(c)-1] {
			copyContext(t, root, strings.TrimSuffix(src, "/"), filepath.Join(stageRoot, dest), strings.HasSuffix(c[len(c)-1], "/") || len(c) > 2)
		}
	}
	ctxDir := filepath.Join(stageRoot, d.workdir)
	argRef := varRef()
	for _, svc := range servicelist.Names(list) {
		t.Run(svc, func(t *testing.T) {
			args := make([]string, 0, len(cmdline)-1)
			for k := 1; k < len(cmdline); k++ {
				a := argRef.ReplaceAllStringFunc(cmdline[k], func(m string) string {
					if argRef.FindStringSubmatch(m)[1] == "SERVICE" {
						return svc
					}
					return m
				})
				if cmdline[k-1] == "-o" {
					a = filepath.Join(dir, svc)
				}
				if strings.Contains(a, "$") {
					t.Fatalf("unresolved variable in build argument %q", a)
				}
				args = append(args, a)
			}
			cmd := exec.Command("go", args...)
			cmd.Dir = ctxDir
			cmd.Env = append(append(os.Environ(), d.buildEnv...), env...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			t.Logf("built %s with: %s go %s", svc, strings.Join(env, " "), strings.Join(args, " "))
		})
	}
}

// pinned reports whether an image reference names a version tag or a digest, not latest or nothing.
func pinned(image string) bool {
	if image == "scratch" || strings.Contains(image, "@sha256:") {
		return true
	}
	slash := strings.LastIndex(image, "/")
	colon := strings.LastIndex(image, ":")
	if colon < slash+1 {
		return false
	}
	tag := image[colon+1:]
	return tag != "" && tag != "latest" && !strings.Contains(tag, "$")
}

func slicesContain(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// checkConfig runs `<bin> check-config` with exactly env as the process environment, as in the
// container, and returns its error output.
func checkConfig(bin string, env map[string]string) (string, error) {
	cmd := exec.Command(bin, "check-config")
	cmd.Env = make([]string, 0, len(env))
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// configKeys is `<bin> check-config -keys`: every variable the service reads, for env's profile.
func configKeys(t *testing.T, bin string, env map[string]string) map[string]bool {
	t.Helper()
	cmd := exec.Command(bin, "check-config", "-keys")
	for k, v := range env {
		if strings.HasSuffix(k, "_PROFILE") {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s check-config -keys: %v", bin, err)
	}
	keys := map[string]bool{}
	for _, k := range strings.Fields(string(out)) {
		keys[k] = true
	}
	return keys
}

// ignored reports whether .dockerignore patterns exclude rel (slash-separated, relative to the context):
// a pattern matches the path or one of its parent directories; "**/" matches any number of directories.
func ignored(patterns []string, rel string) bool {
	parts := strings.Split(rel, "/")
	for _, pat := range patterns {
		pat = strings.TrimSuffix(pat, "/")
		rest, deep := strings.CutPrefix(pat, "**/")
		for k := 1; k <= len(parts); k++ {
			if !deep {
				if ok, _ := path.Match(pat, strings.Join(parts[:k], "/")); ok {
					return true
				}
				continue
			}
			for i := 0; i < k; i++ {
				if ok, _ := path.Match(rest, strings.Join(parts[i:k], "/")); ok {
					return true
				}
			}
		}
	}
	return false
}

func dockerignore(t *testing.T, root string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var pats []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			if strings.HasPrefix(l, "!") {
				t.Fatalf(".dockerignore: exceptions (%s) are not modelled by this test", l)
			}
			pats = append(pats, l)
		}
	}
	return pats
}

// copyContext does COPY src dest: a directory's contents go into dest, a file into dest (a directory
// when intoDir).
func copyContext(t *testing.T, root, src, dest string, intoDir bool) {
	t.Helper()
	pats := dockerignore(t, root)
	info, err := os.Stat(filepath.Join(root, src))
	if err != nil {
		t.Fatalf("Dockerfile: COPY %s: %v", src, err)
	}
	if !info.IsDir() {
		if intoDir {
			dest = filepath.Join(dest, filepath.Base(src))
		}
		if ignored(pats, src) {
			t.Fatalf("Dockerfile: COPY %s, which .dockerignore excludes", src)
		}
		copyFile(t, filepath.Join(root, src), dest)
		return
	}
	err = filepath.WalkDir(filepath.Join(root, src), func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if ignored(pats, filepath.ToSlash(rel)) {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if e.IsDir() || !e.Type().IsRegular() {
			return nil
		}
		within, _ := filepath.Rel(filepath.Join(root, src), p)
		copyFile(t, p, filepath.Join(dest, within))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
