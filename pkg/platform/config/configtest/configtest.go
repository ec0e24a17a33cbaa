// Package configtest holds the checks every service binary's `healthcheck` and `check-config`
// subcommands must pass, so that each service's cmd test states only what differs: its run function,
// its env prefix, the variable naming its listen address and the variables a valid config needs.
// It is imported only by tests.
package configtest

import (
	"bytes"
	"context"
	"io"
	"maps"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
)

// RunFunc is a service's `run(ctx, args, lookup, stdout)`.
type RunFunc func(ctx context.Context, args []string, lookup config.Lookup, stdout io.Writer) error

// CheckSuite describes one service binary.
type CheckSuite struct {
	// Run is the service's run function.
	Run RunFunc
	// Prefix is the service's env prefix, with its underscore: "ORDER_".
	Prefix string
	// AddrVar is the variable, without the prefix, that healthcheck dials: "LISTEN_ADDR" or "HTTP_ADDR".
	AddrVar string
	// Required holds the variables, beyond <P>_PROFILE and the address, a valid test-profile config
	// needs (full names: "ORDER_DSN", "KAFKA_BROKERS").
	Required map[string]string
}

// lookup serves env the way main's os.LookupEnv would.
func lookup(env map[string]string) config.Lookup {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

// env is a valid test-profile environment with the address variable set to addr.
func (s CheckSuite) env(addr string) map[string]string {
	e := maps.Clone(s.Required)
	if e == nil {
		e = map[string]string{}
	}
	e[s.Prefix+"PROFILE"] = "test"
	e[s.Prefix+s.AddrVar] = addr
	return e
}

// CheckHealth runs the healthcheck subcommand the way a container runtime does, against a service a
// test started (addr is the bound address in place of the :0 one in env) and asserts it passes.
func (s CheckSuite) CheckHealth(ctx context.Context, t testing.TB, env map[string]string, addr string) {
	t.Helper()
	e := maps.Clone(env)
	e[s.Prefix+s.AddrVar] = addr
	var out bytes.Buffer
	if err := s.Run(ctx, []string{"healthcheck"}, lookup(e), &out); err != nil {
		t.Errorf("healthcheck against the running service: %v", err)
	}
}

// CheckCommandSuite runs, as parallel subtests, the checks every service's healthcheck and
// check-config subcommands must pass.
func CheckCommandSuite(t *testing.T, s CheckSuite) {
	t.Helper()
	t.Run("HealthcheckNothingListening", func(t *testing.T) {
		t.Parallel()
		s.healthcheckNothingListening(t)
	})
	t.Run("CheckConfig", func(t *testing.T) {
		t.Parallel()
		s.checkConfig(t)
	})
	t.Run("CheckConfigKeys", func(t *testing.T) {
		t.Parallel()
		s.checkConfigKeys(t)
	})
	t.Run("NoProfile", func(t *testing.T) {
		t.Parallel()
		s.noProfile(t)
	})
}

// noProfile: without <P>_PROFILE (unset or empty) serve, check-config and healthcheck refuse to run,
// naming the variable and the choices, however valid the rest of the environment.
func (s CheckSuite) noProfile(t *testing.T) {
	want := s.Prefix + "PROFILE is not set: choose dev (what make run uses), test, compose, k8s or prod"
	unset := s.env("127.0.0.1:0")
	delete(unset, s.Prefix+"PROFILE")
	empty := merge(unset, map[string]string{s.Prefix + "PROFILE": ""})
	for _, env := range []map[string]string{unset, empty} {
		for _, args := range [][]string{nil, {"serve"}, {"check-config"}, {"healthcheck"}} {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err := s.Run(ctx, args, lookup(env), &bytes.Buffer{})
			cancel()
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%q without a profile: err = %v, want %q", args, err, want)
			}
		}
	}
}

func (s CheckSuite) healthcheckNothingListening(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	if err := s.Run(context.Background(), []string{"healthcheck"}, lookup(s.env(addr)), &bytes.Buffer{}); err == nil {
		t.Fatal("healthcheck with nothing listening: want an error")
	}
}

func (s CheckSuite) checkConfig(t *testing.T) {
	p := s.Prefix
	good := s.env("127.0.0.1:1")
	tests := []struct {
		name    string
		env     map[string]string
		environ []string
		wantErr []string
	}{
		{"valid", good, []string{p + "PROFILE=test", "PATH=/bin"}, nil},
		{"typo", good, []string{p + "PROFILE=test", p + "LISTEN_ADR=:1", p + "SERVER_DRAIN_DELAYS=1s"},
			[]string{p + "LISTEN_ADR: unknown variable", p + "SERVER_DRAIN_DELAYS: unknown variable"}},
		{"invalid value", merge(good, map[string]string{p + "TELEMETRY_SAMPLE_RATIO": "2"}), nil, []string{"telemetry.sample_ratio"}},
		{"compose profile needs TLS", merge(good, map[string]string{p + "PROFILE": "compose"}), nil, []string{"tls"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			err := s.Run(context.Background(), append([]string{"check-config"}, tt.environ...), lookup(tt.env), &out)
			if len(tt.wantErr) == 0 {
				if err != nil || !strings.Contains(out.String(), "config ok") {
					t.Fatalf("err = %v, out = %q", err, out.String())
				}
				return
			}
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

func (s CheckSuite) checkConfigKeys(t *testing.T) {
	var out bytes.Buffer
	if err := s.Run(context.Background(), []string{"check-config", "-keys"}, lookup(nil), &out); err != nil {
		t.Fatal(err)
	}
	p := s.Prefix
	for _, k := range []string{p + "PROFILE", p + s.AddrVar, p + "TLS_CA_FILE", p + "HEALTH_ADDR", p + "ADMIN_ADDR", p + "TELEMETRY_OTLP_ENDPOINT"} {
		if !strings.Contains(out.String(), k+"\n") {
			t.Errorf("-keys lacks %s", k)
		}
	}
}

func merge(a, b map[string]string) map[string]string {
	m := maps.Clone(a)
	maps.Copy(m, b)
	return m
}
