package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shopmesh/shopmesh/deploy/devsecrets"
	"github.com/shopmesh/shopmesh/deploy/servicelist"
)

// TestRender renders both overlays of the repository into files and one to standard output, and refuses
// an overlay that does not exist.
func TestRender(t *testing.T) {
	// A copy of deploy/k8s whose dev overlay holds what `make secrets` writes (kustomize reads them).
	k8s := filepath.Join(t.TempDir(), "k8s")
	if err := os.CopyFS(k8s, os.DirFS(filepath.Join("..", "..", "k8s"))); err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	_ = os.RemoveAll(filepath.Join(k8s, "overlays", "dev", "secrets"))
	if err := run(context.Background(), []string{"-k8s", k8s, "-out", "-", "dev"}, &stdout); err == nil ||
		!strings.Contains(err.Error(), "make secrets") {
		t.Errorf("dev overlay without generated secrets: err = %v, want one naming make secrets", err)
	}
	list, err := servicelist.Load(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := devsecrets.Ensure(devsecrets.Options{Dir: filepath.Join(t.TempDir(), "secrets"),
		K8sDir: filepath.Join(k8s, "overlays", "dev", "secrets"), Services: list}); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	stdout.Reset()
	if err := run(context.Background(), []string{"-k8s", k8s, "-out", out}, &stdout); err != nil {
		t.Fatal(err)
	}
	for overlay, ns := range map[string]string{"dev": "shopmesh-dev", "prod": "shopmesh"} {
		data, err := os.ReadFile(filepath.Join(out, overlay+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		s := string(data)
		for _, want := range []string{"kind: Deployment\n", "name: inventory\n", "namespace: " + ns + "\n"} {
			if !strings.Contains(s, want) {
				t.Errorf("%s.yaml lacks %q", overlay, want)
			}
		}
		if overlay == "prod" && strings.Contains(s, "kind: StatefulSet\n") {
			t.Error("prod.yaml renders StatefulSets; its infrastructure is managed")
		}
	}
	t.Logf("%s", stdout.String())

	stdout.Reset()
	if err := run(context.Background(), []string{"-k8s", k8s, "-out", "-", "dev"}, &stdout); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout.String(), "apiVersion: ") || !strings.Contains(stdout.String(), "kind: StatefulSet\n") {
		t.Errorf("stdout is not the dev overlay's YAML: %.200s", stdout.String())
	}

	if err := run(context.Background(), []string{"-k8s", k8s, "-out", "-", "nope"}, &stdout); err == nil ||
		!strings.Contains(err.Error(), "overlay nope") {
		t.Errorf("unknown overlay: err = %v", err)
	}
}
