package mtls

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/credentials"
)

// Config names the PEM files of one service. Reload > 0 polls the files at
// that interval; zero leaves reloading to explicit Reload calls.
type Config struct {
	CAFile   string // trust bundle: one or more CA certificates
	CertFile string // leaf certificate (optionally followed by intermediates)
	KeyFile  string
	Reload   time.Duration
	Logger   *slog.Logger // nil discards
}

// Validate reports missing fields.
func (c Config) Validate() error {
	if c.CAFile == "" || c.CertFile == "" || c.KeyFile == "" {
		return errors.New("mtls: CAFile, CertFile and KeyFile are required")
	}
	if c.Reload < 0 {
		return errors.New("mtls: negative Reload")
	}
	return nil
}

// material is one consistent cert+key+CA snapshot; it is swapped whole.
type material struct {
	cert    *tls.Certificate
	service string
	pool    *x509.CertPool
}

// Source holds the current certificate, key and trust bundle and hands out
// tls.Configs that read them on every handshake, so rotated files take effect
// without a restart.
type Source struct {
	r reloader[material]
}

// Load reads the files once (they must be complete and consistent) and, if
// cfg.Reload > 0, starts polling them. Call Close to stop polling.
func Load(cfg Config) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Source{}
	s.r = reloader[material]{
		files: []string{cfg.CAFile, cfg.CertFile, cfg.KeyFile},
		parse: func(raw [][]byte) (*material, error) { return parse(raw[0], raw[1], raw[2]) },
		what:  "mtls", log: cfg.Logger,
	}
	s.r.loaded = func(m *material) {
		s.r.log.Info("mtls reloaded", "identity", SPIFFEID(m.service).String(), "serial", m.cert.Leaf.SerialNumber.String(),
			"not_after", m.cert.Leaf.NotAfter)
		s.warnValidity(m)
	}
	if err := s.r.start(cfg.Reload); err != nil {
		return nil, err
	}
	s.warnValidity(s.r.current())
	return s, nil
}

// Close stops background polling. It is safe to call more than once.
func (s *Source) Close() error {
	s.r.close()
	return nil
}

// Reload re-reads the files and swaps in the new material if it is complete
// and consistent. An incomplete or mismatched set (for example a certificate
// written before its key) is ignored: the previous material stays in use, the
// failure is logged and counted, and the error is returned.
func (s *Source) Reload() error { return s.r.reload() }

// warnValidity logs an own certificate peers will refuse; it is still served,
// because a fresh one may land at the next reload.
func (s *Source) warnValidity(m *material) {
	now := time.Now()
	if leaf := m.cert.Leaf; now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		s.r.log.Warn("mtls certificate outside its validity period", "identity", SPIFFEID(m.service).String(),
			"not_before", leaf.NotBefore, "not_after", leaf.NotAfter)
	}
}

// Failures counts reloads that were ignored because the files were unreadable,
// incomplete or inconsistent.
func (s *Source) Failures() uint64 { return s.r.failures.Load() }

// Service is the shopmesh identity of the current certificate.
func (s *Source) Service() string { return s.r.current().service }

// Certificate returns the current leaf certificate.
func (s *Source) Certificate() *x509.Certificate { return s.r.current().cert.Leaf }

func parse(caRaw, certRaw, keyRaw []byte) (*material, error) {
	pool, err := parseBundle(caRaw)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certRaw, keyRaw)
	if err != nil {
		return nil, fmt.Errorf("mtls: key pair: %w", err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("mtls: leaf: %w", err)
		}
	}
	svc, err := ServiceFromCert(cert.Leaf)
	if err != nil {
		return nil, fmt.Errorf("mtls: own certificate: %w", err)
	}
	return &material{cert: &cert, service: svc, pool: pool}, nil
}

// parseBundle is stricter than CertPool.AppendCertsFromPEM, which silently
// skips a truncated trailing block: a half-written bundle must be refused.
func parseBundle(raw []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	rest := raw
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("mtls: CA bundle: unexpected PEM block %q", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("mtls: CA bundle: %w", err)
		}
		if !c.IsCA {
			return nil, errors.New("mtls: CA bundle: certificate is not a CA")
		}
		pool.AddCert(c)
		n++
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("mtls: CA bundle: trailing data (incomplete write?)")
	}
	if n == 0 {
		return nil, errors.New("mtls: CA bundle: no certificates")
	}
	return pool, nil
}

// ServerConfig returns a TLS 1.3 server configuration that requires and
// verifies a client certificate from the current trust bundle and a valid
// shopmesh identity. Each handshake uses the material current at that moment.
func (s *Source) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		NextProtos: []string{"h2"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := s.r.current()
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				ClientAuth:   tls.RequireAndVerifyClientCert,
				NextProtos:   []string{"h2"},
				Certificates: []tls.Certificate{*m.cert},
				ClientCAs:    m.pool,
				// Runs on resumed sessions too, unlike VerifyPeerCertificate;
				// it re-checks the chain against the bundle current now, so a
				// removed CA cannot come back through a session ticket.
				VerifyConnection: func(cs tls.ConnectionState) error {
					if !cs.DidResume && len(cs.VerifiedChains) > 0 {
						// A full handshake: crypto/tls has just verified the chain against
						// m.pool for client auth; verifying it again would double the
						// handshake's most expensive step.
						_, err := ServiceFromCert(cs.PeerCertificates[0])
						return err
					}
					_, err := verifyPeer(cs, m.pool, x509.ExtKeyUsageClientAuth)
					return err
				},
			}, nil
		},
	}
}

// ClientConfig returns a TLS 1.3 client configuration presenting the current
// certificate and accepting only a server that chains to the current trust
// bundle and carries the identity spiffe://shopmesh.local/<expectedService>.
// An empty expectedService accepts any valid shopmesh identity.
//
// Host names are not checked: the SPIFFE identity is what is authorized, and
// the roots must be read per handshake, which tls.Config.RootCAs cannot do.
func (s *Source) ClientConfig(expectedService string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.r.current().cert, nil
		},
		// Verification is done in full by VerifyConnection below.
		InsecureSkipVerify: true, //nolint:gosec // VerifyConnection verifies the chain and the SPIFFE id
		VerifyConnection: func(cs tls.ConnectionState) error {
			svc, err := verifyPeer(cs, s.r.current().pool, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if expectedService != "" && svc != expectedService {
				return fmt.Errorf("%w: server is %q, want %q", ErrIdentity, svc, expectedService)
			}
			return nil
		},
	}
}

func verifyPeer(cs tls.ConnectionState, pool *x509.CertPool, usage x509.ExtKeyUsage) (string, error) {
	if len(cs.PeerCertificates) == 0 {
		return "", errors.New("mtls: peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}); err != nil {
		return "", fmt.Errorf("mtls: verify peer: %w", err)
	}
	return ServiceFromCert(leaf)
}

// ServerCredentials returns gRPC server credentials backed by ServerConfig.
func (s *Source) ServerCredentials() credentials.TransportCredentials {
	return credentials.NewTLS(s.ServerConfig())
}

// ClientCredentials returns gRPC client credentials for calling service.
func (s *Source) ClientCredentials(service string) credentials.TransportCredentials {
	return credentials.NewTLS(s.ClientConfig(service))
}
