package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

func run(ctx context.Context, args []string, stdout io.Writer) error {
	flags := flag.NewFlagSet("k8s-render", flag.ContinueOnError)
	flags.SetOutput(stdout)
	k8sDir := flags.String("k8s", filepath.Join("deploy", "k8s"), "the kustomize tree: base/ and overlays/<name>/")
	out := flags.String("out", filepath.Join("deploy", "k8s", "out"), `directory for <overlay>.yaml, or "-" for standard output`)
	if err := flags.Parse(args); err != nil {
		return err
	}
	overlays := flags.Args()
	if len(overlays) == 0 {
		overlays = []string{"dev", "prod"}
	}
	if *out != "-" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return err
		}
	}
	for i, name := range overlays {
		if err := ctx.Err(); err != nil {
			return err
		}
		dir := filepath.Join(*k8sDir, "overlays", name)
		yaml, err := render(dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || missingSecrets(dir) {
				return fmt.Errorf("overlay %s: %w (its Secrets come from files `make secrets` writes into %s)", name, err, filepath.Join(dir, "secrets"))
			}
			return fmt.Errorf("overlay %s: %w", name, err)
		}
		if *out == "-" {
			if i > 0 {
				if _, err := io.WriteString(stdout, "---\n"); err != nil {
					return err
				}
			}
			if _, err := stdout.Write(yaml); err != nil {
				return err
			}
			continue
		}
		path := filepath.Join(*out, name+".yaml")
		if err := os.WriteFile(path, yaml, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %d bytes\n", path, len(yaml))
	}
	return nil
}

// render is `kustomize build dir`: the overlay's objects as one YAML stream.
func render(dir string) ([]byte, error) {
	if st, err := os.Stat(filepath.Join(dir, "kustomization.yaml")); err != nil || st.IsDir() {
		return nil, errors.New(dir + ": no kustomization.yaml")
	}
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, err
	}
	return res.AsYaml()
}

// missingSecrets reports an overlay with a secretGenerator whose generated files are not there yet.
func missingSecrets(dir string) bool {
	k, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil || !strings.Contains(string(k), "secretGenerator:") {
		return false
	}
	_, err = os.Stat(filepath.Join(dir, "secrets"))
	return errors.Is(err, fs.ErrNotExist)
}
