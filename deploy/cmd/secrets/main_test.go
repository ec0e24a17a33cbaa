package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The command reads the service list of the repository, writes into -out and, with -k8s -, nothing
// else; a rerun keeps every value and -rotate 1 draws them all anew.
func TestRunWritesKeepsAndRotates(t *testing.T) {
	root := filepath.Join("..", "..", "..")
	out := filepath.Join(t.TempDir(), "secrets")
	var buf bytes.Buffer
	if err := run([]string{"-root", root, "-out", out, "-k8s", "-"}, &buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "created postgres-password") || !strings.Contains(buf.String(), "gateway-jwt-keys") {
		t.Fatalf("output %q", buf.String())
	}
	first, err := os.ReadFile(filepath.Join(out, "postgres-password"))
	if err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if err := run([]string{"-root", root, "-out", out, "-k8s", "-"}, &buf); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "created") || !strings.Contains(buf.String(), "kept postgres-password") {
		t.Errorf("rerun output %q", buf.String())
	}
	buf.Reset()
	if err := run([]string{"-root", root, "-out", out, "-k8s", "-", "-rotate", "1"}, &buf); err != nil {
		t.Fatal(err)
	}
	second, err := os.ReadFile(filepath.Join(out, "postgres-password"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(first, second) || !strings.Contains(buf.String(), "rotated postgres-password") {
		t.Errorf("-rotate 1 kept postgres-password: %q", buf.String())
	}
	if err := run([]string{"-root", root, "-out", out, "-k8s", "-", "-rotate", "nope"}, &buf); err == nil {
		t.Error("-rotate nope accepted")
	}
}
