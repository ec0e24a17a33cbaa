package platform

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/stats"

	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/deadline"
	"github.com/shopmesh/shopmesh/pkg/platform/recovery"
	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/validation"
)

type serverOptions struct {
	authorizer   authz.Authorizer
	validator    validation.Func
	noValidation bool
	stats        []stats.Handler
	unary        []grpc.UnaryServerInterceptor
	stream       []grpc.StreamServerInterceptor
	grpcOptions  []grpc.ServerOption
}

// ServerOption customizes NewServer.
type ServerOption func(*serverOptions)

// WithAuthorizer replaces the authorization policy. The default: with TLS on, the per-method policy of
// Config.AuthzPolicyFile, else the rules given to platform.WithPolicy, deny by default (without either,
// every call but health checks is refused); with TLS off (dev and test only), nothing is enforced and
// that is logged once.
func WithAuthorizer(a authz.Authorizer) ServerOption {
	return func(o *serverOptions) { o.authorizer = a }
}

// WithValidator replaces the request validator (default: the shopmesh proto validator).
func WithValidator(v validation.Func) ServerOption {
	return func(o *serverOptions) { o.validator, o.noValidation = v, v == nil }
}

// WithStatsHandler adds a grpc stats handler (tracing, metrics): it sees every call, rejected ones included.
func WithStatsHandler(h stats.Handler) ServerOption {
	return func(o *serverOptions) { o.stats = append(o.stats, h) }
}

// WithInterceptors adds interceptors right after panic recovery (logging, tracing, metrics hooks), so they
// observe the outcome of every later stage.
func WithInterceptors(unary []grpc.UnaryServerInterceptor, stream []grpc.StreamServerInterceptor) ServerOption {
	return func(o *serverOptions) {
		o.unary = append(o.unary, unary...)
		o.stream = append(o.stream, stream...)
	}
}

// WithGRPCOptions appends raw grpc.ServerOptions (e.g. grpc.Creds for mTLS) after the platform's own.
func WithGRPCOptions(opts ...grpc.ServerOption) ServerOption {
	return func(o *serverOptions) { o.grpcOptions = append(o.grpcOptions, opts...) }
}

// NewServer returns a gRPC server with the platform's interceptor chain, limits and keepalive, the health
// service registered and, in the dev profile only, reflection. Register handlers on it, then call Serve.
//
// The chain, outermost first (the same for unary and streaming calls):
//
//  1. recovery   — a panic anywhere below becomes INTERNAL "internal error"; the stack is logged.
//  2. hooks      — WithInterceptors (logging/tracing/metrics); stats handlers wrap everything anyway.
//     (streams only) stopping — the stream's context is also cancelled by Stopping, and a stream that
//     ends with an error after that ends with UNAVAILABLE "server is shutting down" (reason
//     SHUTTING_DOWN) instead, so its client reconnects to another instance; see stoppingStream.
//  3. deadline   — default deadline for calls without one, clamp to the maximum (streams have their own,
//     longer pair).
//  4. validation — proto validation; INVALID_ARGUMENT with google.rpc.BadRequest.
//  5. ratelimit  — per-method token bucket and in-flight limits; RESOURCE_EXHAUSTED with RetryInfo.
//  6. authz      — the Authorizer; PERMISSION_DENIED.
//  7. fault      — configured latency/aborts (off by default, refused in prod), closest to the handler so
//     it behaves like a slow or failing handler.
//
// For unary calls stages 3–7 run inside one interceptor (unaryStages), for speed; the order is the same.
// Without hooks, recovery is part of that interceptor too (grpc allocates a closure per chained
// interceptor per call, and calls a lone interceptor directly).
//
// Health and reflection calls skip deadline, rate limits and faults: health Watch streams live as long as
// the connection, and shedding health checks would make clients think a busy instance is dead.
func (p *Platform) NewServer(opts ...ServerOption) *grpc.Server {
	var o serverOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.authorizer == nil {
		o.authorizer = p.sec.authorizer
	}
	if o.validator == nil && !o.noValidation {
		o.validator = validation.NewProto()
	}
	dp := deadline.Policy{Default: p.cfg.Server.DefaultDeadline, Max: p.cfg.Server.MaxDeadline}
	sdp := deadline.Policy{Default: p.cfg.Server.StreamDefaultDeadline, Max: p.cfg.Server.StreamMaxDeadline}

	var unary []grpc.UnaryServerInterceptor
	if len(o.unary) == 0 {
		// Recovery and stages 3–7 in one interceptor: grpc then calls it without a chain closure.
		unary = append(unary, recovery.UnaryServerInterceptorAround(p.logger, p.unaryStages(dp, o.validator, o.authorizer)))
	} else {
		unary = append(unary, recovery.UnaryServerInterceptor(p.logger))
		unary = append(unary, o.unary...)
		unary = append(unary, p.unaryStages(dp, o.validator, o.authorizer))
	}

	stream := []grpc.StreamServerInterceptor{recovery.StreamServerInterceptor(p.logger)}
	stream = append(stream, o.stream...)
	stream = append(stream, skipStream(stoppingStream(p.stopping)))
	stream = append(stream, skipStream(deadline.StreamServerInterceptor(sdp)))
	if o.validator != nil {
		stream = append(stream, validation.StreamServerInterceptor(o.validator))
	}
	stream = append(stream,
		skipStream(p.limiter.StreamServerInterceptor()),
		authz.StreamServerInterceptor(o.authorizer, p.logger),
		skipStream(p.faults.StreamServerInterceptor()),
	)

	s := p.cfg.Server
	ka := s.Keepalive
	gopts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(s.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(s.MaxSendMsgSize),
		grpc.MaxConcurrentStreams(s.MaxConcurrentStreams),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:                  ka.Time,
			Timeout:               ka.Timeout,
			MaxConnectionIdle:     ka.MaxConnectionIdle,
			MaxConnectionAge:      ka.MaxConnectionAge,
			MaxConnectionAgeGrace: ka.MaxConnectionAgeGrace,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             ka.MinTime,
			PermitWithoutStream: ka.PermitWithoutStream,
		}),
	}
	// Tracing and the grpc_server_* metrics: one stats handler, which also sees rejected calls.
	gopts = append(gopts, grpc.StatsHandler(p.obs.tel.ServerStatsHandler()))
	for _, h := range o.stats {
		gopts = append(gopts, grpc.StatsHandler(h))
	}
	gopts = append(gopts, p.sec.serverOptions()...)
	gopts = append(gopts, o.grpcOptions...)

	srv := grpc.NewServer(gopts...)
	healthgrpc.RegisterHealthServer(srv, p.health.service())
	if p.cfg.Profile == config.Dev {
		reflection.Register(srv)
	}
	return srv
}

// unaryStages runs stages 3–7 of the unary chain (deadline, validation, rate limit, authz, fault) in one
// interceptor, with the same order and outcomes as the separate stages the stream chain uses: grpc
// allocates a closure per chained interceptor per call, and each stage is only a check plus, for the
// deadline and the limiter, something to release when the call ends.
func (p *Platform) unaryStages(dp deadline.Policy, validate validation.Func, az authz.Authorizer) grpc.UnaryServerInterceptor {
	limiter, faults := p.limiter, p.faults
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		infra := exempt(info.FullMethod)
		if !infra {
			var cancel context.CancelFunc
			ctx, cancel = dp.Apply(ctx)
			defer cancel()
		}
		if validate != nil {
			if err := validation.Check(validate, req); err != nil {
				return nil, err
			}
		}
		if !infra {
			t, err := limiter.Admit(info.FullMethod)
			if err != nil {
				return nil, err
			}
			defer t.Release()
		}
		if err := az.Authorize(ctx, info.FullMethod); err != nil {
			return nil, authz.Refuse(ctx, p.logger, info.FullMethod, err)
		}
		if !infra {
			if err := faults.Inject(ctx, info.FullMethod); err != nil {
				return nil, err
			}
		}
		return handler(ctx, req)
	}
}

// exempt reports infrastructure methods that skip deadline, rate limits and fault injection.
func exempt(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/") ||
		strings.HasPrefix(fullMethod, "/grpc.reflection.")
}

func skipStream(next grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if exempt(info.FullMethod) {
			return handler(srv, ss)
		}
		return next(srv, ss, info, handler)
	}
}

// ReasonShuttingDown is the ErrorInfo reason of the UNAVAILABLE a stream ends with when its server
// drains: the call is safe to open again, and the client's balancer sends it to another instance.
const ReasonShuttingDown = "SHUTTING_DOWN"

// errStopping is the cause of a stream context cancelled because the server is draining.
var errStopping = errors.New("server is shutting down")

func shuttingDown() error {
	return rpcerr.WithReason(codes.Unavailable, ReasonShuttingDown, "server is shutting down; reconnect to another instance", nil)
}

// stoppingStream gives every stream a context that stopping cancels too, so streams that live as long
// as their client wants (watches, bidi sessions) end at drain instead of holding GracefulStop until
// its timeout. A stream whose handler then returns an error while its caller is still there ends with
// UNAVAILABLE (shuttingDown): whatever the handler returned is a consequence of the cancellation, and
// retrying elsewhere is right even in the rare case it was not. A handler returning nil ends OK.
//
// A handler blocked in Recv waiting for its client is not woken by a context, so for client-streaming
// methods RecvMsg also returns the shutdown error at once when stopping comes; the read it abandons
// ends when the stream does. That read runs in a goroutine of its own, one per received message: about
// 2 µs more per message on a loopback benchmark, nothing beside a handler that does real work for each
// (an import line, a cart quote).
func stoppingStream(stopping context.Context) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		parent := ss.Context()
		ctx, cancel := context.WithCancelCause(parent)
		defer cancel(nil)
		// No goroutine per stream: the callback hangs on stopping's list of children.
		unhook := context.AfterFunc(stopping, func() { cancel(errStopping) })
		defer unhook()
		err := handler(srv, &stoppableStream{ServerStream: ss, ctx: ctx, interruptible: info.IsClientStream})
		if err != nil && parent.Err() == nil && errors.Is(context.Cause(ctx), errStopping) {
			return shuttingDown()
		}
		return err
	}
}

type stoppableStream struct {
	grpc.ServerStream
	ctx           context.Context
	interruptible bool // RecvMsg may wait on the client: make it return at drain
	abandoned     bool // a read was left behind; the stream is over
}

func (s *stoppableStream) Context() context.Context { return s.ctx }

func (s *stoppableStream) RecvMsg(m any) error {
	if !s.interruptible {
		return s.ServerStream.RecvMsg(m)
	}
	if s.abandoned || errors.Is(context.Cause(s.ctx), errStopping) {
		return shuttingDown()
	}
	done := make(chan error, 1)
	go func() { done <- s.ServerStream.RecvMsg(m) }()
	select {
	case err := <-done:
		return err
	case <-s.ctx.Done():
		if !errors.Is(context.Cause(s.ctx), errStopping) {
			return <-done // the caller went away: the transport ends the read as well
		}
		// The read goes on writing into m until the stream ends; the handler is told to return.
		s.abandoned = true
		return shuttingDown()
	}
}
