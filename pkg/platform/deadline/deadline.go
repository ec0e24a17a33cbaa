// Package deadline makes sure every call carries a deadline: the server gives calls that arrive without one
// a default and clamps any longer one to a maximum; the client adds a default to outgoing calls whose
// context has none. Handlers see the result in their context, so downstream calls made with it inherit
// the remaining time instead of starting a fresh, longer budget.
package deadline

import (
	"context"
	"time"

	"google.golang.org/grpc"
)

// Policy is the server-side deadline policy. Zero values disable the corresponding rule.
type Policy struct {
	// Default is applied when the caller sent no deadline.
	Default time.Duration
	// Max clamps the deadline a caller sent (or the default) to at most this much from now.
	Max time.Duration
}

// Apply returns ctx bounded by the policy, and a cancel function to release it.
func (p Policy) Apply(ctx context.Context) (context.Context, context.CancelFunc) {
	cur, has := ctx.Deadline()
	if !has && p.Default <= 0 && p.Max <= 0 {
		return ctx, noop
	}
	now := time.Now()
	dl, ok := cur, has
	if !ok && p.Default > 0 {
		dl, ok = now.Add(p.Default), true
	}
	if p.Max > 0 && (!ok || dl.Sub(now) > p.Max) {
		dl, ok = now.Add(p.Max), true
	}
	if !ok || has && !dl.Before(cur) {
		return ctx, noop
	}
	return context.WithDeadline(ctx, dl)
}

// UnaryServerInterceptor applies the policy to every unary call.
func UnaryServerInterceptor(p Policy) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, cancel := p.Apply(ctx)
		defer cancel()
		return handler(ctx, req)
	}
}

// StreamServerInterceptor applies the policy to every streaming call.
func StreamServerInterceptor(p Policy) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, cancel := p.Apply(ss.Context())
		defer cancel()
		if ctx == ss.Context() {
			return handler(srv, ss)
		}
		return handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
	}
}

// contextStream replaces the context of a ServerStream.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }

// UnaryClientInterceptor gives outgoing unary calls without a deadline the default timeout d.
func UnaryClientInterceptor(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ctx, cancel := WithDefault(ctx, d)
		defer cancel()
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// WithDefault returns ctx with the timeout d when it has no deadline (and d > 0), else ctx itself; call
// cancel when the call ends. It is the client rule, for callers that fold it into another interceptor.
func WithDefault(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || d <= 0 {
		return ctx, noop
	}
	return context.WithTimeout(ctx, d)
}

func noop() {}

// StreamClientInterceptor gives outgoing streams without a deadline the default timeout d. The timer is
// released when the stream ends (the caller read to the end or got an error) or the caller's context ends.
func StreamClientInterceptor(d time.Duration) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if _, ok := ctx.Deadline(); ok || d <= 0 {
			return streamer(ctx, desc, cc, method, opts...)
		}
		ctx, cancel := context.WithTimeout(ctx, d)
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			cancel()
			return nil, err
		}
		return &cancelStream{ClientStream: cs, cancel: cancel}, nil
	}
}

type cancelStream struct {
	grpc.ClientStream
	cancel context.CancelFunc
}

func (s *cancelStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.cancel()
	}
	return err
}
