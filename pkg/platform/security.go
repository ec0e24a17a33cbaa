package platform

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// securityOptions is what New's options say about security (WithPolicy).
type securityOptions struct {
	rules    authz.Rules
	hasRules bool
}

// WithPolicy declares who may call the service's methods (see authz.Rules; the service keeps them next
// to its RPC code). With TLS on, servers enforce them unless Config.AuthzPolicyFile names a file, which
// replaces them entirely; a server with TLS on and neither refuses every call (deny by default). With TLS
// off nothing is enforced (dev and test only), but the rules are still checked at New.
func WithPolicy(rules authz.Rules) Option {
	return func(o *options) { o.security.rules, o.security.hasRules = rules, true }
}

// security is what Config.TLS, Config.AuthzPolicyFile, Config.AuthzEdge and WithPolicy turn into: one
// reloading certificate source shared by every server and client of the process, and the authorizer
// servers get by default.
type security struct {
	source     *mtls.Source // nil when TLS is off
	authorizer authz.Authorizer
	edge       string // the service whose customer metadata servers believe (authz.CustomerFrom)
}

func newSecurity(cfg config.Config, o securityOptions, logger *slog.Logger) (*security, error) {
	// Parsed even with TLS off, so a broken policy fails in dev too rather than first in production.
	policy, source, err := loadPolicy(cfg, o)
	if err != nil {
		return nil, err
	}
	if !cfg.TLS.Enabled() {
		return &security{authorizer: authz.Unenforced(logger), edge: cfg.AuthzEdge}, nil
	}
	authorizer := noPolicy(logger)
	if policy != nil {
		policy.AllowReflection = cfg.Profile == config.Dev
		authorizer = policy
	}
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
		"not_after", src.Certificate().NotAfter, "policy", source, "edge", cfg.AuthzEdge)
	return &security{source: src, authorizer: authorizer, edge: cfg.AuthzEdge}, nil
}

// loadPolicy returns the policy of the file if one is named, else of the rules given to WithPolicy, else
// nil; and where it came from, for the log. Rules are checked even when a file replaces them.
func loadPolicy(cfg config.Config, o securityOptions) (*authz.Policy, string, error) {
	var fromRules *authz.Policy
	if o.hasRules {
		p, err := authz.NewPolicy(o.rules, cfg.AuthzEdge)
		if err != nil {
			return nil, "", fmt.Errorf("platform.WithPolicy: %w", err)
		}
		fromRules = p
	}
	switch {
	case cfg.AuthzPolicyFile != "":
		p, err := authz.LoadPolicy(cfg.AuthzPolicyFile)
		return p, cfg.AuthzPolicyFile, err
	case fromRules != nil:
		return fromRules, "service rules", nil
	}
	return nil, "none", nil
}

// noPolicy is the authorizer of a TLS server without a policy: every call but health checks is refused,
// and the first refusal is logged as the configuration error it is. (A process that only dials, like the
// gateway, needs no policy, so New cannot refuse it.)
func noPolicy(logger *slog.Logger) authz.Authorizer {
	var once sync.Once
	return authz.Func(func(_ context.Context, fullMethod string) error {
		if strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/") {
			return nil
		}
		once.Do(func() {
			logger.Error("authorization: no policy, every call is refused; pass platform.WithPolicy(rules) to New or set AuthzPolicyFile",
				"method", fullMethod)
		})
		return status.Error(codes.PermissionDenied, "permission denied: the server has no authorization policy")
	})
}

// serverOptions returns the transport credentials of a server and names the edge in every call's
// context (nothing when TLS is off).
func (s *security) serverOptions() []grpc.ServerOption {
	if s.source == nil {
		return nil
	}
	// Innermost (after the platform's chain): the handler's context names the edge for authz.CustomerFrom.
	return []grpc.ServerOption{
		grpc.Creds(s.source.ServerCredentials()),
		grpc.ChainUnaryInterceptor(authz.EdgeUnaryServerInterceptor(s.edge)),
		grpc.ChainStreamInterceptor(authz.EdgeStreamServerInterceptor(s.edge)),
	}
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
