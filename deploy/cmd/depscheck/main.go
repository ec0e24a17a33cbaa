// Command depscheck is `make deps-check`: it fails when `go mod tidy` would change a module of go.work
// (go mod tidy -diff), when `go work sync` would change a go.mod or go.sum (it is run, then every file
// is put back), or when two modules require different versions of a dependency. -root is the
// repository (default: the folder holding go.work, found from the working directory up).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"time"

	"github.com/shopmesh/shopmesh/deploy/gomod"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "deps-check:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, w io.Writer) error {
	fs := flag.NewFlagSet("depscheck", flag.ContinueOnError)
	root := fs.String("root", "", "repository root (default: the folder holding go.work, from the working directory up)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *root == "" {
		r, err := findRoot()
		if err != nil {
			return err
		}
		*root = r
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	work, mods, err := gomod.Workspace(*root)
	if err != nil {
		return err
	}
	var problems int
	for _, m := range mods {
		diff, err := gomod.TidyDiff(ctx, filepath.Join(*root, m.Dir))
		if err != nil {
			return err
		}
		if diff != "" {
			problems++
			fmt.Fprintf(w, "== go mod tidy would change %s (run `make tidy`):\n%s\n", m.Dir, diff)
		}
	}
	changed, err := gomod.SyncDiff(ctx, *root, mods)
	if err != nil {
		return err
	}
	for _, f := range slices.Sorted(func(yield func(string) bool) {
		for f := range changed {
			if !yield(f) {
				return
			}
		}
	}) {
		problems++
		fmt.Fprintf(w, "== go work sync would change %s (run `go work sync`, then `make tidy`):\n%s\n", f, changed[f])
	}
	for _, m := range gomod.Mismatches(work, mods) {
		problems++
		fmt.Fprintf(w, "== required at different versions: %s\n", m)
	}
	if problems > 0 {
		return fmt.Errorf("%d problem(s) in the dependency graph", problems)
	}
	fmt.Fprintf(w, "deps-check: %d modules tidy, go work sync changes nothing, one version of every dependency\n", len(mods))
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
			return "", errors.New("no go.work in " + dir + " or above: run from the repository or pass -root")
		}
	}
}
