package gomod_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shopmesh/shopmesh/deploy/gomod"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.work above %s", dir)
		}
	}
}

// TestWorkspaceVersionsAligned: every module of go.work requires the same version of each dependency
// (grpc, protobuf, otel, prometheus, kafka-go, nats, pgx, sqlite, … and the indirect ones), with the
// go directive of go.work. `go work sync` (make deps-check) is the fix when it fails.
func TestWorkspaceVersionsAligned(t *testing.T) {
	t.Parallel()
	work, mods, err := gomod.Workspace(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(mods) < 5 {
		t.Fatalf("go.work uses %d modules", len(mods))
	}
	for _, m := range gomod.Mismatches(work, mods) {
		t.Errorf("%s", m)
	}
}

func writeFile(t *testing.T, root, name, content string) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestMismatchesNamesModulesAndVersions: two modules requiring grpc at different versions (one of them
// indirectly) and a module with another go directive are reported with who requires what.
func TestMismatchesNamesModulesAndVersions(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	writeFile(t, root, "go.work", "go 1.26.0\n\nuse (\n\t./a\n\t./b\n)\n")
	writeFile(t, root, "a/go.mod", "module example.com/a\n\ngo 1.26.0\n\nrequire (\n\tgoogle.golang.org/grpc v1.85.0\n\tgithub.com/google/uuid v1.6.0\n)\n")
	writeFile(t, root, "b/go.mod", "module example.com/b\n\ngo 1.25.0\n\nrequire (\n\tgithub.com/google/uuid v1.6.0\n\tgoogle.golang.org/grpc v1.84.0 // indirect\n)\n")
	work, mods, err := gomod.Workspace(root)
	if err != nil {
		t.Fatal(err)
	}
	got := gomod.Mismatches(work, mods)
	var lines []string
	for _, m := range got {
		lines = append(lines, m.String())
	}
	want := []string{
		"go directive: 1.25.0 (b) vs 1.26.0 (go.work, a)",
		"google.golang.org/grpc: v1.84.0 (b) vs v1.85.0 (a)",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("mismatches:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

// TestSyncDiffAndTidyDiffReportAndRestore: in a workspace where a requires golang.org/x/mod v0.41.0 and
// b v0.42.0, go work sync would raise a's requirement: SyncDiff names a/go.mod with the moved line and
// leaves every file as it was; TidyDiff reports the requirement b does not use. Offline: the versions
// come from the module cache.
func TestSyncDiffAndTidyDiffReportAndRestore(t *testing.T) {
	t.Setenv("GOFLAGS", "-mod=mod")
	t.Setenv("GOPROXY", "off")
	t.Setenv("GOSUMDB", "off")
	t.Setenv("GOWORK", "")
	root := t.TempDir()
	writeFile(t, root, "go.work", "go 1.26.0\n\nuse (\n\t./a\n\t./b\n)\n")
	writeFile(t, root, "a/go.mod", "module example.com/a\n\ngo 1.26.0\n\nrequire golang.org/x/mod v0.41.0\n")
	writeFile(t, root, "a/a.go", "package a\n\nimport \"golang.org/x/mod/semver\"\n\nvar _ = semver.IsValid\n")
	writeFile(t, root, "b/go.mod", "module example.com/b\n\ngo 1.26.0\n\nrequire golang.org/x/mod v0.42.0\n")
	writeFile(t, root, "b/b.go", "package b\n")
	for _, dir := range []string{"a", "b"} {
		if _, err := gomod.TidyDiff(t.Context(), filepath.Join(root, dir)); err != nil {
			t.Skipf("golang.org/x/mod v0.41.0/v0.42.0 not in the module cache: %v", err)
		}
	}
	_, mods, err := gomod.Workspace(root)
	if err != nil {
		t.Fatal(err)
	}
	aBefore, err := os.ReadFile(filepath.Join(root, "a", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	changed, err := gomod.SyncDiff(t.Context(), root, mods)
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := changed["a/go.mod"]; !ok || !strings.Contains(d, "-require golang.org/x/mod v0.41.0") || !strings.Contains(d, "v0.42.0") {
		t.Errorf("changed = %q, want a/go.mod raised to v0.42.0", changed)
	}
	if _, ok := changed["b/go.mod"]; ok {
		t.Errorf("b/go.mod reported changed: %q", changed["b/go.mod"])
	}
	if aAfter, _ := os.ReadFile(filepath.Join(root, "a", "go.mod")); string(aAfter) != string(aBefore) {
		t.Errorf("a/go.mod not restored:\n%s", aAfter)
	}
	if _, err := os.Stat(filepath.Join(root, "b", "go.sum")); err == nil {
		t.Error("b/go.sum left behind")
	}
	diff, err := gomod.TidyDiff(t.Context(), filepath.Join(root, "b"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(diff, "-require golang.org/x/mod v0.42.0") {
		t.Errorf("tidy diff of b = %q, want the unused requirement removed", diff)
	}
}
