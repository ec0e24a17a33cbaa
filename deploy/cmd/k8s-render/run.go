package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("k8s-render", flag.ContinueOnError)
	fs.SetOutput(stdout)
	k8sDir := fs.String("k8s", filepath.Join("deploy", "k8s"), "the kustomize tree: base/ and overlays/<name>/")
	out := fs.String("out", filepath.Join("deploy", "k8s", "out"), `directory for <overlay>.yaml, or "-" for standard output`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	overlays := fs.Args()
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
		yaml, err := render(filepath.Join(*k8sDir, "overlays", name))
		if err != nil {
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
