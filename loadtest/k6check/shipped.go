package k6check

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/deploy/servicelist"
)

// StartStack starts the stack of `make run` exactly as configured there — same services, instances,
// mTLS and gateway settings (the per-client rate limit included) — but on free loopback ports with its
// data, logs and binaries in a fresh temporary directory. stop stops it and removes the directory.
func StartStack(ctx context.Context, root string, env []string, log *slog.Logger) (baseURL string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "shopmesh-k6check-")
	if err != nil {
		return "", nil, err
	}
	cfg := localstack.Default(root)
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.RunDir = filepath.Join(dir, "run")
	cfg.BinDir = filepath.Join(dir, "bin")
	cfg.FreePorts = true
	cfg.NATSAddr = "127.0.0.1:0"
	cfg.KafkaAddr = "127.0.0.1:0"
	cfg.Env = env
	cfg.Logger = log
	s, err := localstack.Start(ctx, cfg)
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, fmt.Errorf("start stack: %w", err)
	}
	url := s.Info().GatewayURL
	stop = func() { s.Stop(); _ = os.RemoveAll(dir) }
	if url == "" {
		stop()
		return "", nil, fmt.Errorf("start stack: no gateway in services/*/service.yaml")
	}
	return url, stop, nil
}

// MakeRunURL is the gateway URL `make run` serves (127.0.0.1 and the gateway's dev_port), the BASE_URL
// a script's header must name.
func MakeRunURL(root string) (string, error) {
	list, err := servicelist.Load(root)
	if err != nil {
		return "", err
	}
	gw, ok := servicelist.Find(list, localstack.Gateway)
	if !ok {
		return "", fmt.Errorf("no %s in the service list", localstack.Gateway)
	}
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(gw.DevPort)), nil
}

const pauseBetweenScripts = 2 * time.Second

// RunShipped runs every script of root/loadtest/k6 as its header command says, against baseURL (the
// BASE_URL of the header, which must be make run's gateway, is replaced by it). A header that is
// missing or does not match is a problem of that script's result; the script still runs.
func RunShipped(ctx context.Context, root, baseURL string, opts Options) ([]Result, error) {
	scripts, err := Scripts(filepath.Join(root, "loadtest", "k6"))
	if err != nil {
		return nil, err
	}
	want, err := MakeRunURL(root)
	if err != nil {
		return nil, err
	}
	var out []Result
	for i, script := range scripts {
		if i > 0 {
			// One script's dev tokens must not eat into the next one's per-IP budget: a full bucket
			// (burst 100 at 50/s in make run) comes back within two seconds, as between two k6 runs.
			select {
			case <-ctx.Done():
				return out, ctx.Err()
			case <-time.After(pauseBetweenScripts):
			}
		}
		env := map[string]string{}
		h, herr := ReadHeader(root, script)
		if herr == nil {
			for k, v := range h.Env {
				env[k] = v
			}
			if u, ok := h.Env["BASE_URL"]; ok && u != want {
				herr = fmt.Errorf("header %q: BASE_URL=%s, but make run's gateway is %s", h.Command, u, want)
			}
		}
		for k, v := range opts.Env {
			env[k] = v
		}
		env["BASE_URL"] = baseURL
		o := opts
		o.Env = env
		rel, _ := filepath.Rel(root, script)
		res, err := Run(ctx, script, o)
		if err != nil {
			return out, err
		}
		res.Script = filepath.ToSlash(rel)
		if herr != nil {
			res.Problems = append(res.Problems, herr.Error())
		}
		for _, k := range slices.Sorted(maps.Keys(h.Env)) {
			if !slices.Contains(res.EnvRead, k) {
				res.Problems = append(res.Problems, fmt.Sprintf("header %q sets %s, which the script never reads (__ENV.%s)", h.Command, k, k))
			}
		}
		out = append(out, res)
	}
	return out, nil
}
