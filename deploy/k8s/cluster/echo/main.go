// Command echo is the test workload of the cluster smoke test (deploy/k8s/cluster/smoke.sh), built into a
// FROM scratch image: an HTTP server that answers every request with its pod's name and logs each request
// (what `kubectl logs` shows), and a client mode (`echo -get URL`) run with `kubectl exec` in a pod, since
// a scratch image has no curl.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", ":8080", "listen address of the server")
	get := flag.String("get", "", "client mode: GET this URL, print the body and exit (non-2xx is an error)")
	timeout := flag.Duration("timeout", 5*time.Second, "client mode: deadline of the request")
	flag.Parse()
	if *get != "" {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		return fetch(ctx, *get)
	}
	name := os.Getenv("POD_NAME")
	if name == "" {
		name, _ = os.Hostname()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	lis, err := (&net.ListenConfig{}).Listen(ctx, "tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return serve(ctx, lis, name, slog.New(slog.NewTextHandler(os.Stdout, nil)))
}

// serve answers every request on lis with the pod's name until ctx ends.
func serve(ctx context.Context, lis net.Listener, name string, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		log.Info("request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		fmt.Fprintf(w, "echo from %s\n", name)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errs := make(chan error, 1)
	go func() { errs <- srv.Serve(lis) }()
	log.Info("serving", "addr", lis.Addr().String(), "pod", name)
	select {
	case err := <-errs:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// fetch GETs url and copies the body to stdout; a non-2xx answer is an error.
func fetch(ctx context.Context, url string) error {
	return fetchTo(ctx, os.Stdout, url)
}

func fetchTo(ctx context.Context, out io.Writer, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, http.NoBody)
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("get %s: %s", url, resp.Status)
	}
	if _, err := out.Write(body); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}
