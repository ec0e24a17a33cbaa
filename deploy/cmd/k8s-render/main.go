// Command k8s-render is `make k8s-render`: it renders the kustomize overlays of deploy/k8s with the
// kustomize API (krusty, the library behind `kustomize build` and `kubectl apply -k`; the same one the
// deploy/manifests tests check the overlays with), so no kubectl or kustomize binary is needed.
//
//	k8s-render [-k8s deploy/k8s] [-out deploy/k8s/out | -out -] [overlay ...]   # default overlays: dev prod
//
// Each overlay goes to <out>/<overlay>.yaml, or to standard output with -out - (documents separated by
// "---").
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8s-render:", err)
		os.Exit(1)
	}
}
