package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

type options struct {
	dir        string
	services   []string
	ttl        time.Duration
	caTTL      time.Duration
	renew      bool
	rotateCA   bool
	dropOldCAs bool
	propagate  time.Duration
	perService bool
	now        time.Time
	sleep      func(time.Duration) // nil = time.Sleep
}

type result struct {
	mtls.DirResult
	caIssued bool
	issued   []string
	kept     []string
}

// generate runs mtls.EnsureDir, which holds the logic so that deploy/localstack can call it too. With
// perService the per-container folders are refreshed from the shared directory after it, and also
// before a CA rotation's propagation wait, so that every container sees the new bundle before any
// peer presents a leaf of the new CA (the order EnsureDir keeps for the shared directory).
func generate(o options) (result, error) {
	sleep := o.sleep
	if sleep == nil {
		sleep = time.Sleep
	}
	var publishErr error
	r, err := mtls.EnsureDir(mtls.DirOptions{
		Dir: o.dir, Services: o.services, TTL: o.ttl, CATTL: o.caTTL, Renew: o.renew,
		RotateCA: o.rotateCA, DropOldCAs: o.dropOldCAs, Propagate: o.propagate, Now: o.now,
		Sleep: func(d time.Duration) {
			if o.perService {
				publishErr = publishPerService(o.dir, o.services)
			}
			sleep(d)
		},
	})
	if err == nil {
		err = publishErr
	}
	if err == nil && o.perService {
		err = publishPerService(o.dir, o.services)
	}
	return result{DirResult: r, caIssued: r.CAIssued, issued: r.Issued, kept: r.Kept}, err
}

// publishPerService copies, for each service, the trust bundle and its own key pair from dir into
// dir/<service>/ (0700) as ca.pem, cert.pem and key.pem (0600): a container mounts that folder and
// nothing else of dir. Each file is replaced atomically and only when it changed, key before
// certificate, like EnsureDir; the services' TLS reload picks the new files up through the mount.
func publishPerService(dir string, services []string) error {
	for _, svc := range services {
		if !mtls.ValidService(svc) {
			return fmt.Errorf("bad service name %q", svc)
		}
		out := filepath.Join(dir, svc)
		if err := os.MkdirAll(out, 0o700); err != nil {
			return fmt.Errorf("per-service dir: %w", err)
		}
		if err := os.Chmod(out, 0o700); err != nil {
			return fmt.Errorf("per-service dir: %w", err)
		}
		for _, f := range []struct{ from, to string }{
			{"ca.pem", "ca.pem"}, {svc + "-key.pem", "key.pem"}, {svc + ".pem", "cert.pem"},
		} {
			data, err := os.ReadFile(filepath.Join(dir, f.from))
			if err != nil {
				return fmt.Errorf("per-service files: %w", err)
			}
			dst := filepath.Join(out, f.to)
			if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, data) {
				continue
			}
			if err := mtls.WriteFileAtomic(dst, data, 0o600); err != nil {
				return err
			}
		}
	}
	return nil
}
