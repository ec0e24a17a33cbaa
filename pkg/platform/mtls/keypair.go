package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// KeyPairConfig names the PEM files of a serving certificate (no client certificates asked, no
// shopmesh identity required): the gateway's public HTTPS. Reload > 0 polls the files at that
// interval, as Source does.
type KeyPairConfig struct {
	CertFile string // leaf certificate, optionally followed by intermediates
	KeyFile  string
	Reload   time.Duration
	Logger   *slog.Logger // nil discards
}

// KeyPair is a serving certificate reloaded from its files like Source's (the same reloader): a
// replaced pair is presented to the connections that start after the next check, with no restart; a
// pair that does not load (unreadable, half-written, key not matching) is ignored, logged and counted,
// and the previous one stays in use.
type KeyPair struct {
	r reloader[tls.Certificate]
}

// LoadKeyPair reads the pair once (it must load) and, if cfg.Reload > 0, starts polling it. Call Close
// to stop polling.
func LoadKeyPair(cfg KeyPairConfig) (*KeyPair, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("tls: CertFile and KeyFile are required")
	}
	if cfg.Reload < 0 {
		return nil, errors.New("tls: negative Reload")
	}
	k := &KeyPair{}
	k.r = reloader[tls.Certificate]{
		files: []string{cfg.CertFile, cfg.KeyFile},
		parse: parseKeyPair, what: "https", log: cfg.Logger,
	}
	k.r.loaded = func(c *tls.Certificate) {
		k.r.log.Info("https certificate reloaded", "subject", c.Leaf.Subject.String(), "serial", c.Leaf.SerialNumber.String(),
			"not_after", c.Leaf.NotAfter)
		k.warnValidity(c.Leaf)
	}
	if err := k.r.start(cfg.Reload); err != nil {
		return nil, err
	}
	k.warnValidity(k.Certificate())
	return k, nil
}

func parseKeyPair(raw [][]byte) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(raw[0], raw[1])
	if err != nil {
		return nil, fmt.Errorf("https: key pair: %w", err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("https: leaf: %w", err)
		}
	}
	return &cert, nil
}

// warnValidity logs a certificate clients will refuse; it is still served, because a fresh one may
// land at the next reload.
func (k *KeyPair) warnValidity(leaf *x509.Certificate) {
	if now := time.Now(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		k.r.log.Warn("https certificate outside its validity period", "subject", leaf.Subject.String(),
			"not_before", leaf.NotBefore, "not_after", leaf.NotAfter)
	}
}

// Close stops background polling. It is safe to call more than once.
func (k *KeyPair) Close() error {
	k.r.close()
	return nil
}

// Reload re-reads the files now (see KeyPair); the error is that of a pair that was ignored.
func (k *KeyPair) Reload() error { return k.r.reload() }

// Failures counts reloads that were ignored.
func (k *KeyPair) Failures() uint64 { return k.r.failures.Load() }

// Certificate returns the current leaf certificate.
func (k *KeyPair) Certificate() *x509.Certificate { return k.r.current().Leaf }

// ServerConfig returns a server TLS configuration presenting the current pair at each handshake:
// TLS 1.2 or 1.3, for TLS 1.2 only ECDHE suites with AEAD ciphers (forward secrecy, no CBC, no RSA key
// exchange), HTTP/2 and HTTP/1.1 offered through ALPN. No client certificate is asked for.
func (k *KeyPair) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{ // TLS 1.2 only; TLS 1.3's suites are not configurable (all AEAD)
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return k.r.current(), nil
		},
	}
}
