// Command fakesvc stands in for any service of the list in localstack's tests: installed under a
// service's name, it records the environment the stack gave it, checks that every service it calls is
// already serving, serves gRPC health (kind grpc: <P>_LISTEN_ADDR) or GET /readyz (kind http:
// <P>_HTTP_ADDR) until SIGTERM, and appends "start <name>" / "stop <name>" to FAKESVC_OUT/events.log.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, filepath.Base(os.Args[0]), os.Environ())
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakesvc:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, name string, environ []string) error {
	env := map[string]string{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	out := env["FAKESVC_OUT"]
	if out == "" {
		return errors.New("FAKESVC_OUT is not set")
	}
	p := strings.ToUpper(name) + "_"
	addr := env[p+"LISTEN_ADDR"] + env[p+"HTTP_ADDR"]

	// What the stack gave this instance, one KEY=VALUE a line, sorted.
	var mine []string
	for k, v := range env {
		if strings.HasPrefix(k, p) || k == "KAFKA_BROKERS" || k == "NATS_URL" {
			mine = append(mine, k+"="+v)
		}
	}
	sort.Strings(mine)
	file := filepath.Join(out, name+"@"+strings.ReplaceAll(addr, ":", "_")+".env")
	if err := os.WriteFile(file, []byte(strings.Join(mine, "\n")+"\n"), 0o644); err != nil {
		return err
	}

	// Every callee must already serve: the stack starts callees first.
	for k, v := range env {
		if strings.HasPrefix(k, p+"TARGETS_") && strings.HasSuffix(k, "_ADDRESSES") {
			for _, a := range strings.Split(v, ",") {
				if err := check(ctx, a); err != nil {
					return fmt.Errorf("%s: callee %s: %w", k, a, err)
				}
			}
		}
	}
	if err := event(out, "start "+name); err != nil {
		return err
	}
	defer func() { _ = event(out, "stop "+name) }()

	lis, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	if env[p+"HTTP_ADDR"] != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(lis) }()
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(lis) }()
	<-ctx.Done()
	srv.Stop()
	return nil
}

// check asks addr's health service whether it serves.
func check(ctx context.Context, addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health %s", r.GetStatus())
	}
	return nil
}

// event appends one line to out/events.log.
func event(out, line string) error {
	f, err := os.OpenFile(filepath.Join(out, "events.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
