// Package gomod checks the workspace's dependency graph: every module of go.work requires one version
// of each dependency, and neither `go mod tidy` nor `go work sync` would change a go.mod or go.sum.
// `make deps-check` runs it (deploy/cmd/depscheck); the version check also runs in `make test`.
package gomod

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/mod/modfile"
)

// Module is one module of the workspace.
type Module struct {
	// Dir is the module's folder relative to the workspace root ("pkg/platform").
	Dir  string
	File *modfile.File
}

// Workspace reads root/go.work and the go.mod of every module it uses.
func Workspace(root string) (*modfile.WorkFile, []Module, error) {
	b, err := os.ReadFile(filepath.Join(root, "go.work"))
	if err != nil {
		return nil, nil, err
	}
	work, err := modfile.ParseWork("go.work", b, nil)
	if err != nil {
		return nil, nil, err
	}
	mods := make([]Module, 0, len(work.Use))
	for _, u := range work.Use {
		dir := filepath.ToSlash(filepath.Clean(u.Path))
		p := filepath.Join(root, dir, "go.mod")
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, nil, err
		}
		f, err := modfile.Parse(p, b, nil)
		if err != nil {
			return nil, nil, err
		}
		mods = append(mods, Module{Dir: dir, File: f})
	}
	return work, mods, nil
}

// Mismatch is a dependency that workspace modules require at different versions.
type Mismatch struct {
	Path string
	// Versions maps each version to the modules (Dir) requiring it.
	Versions map[string][]string
}

func (m Mismatch) String() string {
	var parts []string
	for _, v := range slices.Sorted(maps.Keys(m.Versions)) {
		parts = append(parts, fmt.Sprintf("%s (%s)", v, strings.Join(m.Versions[v], ", ")))
	}
	return m.Path + ": " + strings.Join(parts, " vs ")
}

// Mismatches lists, by module path, the dependencies required at more than one version across mods
// (direct and indirect requirements alike), and a go directive differing from work's.
func Mismatches(work *modfile.WorkFile, mods []Module) []Mismatch {
	byPath := map[string]map[string][]string{}
	add := func(path, version, dir string) {
		if byPath[path] == nil {
			byPath[path] = map[string][]string{}
		}
		byPath[path][version] = append(byPath[path][version], dir)
	}
	const goDirective = "go directive"
	if work != nil && work.Go != nil {
		add(goDirective, work.Go.Version, "go.work")
	}
	for _, m := range mods {
		for _, r := range m.File.Require {
			add(r.Mod.Path, r.Mod.Version, m.Dir)
		}
		if m.File.Go != nil {
			add(goDirective, m.File.Go.Version, m.Dir)
		}
	}
	var out []Mismatch
	for path, versions := range byPath {
		if len(versions) > 1 {
			out = append(out, Mismatch{Path: path, Versions: versions})
		}
	}
	slices.SortFunc(out, func(a, b Mismatch) int { return cmp.Compare(a.Path, b.Path) })
	return out
}

// TidyDiff returns what `go mod tidy` would change in the module at dir (empty: nothing).
func TidyDiff(ctx context.Context, dir string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "tidy", "-diff")
	cmd.Dir = dir
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	// Exit status 1 with a diff on stdout means "would change"; anything else is a failure.
	var exit *exec.ExitError
	if err == nil || (errors.As(err, &exit) && exit.ExitCode() == 1 && out.Len() > 0) {
		return out.String(), nil
	}
	return "", fmt.Errorf("go mod tidy -diff in %s: %w\n%s", dir, err, stderr.String())
}

// SyncDiff runs `go work sync` at root and returns the go.mod and go.sum files it changed with their
// diffs; every file it may write (the modules' go.mod and go.sum, go.work.sum) is put back as it was.
func SyncDiff(ctx context.Context, root string, mods []Module) (map[string]string, error) {
	files := []string{"go.work.sum"}
	for _, m := range mods {
		files = append(files, filepath.Join(m.Dir, "go.mod"), filepath.Join(m.Dir, "go.sum"))
	}
	before := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		if err == nil {
			before[f] = b
		}
	}
	restore := func() error {
		var errs []error
		for _, f := range files {
			p := filepath.Join(root, f)
			if b, ok := before[f]; ok {
				errs = append(errs, os.WriteFile(p, b, 0o644))
			} else if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	cmd := exec.CommandContext(ctx, "go", "work", "sync")
	cmd.Dir = root
	out, runErr := cmd.CombinedOutput()
	changed := map[string]string{}
	for _, f := range files[1:] {
		after, err := os.ReadFile(filepath.Join(root, f))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, errors.Join(err, restore())
		}
		if !bytes.Equal(before[f], after) {
			changed[f] = lineDiff(string(before[f]), string(after))
		}
	}
	if err := restore(); err != nil {
		return nil, fmt.Errorf("restoring after go work sync: %w", err)
	}
	if runErr != nil {
		return nil, fmt.Errorf("go work sync: %w\n%s", runErr, out)
	}
	return changed, nil
}

// lineDiff lists the lines only in a ("-") and only in b ("+"), in order: enough to see which
// requirement moved.
func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for _, l := range al {
		if !slices.Contains(bl, l) {
			out = append(out, "-"+l)
		}
	}
	for _, l := range bl {
		if !slices.Contains(al, l) {
			out = append(out, "+"+l)
		}
	}
	return strings.Join(out, "\n")
}
