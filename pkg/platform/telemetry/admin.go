package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminOption changes what AdminHandler serves.
type AdminOption func(*adminOptions)

type adminOptions struct {
	pprof  bool
	ready  func() bool
	report func() string
}

// WithReadiness serves /readyz: 200 while ready reports true, 503 otherwise (e.g. the gRPC health
// status, which turns NOT_SERVING when the server starts draining or a required dependency is down).
func WithReadiness(ready func() bool) AdminOption { return func(o *adminOptions) { o.ready = ready } }

// WithReadinessReport adds report's text to the body of /readyz?verbose (e.g. one line per dependency
// and its state), whatever the answer; the status code is still WithReadiness's alone.
func WithReadinessReport(report func() string) AdminOption {
	return func(o *adminOptions) { o.report = report }
}

// WithPprof serves /debug/pprof/. Leave it off on ports reachable from outside.
func WithPprof() AdminOption { return func(o *adminOptions) { o.pprof = true } }

// AdminHandler serves /metrics from the registry, /healthz (200 while health
// reports true; nil means always healthy) and, with WithPprof, /debug/pprof/.
func (t *Telemetry) AdminHandler(health func() bool, opts ...AdminOption) http.Handler {
	var o adminOptions
	for _, opt := range opts {
		opt(&o)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{
		Registry:          t.registry, // also exposes promhttp's own error counters
		ErrorLog:          slog.NewLogLogger(t.log.Handler(), slog.LevelError),
		EnableOpenMetrics: true,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if health != nil && !health() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("unhealthy\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	if o.ready != nil {
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			body := "ready\n"
			if !o.ready() {
				w.WriteHeader(http.StatusServiceUnavailable)
				body = "not ready\n"
			}
			if o.report != nil && r.URL.Query().Has("verbose") {
				body += o.report()
			}
			_, _ = w.Write([]byte(body))
		})
	}
	if o.pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// AdminShutdownTimeout bounds how long ServeAdmin waits for requests in flight.
const AdminShutdownTimeout = 5 * time.Second

// Limits of the admin server against slow or oversized requests. Its routes are all GETs for
// operators and scrapers, so the limits are tight and fixed: a client has AdminReadHeaderTimeout to
// send its headers and AdminReadTimeout for the whole request; headers larger than AdminMaxHeaderBytes
// get 431, bodies larger than AdminMaxBodyBytes get 413 (a JSON error naming the limit).
const (
	AdminReadHeaderTimeout = 5 * time.Second
	AdminReadTimeout       = 10 * time.Second
	AdminIdleTimeout       = 2 * time.Minute
	AdminMaxHeaderBytes    = 16 << 10
	AdminMaxBodyBytes      = 4 << 10
)

// limitBody answers 413 to a request whose body is larger than limit, before h sees it: a declared
// length over the limit is refused at once; any other body is read first (bounded by limit and the
// server's ReadTimeout), so a chunked one is measured too, and one the client does not finish in time
// gets 408.
func limitBody(limit int64, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			adminError(w, http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", fmt.Sprintf("the body is larger than %d bytes", limit))
			return
		}
		if r.ContentLength != 0 {
			_, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, limit))
			if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
				adminError(w, http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", fmt.Sprintf("the body is larger than %d bytes", limit))
				return
			}
			if err != nil {
				adminError(w, http.StatusRequestTimeout, "REQUEST_TIMEOUT", "the body was not received in time")
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// adminError writes a JSON error the way the gateway's API does (code, message, status) and closes the
// connection, whose request body may be left unread.
func adminError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Connection", "close")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"code":%q,"message":%q,"status":%d}`+"\n", code, message, status)
}

// ServeAdmin listens on addr and serves h until ctx is done, then shuts down
// gracefully. It returns nil after a clean shutdown.
func ServeAdmin(ctx context.Context, addr string, h http.Handler) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("telemetry: admin listen %s: %w", addr, err)
	}
	return ServeAdminListener(ctx, ln, h)
}

// ServeAdminListener is ServeAdmin on an existing listener (tests use 127.0.0.1:0).
func ServeAdminListener(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           limitBody(AdminMaxBodyBytes, h),
		ReadHeaderTimeout: AdminReadHeaderTimeout,
		ReadTimeout:       AdminReadTimeout,
		// A CPU profile or trace may take 30s by default; leave room for it.
		WriteTimeout:   60 * time.Second,
		IdleTimeout:    AdminIdleTimeout,
		MaxHeaderBytes: AdminMaxHeaderBytes,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("telemetry: admin serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), AdminShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("telemetry: admin shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("telemetry: admin serve: %w", err)
	}
	return nil
}
