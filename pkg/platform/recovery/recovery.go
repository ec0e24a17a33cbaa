// Package recovery turns a panic in a gRPC handler into an INTERNAL error with a generic message, logging
// the stack, so that one bad request never takes the process (and every other in-flight call) down.
package recovery

import (
	"context"
	"log/slog"
	"runtime/debug"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Message is what the caller sees; the panic value and stack only go to the log.
const Message = "internal error"

// UnaryServerInterceptor recovers panics raised by the rest of the chain and the handler.
func UnaryServerInterceptor(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = recovered(ctx, logger, info.FullMethod, r)
				resp = nil
			}
		}()
		return handler(ctx, req)
	}
}

// UnaryServerInterceptorAround is UnaryServerInterceptor followed by next, in one interceptor: grpc
// allocates a closure per chained interceptor per call, so a server whose chain is only recovery and
// one more stage runs them as one.
func UnaryServerInterceptorAround(logger *slog.Logger, next grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = recovered(ctx, logger, info.FullMethod, r)
				resp = nil
			}
		}()
		return next(ctx, req, info, handler)
	}
}

// StreamServerInterceptor recovers panics raised by the rest of the chain and the stream handler.
func StreamServerInterceptor(logger *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = recovered(ss.Context(), logger, info.FullMethod, r)
			}
		}()
		return handler(srv, ss)
	}
}

func recovered(ctx context.Context, logger *slog.Logger, method string, r any) error {
	logger.ErrorContext(ctx, "handler panic", "method", method, "panic", r, "stack", string(debug.Stack()))
	return status.Error(codes.Internal, Message)
}
