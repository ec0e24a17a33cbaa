// Command secrets generates every secret the compose stack and the Kubernetes dev overlay need (make
// secrets): passwords, the gateway's JWT keys and the Nacos token, drawn from crypto/rand into an
// ignored folder and kept on later runs (deploy/devsecrets describes the layout).
//
//	secrets -root . [-out .run/secrets] [-k8s deploy/k8s/overlays/dev/secrets] [-rotate all|name,name]
//
// -rotate draws the named values anew (all: every one); a rotated JWT key list keeps the previous
// signing key second, so tokens it signed verify until they expire.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/shopmesh/shopmesh/deploy/devsecrets"
	"github.com/shopmesh/shopmesh/deploy/servicelist"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "secrets:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("secrets", flag.ContinueOnError)
	fs.SetOutput(stdout)
	root := fs.String("root", ".", "repository root")
	out := fs.String("out", "", "values and compose env files (default <root>/.run/secrets)")
	k8s := fs.String("k8s", "", "files of the dev overlay's secretGenerator (default <root>/deploy/k8s/overlays/dev/secrets; - for none)")
	rotate := fs.String("rotate", "", "values to draw anew although present: all, or a comma-separated list of names (1 = all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	list, err := servicelist.Load(*root)
	if err != nil {
		return err
	}
	o := devsecrets.Options{Dir: *out, K8sDir: *k8s, Services: list}
	if o.Dir == "" {
		o.Dir = filepath.Join(*root, ".run", "secrets")
	}
	switch o.K8sDir {
	case "":
		o.K8sDir = filepath.Join(*root, "deploy", "k8s", "overlays", "dev", "secrets")
	case "-":
		o.K8sDir = ""
	}
	for _, r := range strings.Split(*rotate, ",") {
		switch r = strings.TrimSpace(r); r {
		case "":
		case "1":
			o.Rotate = append(o.Rotate, "all")
		default:
			o.Rotate = append(o.Rotate, r)
		}
	}
	res, err := devsecrets.Ensure(o)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, res)
	fmt.Fprintf(stdout, "secrets in %s", o.Dir)
	if o.K8sDir != "" {
		fmt.Fprintf(stdout, " and %s", o.K8sDir)
	}
	fmt.Fprintln(stdout)
	return nil
}
