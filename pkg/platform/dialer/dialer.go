// Package dialer builds client connections the way every shopmesh service needs them: load balancing,
// health checking and retries declared in gRPC service config (never hand-written loops), per-address
// outlier ejection (package outlier), a circuit breaker per target above the retry layer, a default
// deadline for calls that carry none, and keepalive settings the servers accept.
//
// Retry only what is safe. The service config retries a method only when repeating it cannot do harm:
//
//   - its proto declares `option idempotency_level = NO_SIDE_EFFECTS` (reads, watch streams) or
//     `IDEMPOTENT` (a repeat with the same request, e.g. the same order id or idempotency key, returns the
//     first outcome instead of doing the work again); the levels are read from the file descriptors the
//     generated code registered (protoregistry.GlobalFiles, or Target.Files);
//   - or the Target lists it in Idempotent (for services whose protos we do not own).
//
// Every other method gets no retry policy: an UNAVAILABLE from a replica that died after committing
// must not be repeated on another replica. grpc-go's transparent retries still happen for those methods,
// which is safe: they cover attempts that never reached a server's handler (REFUSED_STREAM, GOAWAY before
// the stream was processed). A stream is retried only before its response headers arrive (gRFC A6).
package dialer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/balancer/leastrequest" // registers least_request_experimental
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // registers the client-side health check used by healthCheckConfig
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/shopmesh/shopmesh/pkg/platform/breaker"
	"github.com/shopmesh/shopmesh/pkg/platform/deadline"
	"github.com/shopmesh/shopmesh/pkg/platform/dialer/outlier"
	"github.com/shopmesh/shopmesh/pkg/platform/fault"
)

// Load-balancing policies a target may choose.
const (
	RoundRobin   = "round_robin"
	PickFirst    = "pick_first"
	LeastRequest = "least_request"
)

// grpc-go caps maxAttempts at 5 (gRFC A6); we refuse more instead of silently capping.
const maxAttemptsLimit = 5

// RetryPolicy is the retry part of the service config.
type RetryPolicy struct {
	// MaxAttempts counts the first attempt too; 1 disables retries. At most 5.
	MaxAttempts       int           `help:"attempts per call, the first included: 1 disables retries, at most 5"`
	InitialBackoff    time.Duration `help:"backoff before the first retry"`
	MaxBackoff        time.Duration `help:"longest backoff between retries"`
	BackoffMultiplier float64       `help:"backoff growth per retry (>= 1)"`
	// Codes are retried for the methods that are safe to repeat (see the package comment); by default
	// only UNAVAILABLE.
	Codes []string `help:"gRPC codes retried for methods safe to repeat, comma-separated"`
	// ThrottleMaxTokens and ThrottleTokenRatio configure retryThrottling: each failure costs a token, each
	// success gives back ThrottleTokenRatio, and retries stop while tokens <= max/2. 0 disables throttling.
	ThrottleMaxTokens  float64 `help:"retry throttling: token bucket size, retries stop while tokens <= half (0: no throttling)"`
	ThrottleTokenRatio float64 `help:"retry throttling: tokens given back per success"`
}

// Validate names the fields that are wrong.
func (r RetryPolicy) Validate() error {
	var errs []error
	if r.MaxAttempts < 1 || r.MaxAttempts > maxAttemptsLimit {
		errs = append(errs, fmt.Errorf("max_attempts: must be within 1-%d, got %d", maxAttemptsLimit, r.MaxAttempts))
	}
	if r.MaxAttempts > 1 {
		if r.InitialBackoff <= 0 {
			errs = append(errs, fmt.Errorf("initial_backoff: must be > 0, got %v", r.InitialBackoff))
		}
		if r.MaxBackoff < r.InitialBackoff {
			errs = append(errs, fmt.Errorf("max_backoff: must be >= initial_backoff (%v), got %v", r.InitialBackoff, r.MaxBackoff))
		}
		if r.BackoffMultiplier < 1 || math.IsInf(r.BackoffMultiplier, 0) {
			errs = append(errs, fmt.Errorf("backoff_multiplier: must be >= 1, got %v", r.BackoffMultiplier))
		}
		if len(r.Codes) == 0 {
			errs = append(errs, errors.New("codes: at least one retryable code is needed when max_attempts > 1"))
		}
	}
	if err := validCodes(r.Codes); err != nil {
		errs = append(errs, fmt.Errorf("codes: %w", err))
	}
	if r.ThrottleMaxTokens < 0 || r.ThrottleMaxTokens > 1000 {
		errs = append(errs, fmt.Errorf("throttle_max_tokens: must be within 0-1000, got %v", r.ThrottleMaxTokens))
	}
	if r.ThrottleMaxTokens > 0 && r.ThrottleTokenRatio <= 0 {
		errs = append(errs, fmt.Errorf("throttle_token_ratio: must be > 0 when throttling is on, got %v", r.ThrottleTokenRatio))
	}
	return errors.Join(errs...)
}

func validCodes(names []string) error {
	for _, n := range names {
		if c, ok := fault.ParseCode(n); !ok || c == 0 {
			return fmt.Errorf("%q is not a gRPC error code name", n)
		}
	}
	return nil
}

// Target describes how to call one dependency.
type Target struct {
	// LB is round_robin (default), pick_first or least_request.
	LB string
	// HealthCheck turns on client-side health checking: instances whose grpc.health.v1 status for
	// HealthService is not SERVING get no traffic. Ignored by pick_first, as in grpc-go.
	HealthCheck   bool
	HealthService string
	Retry         RetryPolicy
	// Idempotent lists methods ("/pkg.Service/Method" or "/pkg.Service/*") that are safe to repeat
	// although their protos declare no idempotency_level; they retry Retry.Codes and IdempotentCodes.
	Idempotent      []string
	IdempotentCodes []string
	// Files holds the descriptors whose idempotency_level options decide which methods are retried;
	// nil is protoregistry.GlobalFiles, where generated code registers itself.
	Files *protoregistry.Files
	// Outlier ejects slow or failing addresses (round_robin and least_request only).
	Outlier outlier.Config
}

// Validate names the fields that are wrong.
func (t Target) Validate() error {
	var errs []error
	switch t.LB {
	case "", RoundRobin, PickFirst, LeastRequest:
	default:
		errs = append(errs, fmt.Errorf("lb: must be %s, %s or %s, got %q", RoundRobin, PickFirst, LeastRequest, t.LB))
	}
	if err := t.Retry.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("retry: %w", err))
	}
	for _, m := range t.Idempotent {
		if _, _, err := splitMethod(m); err != nil {
			errs = append(errs, fmt.Errorf("idempotent: %w", err))
		}
	}
	if err := validCodes(t.IdempotentCodes); err != nil {
		errs = append(errs, fmt.Errorf("idempotent_codes: %w", err))
	}
	if err := t.Outlier.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("outlier: %w", err))
	}
	return errors.Join(errs...)
}

func splitMethod(m string) (svc, method string, err error) {
	parts := strings.Split(m, "/")
	if len(parts) != 3 || parts[0] != "" || parts[1] == "" || parts[2] == "" {
		return "", "", fmt.Errorf("%q: want \"/package.Service/Method\" or \"/package.Service/*\"", m)
	}
	if parts[2] == "*" {
		return parts[1], "", nil
	}
	return parts[1], parts[2], nil
}

type jsonName struct {
	Service string `json:"service,omitempty"`
	Method  string `json:"method,omitempty"`
}

type jsonRetry struct {
	MaxAttempts          int      `json:"maxAttempts"`
	InitialBackoff       string   `json:"initialBackoff"`
	MaxBackoff           string   `json:"maxBackoff"`
	BackoffMultiplier    float64  `json:"backoffMultiplier"`
	RetryableStatusCodes []string `json:"retryableStatusCodes"`
}

type jsonMethodConfig struct {
	Name        []jsonName `json:"name"`
	RetryPolicy *jsonRetry `json:"retryPolicy,omitempty"`
}

type jsonServiceConfig struct {
	LoadBalancingConfig []map[string]any `json:"loadBalancingConfig"`
	HealthCheckConfig   *struct {
		ServiceName string `json:"serviceName"`
	} `json:"healthCheckConfig,omitempty"`
	RetryThrottling *struct {
		MaxTokens  float64 `json:"maxTokens"`
		TokenRatio float64 `json:"tokenRatio"`
	} `json:"retryThrottling,omitempty"`
	MethodConfig []jsonMethodConfig `json:"methodConfig,omitempty"`
}

func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

// ServiceConfig renders the gRPC service config JSON for t.
func ServiceConfig(t Target) (string, error) {
	if err := t.Validate(); err != nil {
		return "", err
	}
	// The policy is registered before any service config is rendered, whether this one uses it or
	// not: grpc's balancer registry is a plain map that every NewClient, and every ClientConn's
	// resolver updates, read. Registered only with the first target that uses it, it was written
	// while other connections read it (the race detector's find).
	outlier.Register()
	var sc jsonServiceConfig
	var lb map[string]any
	switch t.LB {
	case PickFirst:
		lb = map[string]any{"pick_first": map[string]any{}}
	case LeastRequest:
		lb = map[string]any{"least_request_experimental": map[string]any{"choiceCount": 2}}
	default:
		lb = map[string]any{"round_robin": map[string]any{}}
	}
	if t.Outlier.Enabled && t.LB != PickFirst {
		lb = t.Outlier.LBConfig(lb)
	}
	sc.LoadBalancingConfig = []map[string]any{lb}
	if t.HealthCheck {
		sc.HealthCheckConfig = &struct {
			ServiceName string `json:"serviceName"`
		}{ServiceName: t.HealthService}
	}
	r := t.Retry
	if r.MaxAttempts > 1 {
		if r.ThrottleMaxTokens > 0 {
			sc.RetryThrottling = &struct {
				MaxTokens  float64 `json:"maxTokens"`
				TokenRatio float64 `json:"tokenRatio"`
			}{r.ThrottleMaxTokens, r.ThrottleTokenRatio}
		}
		policy := func(codes []string) *jsonRetry {
			return &jsonRetry{
				MaxAttempts:          r.MaxAttempts,
				InitialBackoff:       seconds(r.InitialBackoff),
				MaxBackoff:           seconds(r.MaxBackoff),
				BackoffMultiplier:    r.BackoffMultiplier,
				RetryableStatusCodes: upper(codes),
			}
		}
		// No default entry (the empty name): a method nobody declared safe is not retried.
		listed := map[string]bool{} // "svc/" for a whole service, "svc/method"
		if len(t.Idempotent) > 0 {
			mc := jsonMethodConfig{RetryPolicy: policy(union(r.Codes, t.IdempotentCodes))}
			for _, m := range t.Idempotent {
				svc, method, _ := splitMethod(m)
				if listed[svc+"/"+method] {
					continue // grpc refuses a name twice
				}
				listed[svc+"/"+method] = true
				mc.Name = append(mc.Name, jsonName{Service: svc, Method: method})
			}
			sc.MethodConfig = append(sc.MethodConfig, mc)
		}
		mc := jsonMethodConfig{RetryPolicy: policy(r.Codes)}
		for _, m := range RetryableMethods(t.Files) {
			svc, method, _ := splitMethod(m)
			if listed[svc+"/"] || listed[svc+"/"+method] {
				continue
			}
			mc.Name = append(mc.Name, jsonName{Service: svc, Method: method})
		}
		if len(mc.Name) > 0 {
			sc.MethodConfig = append(sc.MethodConfig, mc)
		}
	}
	b, err := json.Marshal(sc)
	if err != nil {
		return "", fmt.Errorf("service config: %w", err)
	}
	return string(b), nil
}

// RetryableMethods lists ("/pkg.Service/Method", sorted) the methods of files (nil: GlobalFiles) whose
// idempotency_level is NO_SIDE_EFFECTS or IDEMPOTENT: those the service config retries.
func RetryableMethods(files *protoregistry.Files) []string {
	if files == nil {
		files = protoregistry.GlobalFiles
	}
	var out []string
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		svcs := fd.Services()
		for i := range svcs.Len() {
			sd := svcs.Get(i)
			ms := sd.Methods()
			for j := range ms.Len() {
				if IdempotencyLevel(ms.Get(j)) != descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN {
					out = append(out, "/"+string(sd.FullName())+"/"+string(ms.Get(j).Name()))
				}
			}
		}
		return true
	})
	slices.Sort(out)
	return out
}

// IdempotencyLevel returns the method's declared idempotency_level (IDEMPOTENCY_UNKNOWN when absent).
func IdempotencyLevel(md protoreflect.MethodDescriptor) descriptorpb.MethodOptions_IdempotencyLevel {
	opts, ok := md.Options().(*descriptorpb.MethodOptions)
	if !ok || opts == nil {
		return descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN
	}
	return opts.GetIdempotencyLevel()
}

func upper(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.ToUpper(s)
	}
	return out
}

func union(a, b []string) []string {
	out := upper(a)
	for _, s := range upper(b) {
		found := false
		for _, x := range out {
			found = found || x == s
		}
		if !found {
			out = append(out, s)
		}
	}
	return out
}

// Keepalive is the client keepalive; Time must not be shorter than the servers' enforcement MinTime or
// they answer with GOAWAY ENHANCE_YOUR_CALM.
type Keepalive struct {
	Time                time.Duration `help:"ping a connection idle this long; not below the servers' SERVER_KEEPALIVE_MIN_TIME (0: off)"`
	Timeout             time.Duration `help:"close the connection when a ping is unanswered this long"`
	PermitWithoutStream bool          `help:"ping even while no call is open"`
}

// Options are everything needed to dial one target.
type Options struct {
	Target   Target
	Resolver resolver.Builder // nil for schemes registered by grpc (dns, passthrough)
	// DefaultDeadline and StreamDefaultDeadline are given to unary calls and streams without a deadline.
	DefaultDeadline       time.Duration
	StreamDefaultDeadline time.Duration
	Keepalive             Keepalive
	MaxRecvMsgSize        int
	Breaker               *breaker.Breaker // nil: no breaker
	// OnOutlier (may be nil) hears of every address ejected or returned; it runs under the balancer's
	// lock, so keep it to a log line.
	OnOutlier     func(outlier.Event)
	StatsHandlers []stats.Handler
	// Unary and Stream interceptors run inside the deadline and the breaker (tracing, metrics, auth).
	Unary []grpc.UnaryClientInterceptor
	// UnaryContext (may be nil) wraps the context of every unary call inside the default deadline and
	// before Unary (telemetry's attempt counter): what an interceptor that only adds a context value
	// would do, without the closure grpc allocates per chained interceptor per call.
	UnaryContext func(context.Context) context.Context
	Stream       []grpc.StreamClientInterceptor
	// Extra is appended last, so it can override anything above (e.g. transport credentials).
	Extra []grpc.DialOption
}

// DialOptions returns the grpc.DialOptions for o. Interceptor order, outermost first: default deadline,
// circuit breaker, o.Unary/o.Stream, then grpc's own retry layer; so the breaker sees one outcome per
// logical call and every attempt shares the call's deadline.
func DialOptions(o Options) ([]grpc.DialOption, error) {
	sc, err := ServiceConfig(o.Target)
	if err != nil {
		return nil, err
	}
	unary := []grpc.UnaryClientInterceptor{deadline.UnaryClientInterceptor(o.DefaultDeadline)}
	stream := []grpc.StreamClientInterceptor{deadline.StreamClientInterceptor(o.StreamDefaultDeadline)}
	if o.Target.Outlier.Enabled && o.Target.LB != PickFirst {
		// Streams count for failures only: their attempt lasts as long as the stream.
		stream = append(stream, markStream)
		if o.Resolver != nil {
			link := outlier.NewLink(o.OnOutlier)
			o.Resolver = linkedBuilder{Builder: o.Resolver, link: link}
			if o.Breaker != nil {
				o.Breaker.HoldWhile(link.Healthy)
			}
		}
	}
	var retried func(string) bool // retries of these calls avoid the address that failed them
	if o.Target.Outlier.Enabled && o.Target.LB != PickFirst && o.Target.Retry.MaxAttempts > 1 {
		retried = o.Target.retried()
	}
	switch {
	case o.Breaker != nil:
		// One interceptor for the unary stages: grpc allocates a closure per chained interceptor per call.
		unary[0] = guardUnary(o.DefaultDeadline, o.Breaker, retried, o.UnaryContext)
		stream = append(stream, breaker.StreamClientInterceptor(o.Breaker))
	default:
		if retried != nil {
			unary = append(unary, retryElsewhere(retried))
		}
		if o.UnaryContext != nil {
			unary = append(unary, withContext(o.UnaryContext))
		}
	}
	unary = append(unary, o.Unary...)
	stream = append(stream, o.Stream...)

	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(sc),
		grpc.WithChainUnaryInterceptor(unary...),
		grpc.WithChainStreamInterceptor(stream...),
	}
	if o.Keepalive.Time > 0 {
		// A zero Time would be raised to grpc's 10s minimum, which servers with the default 5 min
		// enforcement answer with GOAWAY; leave keepalive off unless configured.
		opts = append(opts, grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                o.Keepalive.Time,
			Timeout:             o.Keepalive.Timeout,
			PermitWithoutStream: o.Keepalive.PermitWithoutStream,
		}))
	}
	if o.Resolver != nil {
		opts = append(opts, grpc.WithResolvers(o.Resolver))
	}
	if o.MaxRecvMsgSize > 0 && o.MaxRecvMsgSize != grpcDefaultMaxRecvMsgSize {
		// Only when it differs from grpc's own default: with a default call option, grpc allocates a
		// merged option list on every call (the generated stubs always pass one).
		opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(o.MaxRecvMsgSize)))
	}
	for _, h := range o.StatsHandlers {
		opts = append(opts, grpc.WithStatsHandler(h))
	}
	return append(opts, o.Extra...), nil
}

// grpcDefaultMaxRecvMsgSize is the largest response grpc-go's clients accept unless told otherwise.
const grpcDefaultMaxRecvMsgSize = 4 << 20

// guardUnary is deadline.UnaryClientInterceptor(d) followed by, when set, retryElsewhere(retried) and
// withContext(wrap), then breaker.UnaryClientInterceptor(b), in one function.
func guardUnary(d time.Duration, b *breaker.Breaker, retried func(string) bool, wrap func(context.Context) context.Context) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ctx, cancel := deadline.WithDefault(ctx, d)
		defer cancel()
		if retried != nil && retried(method) {
			ctx = outlier.RetryElsewhere(ctx)
		}
		if wrap != nil {
			ctx = wrap(ctx)
		}
		return b.Invoke(ctx, method, req, reply, cc, invoker, opts...)
	}
}

// withContext is an interceptor that only wraps the call's context.
func withContext(wrap func(context.Context) context.Context) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(wrap(ctx), method, req, reply, cc, opts...)
	}
}

// retried returns whether the service config retries a method ("/pkg.Service/Method").
func (t Target) retried() func(string) bool {
	set := map[string]bool{}
	for _, m := range RetryableMethods(t.Files) {
		set[m] = true
	}
	for _, m := range t.Idempotent {
		if svc, method, err := splitMethod(m); err == nil {
			set["/"+svc+"/"+method] = true // "/svc/" for a whole service
		}
	}
	return func(m string) bool {
		if set[m] {
			return true
		}
		i := strings.LastIndexByte(m, '/')
		return i > 0 && set[m[:i+1]]
	}
}

// retryElsewhere lets the retries of a retried unary call avoid the address that just failed it.
func retryElsewhere(retried func(string) bool) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if retried(method) {
			ctx = outlier.RetryElsewhere(ctx)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

func markStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(outlier.MarkStream(ctx), desc, cc, method, opts...)
}

// linkedBuilder hands the outlier Link to the balancer in the resolver state's attributes.
type linkedBuilder struct {
	resolver.Builder
	link *outlier.Link
}

func (b linkedBuilder) Build(t resolver.Target, cc resolver.ClientConn, o resolver.BuildOptions) (resolver.Resolver, error) {
	return b.Builder.Build(t, linkedCC{ClientConn: cc, link: b.link}, o)
}

type linkedCC struct {
	resolver.ClientConn
	link *outlier.Link
}

func (c linkedCC) UpdateState(s resolver.State) error {
	return c.ClientConn.UpdateState(c.link.Attach(s))
}

// Dial creates a (lazily connecting) client for target with the options of o. With outlier ejection on
// and no o.Resolver, the resolver grpc registered for target's scheme (dns, passthrough) is used, so that
// the ejection can be linked to o.Breaker.
func Dial(target string, o Options) (*grpc.ClientConn, error) {
	if o.Resolver == nil && o.Target.Outlier.Enabled {
		if u, err := url.Parse(target); err == nil && u.Scheme != "" {
			o.Resolver = resolver.Get(u.Scheme)
		}
	}
	opts, err := DialOptions(o)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return conn, nil
}
