package main

import (
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
	now        time.Time
}

type result struct {
	mtls.DirResult
	caIssued bool
	issued   []string
	kept     []string
}

// generate runs mtls.EnsureDir, which holds the logic so that deploy/localstack can call it too.
func generate(o options) (result, error) {
	r, err := mtls.EnsureDir(mtls.DirOptions{
		Dir: o.dir, Services: o.services, TTL: o.ttl, CATTL: o.caTTL, Renew: o.renew,
		RotateCA: o.rotateCA, DropOldCAs: o.dropOldCAs, Propagate: o.propagate, Now: o.now,
	})
	return result{DirResult: r, caIssued: r.CAIssued, issued: r.Issued, kept: r.Kept}, err
}
