package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// skew backdates NotBefore so hosts with slightly slow clocks accept new certificates.
const skew = 5 * time.Minute

type options struct {
	dir      string
	services []string
	ttl      time.Duration
	caTTL    time.Duration
	renew    bool
	now      time.Time
}

func (o options) validate() error {
	switch {
	case o.dir == "":
		return errors.New("-out is required")
	case len(o.services) == 0:
		return errors.New("-services is required")
	case o.ttl <= 0 || o.caTTL <= 0:
		return errors.New("-ttl and -ca-ttl must be positive")
	case o.ttl > o.caTTL:
		return errors.New("-ttl must not exceed -ca-ttl")
	}
	for _, s := range o.services {
		if !mtls.ValidService(s) {
			return fmt.Errorf("bad service name %q", s)
		}
	}
	return nil
}

type result struct {
	caIssued bool
	issued   []string
	kept     []string
}

func (r result) String() string {
	var b strings.Builder
	if r.caIssued {
		b.WriteString("issued CA\n")
	} else {
		b.WriteString("kept CA\n")
	}
	for _, s := range r.issued {
		fmt.Fprintf(&b, "issued %s\n", s)
	}
	for _, s := range r.kept {
		fmt.Fprintf(&b, "kept %s\n", s)
	}
	return b.String()
}

// generate makes sure o.dir holds a valid CA (ca.pem, ca-key.pem) and a valid
// leaf per service (<svc>.pem, <svc>-key.pem). Valid files are kept unless
// o.renew; a new CA forces new leaves. Every file is written atomically, key
// before certificate; mtls.Source ignores the pair until both have landed.
func generate(o options) (result, error) {
	var res result
	if err := o.validate(); err != nil {
		return res, err
	}
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return res, fmt.Errorf("out dir: %w", err)
	}
	caCert, caKey := filepath.Join(o.dir, "ca.pem"), filepath.Join(o.dir, "ca-key.pem")
	ca, err := loadCA(caCert, caKey, o.now, o.ttl)
	if err != nil {
		if ca, err = mtls.NewCA("shopmesh dev CA", o.now.Add(-skew), o.caTTL+skew); err != nil {
			return res, err
		}
		if err := mtls.WriteFileAtomic(caKey, ca.KeyPEM, 0o600); err != nil {
			return res, err
		}
		if err := mtls.WriteFileAtomic(caCert, ca.CertPEM, 0o644); err != nil {
			return res, err
		}
		res.caIssued = true
	}
	seen := map[string]bool{}
	for _, svc := range o.services {
		if seen[svc] {
			continue
		}
		seen[svc] = true
		cert, key := filepath.Join(o.dir, svc+".pem"), filepath.Join(o.dir, svc+"-key.pem")
		if !o.renew && !res.caIssued && leafValid(cert, key, svc, ca, o.now) {
			res.kept = append(res.kept, svc)
			continue
		}
		certPEM, keyPEM, err := ca.Issue(svc, o.now.Add(-skew), o.ttl+skew)
		if err != nil {
			return res, err
		}
		if err := mtls.WriteFileAtomic(key, keyPEM, 0o600); err != nil {
			return res, err
		}
		if err := mtls.WriteFileAtomic(cert, certPEM, 0o644); err != nil {
			return res, err
		}
		res.issued = append(res.issued, svc)
	}
	slices.Sort(res.issued)
	slices.Sort(res.kept)
	return res, nil
}

// loadCA returns the existing CA if it is readable and still valid long enough
// to cover a new leaf.
func loadCA(certPath, keyPath string, now time.Time, ttl time.Duration) (*mtls.CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	ca, err := mtls.ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if now.Before(ca.Cert.NotBefore) || now.Add(ttl).After(ca.Cert.NotAfter) {
		return nil, errors.New("CA not valid for a new leaf")
	}
	return ca, nil
}

func leafValid(certPath, keyPath, svc string, ca *mtls.CA, now time.Time) bool {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return false
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return false
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	// VerifyOptions.KeyUsages accepts any one listed usage; a leaf needs both.
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		opts := x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{u}}
		if _, err := leaf.Verify(opts); err != nil {
			return false
		}
	}
	got, err := mtls.ServiceFromCert(leaf)
	return err == nil && got == svc
}
