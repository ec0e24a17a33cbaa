package mtls

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// skew backdates NotBefore so hosts with slightly slow clocks accept new certificates.
const skew = 5 * time.Minute

// DirOptions says what EnsureDir keeps in a certificate directory (the layout of `make certs`):
// ca.pem (the trust bundle: the active CA first, then older CAs still trusted), ca-key.pem (the active
// CA's key), and <service>.pem / <service>-key.pem per service.
type DirOptions struct {
	Dir      string
	Services []string
	TTL      time.Duration // leaf lifetime
	CATTL    time.Duration // CA lifetime
	// Renew reissues every leaf even if still valid.
	Renew bool
	// RotateCA makes a new active CA; the previous ones stay in the bundle (still trusted) until
	// DropOldCAs, and every leaf is reissued under the new CA after Propagate.
	RotateCA bool
	// Propagate is waited between writing the new bundle and the leaves signed by the new CA, so that
	// every process has reloaded the bundle (more than their TLS reload interval) before a peer presents a
	// certificate only the new CA vouches for.
	Propagate time.Duration
	// DropOldCAs rewrites the bundle with the active CA only (the last step of a CA rotation, once every
	// leaf has been reissued under it).
	DropOldCAs bool
	Now        time.Time
	Sleep      func(time.Duration) // nil = time.Sleep
}

// DirResult says what EnsureDir did.
type DirResult struct {
	CAIssued bool
	Issued   []string
	Kept     []string
	// BundleCAs is the number of CAs in ca.pem afterwards; Dropped the number DropOldCAs removed.
	BundleCAs int
	Dropped   int
}

func (r DirResult) String() string {
	var b strings.Builder
	if r.CAIssued {
		b.WriteString("issued CA\n")
	} else {
		b.WriteString("kept CA\n")
	}
	for _, s := range r.Issued {
		fmt.Fprintf(&b, "issued %s\n", s)
	}
	for _, s := range r.Kept {
		fmt.Fprintf(&b, "kept %s\n", s)
	}
	if r.Dropped > 0 {
		fmt.Fprintf(&b, "dropped %d old CA(s)\n", r.Dropped)
	}
	fmt.Fprintf(&b, "bundle holds %d CA(s)\n", r.BundleCAs)
	return b.String()
}

// Validate reports bad options.
func (o DirOptions) Validate() error {
	switch {
	case o.Dir == "":
		return errors.New("-out is required")
	case len(o.Services) == 0:
		return errors.New("-services is required")
	case o.TTL <= 0 || o.CATTL <= 0:
		return errors.New("-ttl and -ca-ttl must be positive")
	case o.TTL > o.CATTL:
		return errors.New("-ttl must not exceed -ca-ttl")
	case o.Propagate < 0:
		return errors.New("-propagate must be >= 0")
	case o.RotateCA && o.DropOldCAs:
		return errors.New("rotate the CA and drop the old ones in two runs, after every process has the new leaves")
	}
	for _, s := range o.Services {
		if !ValidService(s) {
			return fmt.Errorf("bad service name %q", s)
		}
	}
	return nil
}

// EnsureDir makes sure o.Dir holds a valid CA and a valid leaf per service: valid files are kept
// unless o.Renew; a new CA forces new leaves. Every file is written atomically, key before
// certificate; Source ignores a pair until both have landed. Development only: the CA key sits next
// to the certificates.
func EnsureDir(o DirOptions) (DirResult, error) {
	var res DirResult
	if err := o.Validate(); err != nil {
		return res, err
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.Sleep == nil {
		o.Sleep = time.Sleep
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return res, fmt.Errorf("out dir: %w", err)
	}
	caCert, caKey := filepath.Join(o.Dir, "ca.pem"), filepath.Join(o.Dir, "ca-key.pem")
	ca, older, err := loadDirCA(caCert, caKey, o.Now, o.TTL)
	if err != nil || o.RotateCA {
		if ca != nil {
			older = append([]*x509.Certificate{ca.Cert}, older...) // still trusted until dropped
		}
		if ca, err = NewCA("shopmesh dev CA "+o.Now.UTC().Format("20060102T150405"), o.Now.Add(-skew), o.CATTL+skew); err != nil {
			return res, err
		}
		if err := WriteFileAtomic(caKey, ca.KeyPEM, 0o600); err != nil {
			return res, err
		}
		if err := WriteFileAtomic(caCert, bundlePEM(ca.Cert, older), 0o644); err != nil {
			return res, err
		}
		res.CAIssued = true
		if len(older) > 0 && o.Propagate > 0 {
			o.Sleep(o.Propagate)
		}
	}
	if o.DropOldCAs && len(older) > 0 {
		if err := WriteFileAtomic(caCert, bundlePEM(ca.Cert, nil), 0o644); err != nil {
			return res, err
		}
		res.Dropped, older = len(older), nil
	}
	res.BundleCAs = 1 + len(older)
	seen := map[string]bool{}
	for _, svc := range o.Services {
		if seen[svc] {
			continue
		}
		seen[svc] = true
		cert, key := filepath.Join(o.Dir, svc+".pem"), filepath.Join(o.Dir, svc+"-key.pem")
		if !o.Renew && !res.CAIssued && leafValid(cert, key, svc, ca, o.Now) {
			res.Kept = append(res.Kept, svc)
			continue
		}
		certPEM, keyPEM, err := ca.Issue(svc, o.Now.Add(-skew), o.TTL+skew)
		if err != nil {
			return res, err
		}
		if err := WriteFileAtomic(key, keyPEM, 0o600); err != nil {
			return res, err
		}
		if err := WriteFileAtomic(cert, certPEM, 0o644); err != nil {
			return res, err
		}
		res.Issued = append(res.Issued, svc)
	}
	slices.Sort(res.Issued)
	slices.Sort(res.Kept)
	return res, nil
}

func bundlePEM(active *x509.Certificate, older []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range append([]*x509.Certificate{active}, older...) {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// loadDirCA returns the active CA (the first certificate of the bundle, matching ca-key.pem) if it is
// still valid long enough to cover a new leaf, and the bundle's other CAs that are still valid. When the
// active CA cannot be used, ca is non-nil only if it is still valid at all (so it stays trusted).
func loadDirCA(certPath, keyPath string, now time.Time, ttl time.Duration) (ca *CA, older []*x509.Certificate, err error) {
	bundle, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	first, rest := pem.Decode(bundle)
	if first == nil {
		return nil, nil, errors.New("ca.pem holds no certificate")
	}
	for {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil && c.IsCA && now.Before(c.NotAfter) {
			older = append(older, c)
		}
	}
	if ca, err = ParseCA(pem.EncodeToMemory(first), keyPEM); err != nil {
		return nil, older, err
	}
	if now.Before(ca.Cert.NotBefore) || now.Add(ttl).After(ca.Cert.NotAfter) {
		if !now.Before(ca.Cert.NotAfter) {
			ca = nil // expired: nobody can use it any more
		}
		return ca, older, errors.New("CA not valid for a new leaf")
	}
	return ca, older, nil
}

func leafValid(certPath, keyPath, svc string, ca *CA, now time.Time) bool {
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
	got, err := ServiceFromCert(leaf)
	return err == nil && got == svc
}
