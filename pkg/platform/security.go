package platform

import (
	"fmt"
	"log/slog"

	"google.golang.org/grpc"

	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// security is what Config.TLS and Config.AuthzPolicyFile turn into: one reloading certificate source
// shared by every server and client of the process, and the authorizer servers get by default.
type security struct {
	source     *mtls.Source // nil when TLS is off
	authorizer authz.Authorizer
}

func newSecurity(cfg config.Config, logger *slog.Logger) (*security, error) {
	if !cfg.TLS.Enabled() {
		if cfg.AuthzPolicyFile != "" {
			// Still parsed, so a broken file fails in dev too rather than first in production.
			if _, err := authz.LoadPolicy(cfg.AuthzPolicyFile); err != nil {
				return nil, err
			}
		}
		return &security{authorizer: authz.Unenforced(logger)}, nil
	}
	policy, err := authz.LoadPolicy(cfg.AuthzPolicyFile)
	if err != nil {
		return nil, err
	}
	policy.AllowReflection = cfg.Profile == config.Dev
	src, err := mtls.Load(mtls.Config{
		CAFile: cfg.TLS.CAFile, CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile,
		Reload: cfg.TLS.ReloadInterval, Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	if got := src.Service(); got != cfg.Service {
		_ = src.Close()
		return nil, fmt.Errorf("tls: certificate %s is for service %q, this is %q", cfg.TLS.CertFile, got, cfg.Service)
	}
	logger.Info("mtls on", "identity", mtls.SPIFFEID(src.Service()).String(), "serial", src.Certificate().SerialNumber.String(),
		"not_after", src.Certificate().NotAfter, "policy", policyName(cfg.AuthzPolicyFile))
	return &security{source: src, authorizer: policy}, nil
}

func policyName(path string) string {
	if path == "" {
		return "built-in"
	}
	return path
}

// serverOptions returns the transport credentials of a server (none when TLS is off).
func (s *security) serverOptions() []grpc.ServerOption {
	if s.source == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(s.source.ServerCredentials())}
}

// dialOptions returns the transport credentials for calling target, whose certificate must carry the
// identity spiffe://shopmesh.local/<target> (none when TLS is off: the dialer's insecure default stays).
func (s *security) dialOptions(target string) []grpc.DialOption {
	if s.source == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(s.source.ClientCredentials(target))}
}

// TLS returns the process's certificate source, nil when TLS is off: for a caller that needs the same
// identity outside Dial (the gateway's health checks, a healthcheck subcommand).
func (p *Platform) TLS() *mtls.Source { return p.sec.source }

func (s *security) close() error {
	if s.source == nil {
		return nil
	}
	return s.source.Close()
}
