// Command certs issues the development CA and per-service mTLS leaves
// (spiffe://shopmesh.local/<service>) that pkg/platform/mtls loads.
//
//	certs -out deploy/certs -services order,inventory,payment,gateway [-ttl 720h] [-ca-ttl 8760h] [-renew] [-per-service]
//
// With -per-service it also keeps <out>/<service>/ holding ca.pem, cert.pem and key.pem: what one
// container mounts (its own key pair and the trust bundle; never ca-key.pem or another service's key).
//
// ca.pem is a trust bundle: the active CA first, then older CAs still trusted. A live CA rotation is two
// runs: `-rotate-ca -propagate 10s` (new CA added to the bundle, then, after every process reloaded it,
// new leaves under it), and once every process has its new leaf, `-drop-old-cas`.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "certs:", err)
		os.Exit(1)
	}
}

func run(_ context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	fs.SetOutput(stdout)
	o := options{now: time.Now()}
	var services string
	fs.StringVar(&o.dir, "out", "", "output directory (created 0700 if missing)")
	fs.StringVar(&services, "services", "", "comma-separated service names")
	fs.DurationVar(&o.ttl, "ttl", 720*time.Hour, "leaf certificate lifetime")
	fs.DurationVar(&o.caTTL, "ca-ttl", 8760*time.Hour, "CA certificate lifetime")
	fs.BoolVar(&o.renew, "renew", false, "reissue every leaf even if still valid (the CA is kept while valid)")
	fs.BoolVar(&o.rotateCA, "rotate-ca", false, "make a new CA, keep the old ones in ca.pem, reissue every leaf under the new one")
	fs.DurationVar(&o.propagate, "propagate", 0, "with -rotate-ca: wait this long between the new bundle and the new leaves (> the services' TLS reload interval)")
	fs.BoolVar(&o.dropOldCAs, "drop-old-cas", false, "remove every CA but the active one from ca.pem (after a rotation)")
	fs.BoolVar(&o.perService, "per-service", false, "also write <out>/<service>/{ca.pem,cert.pem,key.pem}, the files one container mounts (never ca-key.pem)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, s := range strings.Split(services, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.services = append(o.services, s)
		}
	}
	res, err := generate(o)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, res)
	return nil
}
