package config_test

import (
	"bytes"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/fault"
	"github.com/shopmesh/shopmesh/pkg/platform/ratelimit"
)

// shop is a service config in the shape Load expects: the platform's Config and the shared Brokers
// embedded, its own fields, its own Validate calling the platform's.
type shop struct {
	config.Config
	config.Brokers
	DSN     string `help:"database"`
	Workers int    `help:"workers"`
}

func (s shop) Validate() error {
	errs := []error{s.Config.Validate()}
	if s.DSN == "" {
		errs = append(errs, errors.New("dsn: must be set"))
	}
	if len(s.KafkaBrokers) == 0 {
		errs = append(errs, errors.New("kafka_brokers: at least one host:port is needed"))
	}
	if s.Workers < 1 {
		errs = append(errs, errors.New("workers, dsn: need a worker"))
	}
	return errors.Join(errs...)
}

func shopDefaults(p config.Profile) shop {
	s := shop{Config: config.Default(p), Workers: 1}
	s.Service = "shop"
	s.Profile = "" // Load records the profile itself
	if p == config.Dev {
		s.DSN = "sqlite:shop.db"
	}
	s.Targets["inventory"] = config.Target{Addresses: []string{"127.0.0.1:50052"}}
	return s
}

func envLookup(env map[string]string) config.Lookup {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

func TestLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		check   func(t *testing.T, s shop)
		wantErr []string
	}{
		{name: "dev, aliases read", env: map[string]string{"SHOP_PROFILE": "dev", "KAFKA_BROKERS": "k1:9092, k2:9092", "NATS_URL": "nats://n:4222"},
			check: func(t *testing.T, s shop) {
				if s.Profile != config.Dev || s.DSN != "sqlite:shop.db" {
					t.Errorf("profile %q dsn %q, want dev and the dev default", s.Profile, s.DSN)
				}
				if !slices.Equal(s.KafkaBrokers, []string{"k1:9092", "k2:9092"}) || s.NatsURL != "nats://n:4222" {
					t.Errorf("brokers %v nats %q, want the KAFKA_BROKERS and NATS_URL values", s.KafkaBrokers, s.NatsURL)
				}
			}},
		{name: "prefixed wins over alias", env: map[string]string{"SHOP_PROFILE": "dev",
			"KAFKA_BROKERS": "shared:9092", "SHOP_KAFKA_BROKERS": "own:9092", "NATS_URL": "nats://shared", "SHOP_NATS_URL": "nats://own"},
			check: func(t *testing.T, s shop) {
				if !slices.Equal(s.KafkaBrokers, []string{"own:9092"}) || s.NatsURL != "nats://own" {
					t.Errorf("brokers %v nats %q, want the SHOP_ values", s.KafkaBrokers, s.NatsURL)
				}
			}},
		{name: "profile selects the defaults", env: map[string]string{"SHOP_PROFILE": "test", "SHOP_DSN": "sqlite:t.db", "KAFKA_BROKERS": "k:1", "SHOP_WORKERS": "4"},
			check: func(t *testing.T, s shop) {
				if s.Profile != config.Test || s.Base().Profile != config.Test || s.DSN != "sqlite:t.db" || s.Workers != 4 {
					t.Errorf("profile %q dsn %q workers %d", s.Profile, s.DSN, s.Workers)
				}
			}},
		{name: "test runs the development values", env: map[string]string{"SHOP_PROFILE": "test", "KAFKA_BROKERS": "k:1",
			"SHOP_DSN": "postgres://order:shopmesh-dev-order@db:5432/order"},
			check: func(t *testing.T, s shop) {
				if s.DSN != "postgres://order:shopmesh-dev-order@db:5432/order" {
					t.Errorf("dsn %q", s.DSN)
				}
			}},
		{name: "unknown profile", env: map[string]string{"SHOP_PROFILE": "staging"}, wantErr: []string{"SHOP_PROFILE", "staging"}},
		// No default profile: a process started without one refuses to start (fail closed).
		{name: "no profile", env: map[string]string{"SHOP_DSN": "sqlite:shop.db", "KAFKA_BROKERS": "k:1"},
			wantErr: []string{"config: SHOP_PROFILE is not set: choose dev (what make run uses), test, compose, k8s or prod"}},
		{name: "empty profile", env: map[string]string{"SHOP_PROFILE": " ", "SHOP_DSN": "sqlite:shop.db", "KAFKA_BROKERS": "k:1"},
			wantErr: []string{"config: SHOP_PROFILE is not set: choose dev (what make run uses), test, compose, k8s or prod"}},
		{name: "bad value names the variable", env: map[string]string{"SHOP_PROFILE": "dev", "SHOP_SERVER_DRAIN_DELAY": "5", "KAFKA_BROKERS": "k:1"},
			wantErr: []string{"SHOP_SERVER_DRAIN_DELAY", "not a duration"}},
		// Validate runs after the environment and each problem names its variable.
		{name: "validate", env: map[string]string{"SHOP_PROFILE": "test", "SHOP_LISTEN_ADDR": "50051", "SHOP_CLIENT_RETRY_MAX_ATTEMPTS": "9",
			"SHOP_TARGETS_INVENTORY_ADDRESSES": "inventory", "SHOP_WORKERS": "0"},
			wantErr: []string{
				`listen_addr (SHOP_LISTEN_ADDR): "50051" is not host:port`,
				"client.retry: max_attempts (SHOP_CLIENT_RETRY_MAX_ATTEMPTS): must be within 1-5",
				`targets["inventory"].addresses (SHOP_TARGETS_INVENTORY_ADDRESSES): "inventory" is not host:port`,
				"dsn (SHOP_DSN): must be set",
				"kafka_brokers (SHOP_KAFKA_BROKERS or KAFKA_BROKERS): at least one",
				"workers, dsn (SHOP_WORKERS, SHOP_DSN): need a worker",
			}},
		{name: "validate in the profile's rules", env: map[string]string{"SHOP_PROFILE": "prod", "SHOP_DSN": "x", "KAFKA_BROKERS": "k:1"},
			wantErr: []string{"tls: ca_file, cert_file and key_file are required in the prod profile"}},
		// Prod and k8s refuse a credential committed in the repository (compose's former .env password here).
		{name: "prod refuses a committed password", env: map[string]string{"SHOP_PROFILE": "prod", "KAFKA_BROKERS": "k:1",
			"SHOP_DSN": "postgres://order:shopmesh-dev-order@db:5432/order?sslmode=verify-full"},
			wantErr: []string{"dsn (SHOP_DSN): a value committed in the shopmesh repository; generate one (make secrets)"}},
		{name: "k8s refuses a committed password", env: map[string]string{"SHOP_PROFILE": "k8s", "KAFKA_BROKERS": "k:1",
			"SHOP_DSN": "host=db user=order password=shopmesh-dev-order"},
			wantErr: []string{"dsn (SHOP_DSN): a value committed in the shopmesh repository"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := config.Load[shop]("SHOP_", envLookup(tt.env), shopDefaults)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				tt.check(t, s)
				return
			}
			if err == nil {
				t.Fatal("want an error")
			}
			if !strings.HasPrefix(err.Error(), "config: ") {
				t.Errorf("error does not start with config: %q", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			if !reflect.DeepEqual(s, shop{}) {
				t.Error("a failed Load returns the zero config")
			}
		})
	}
}

// The platform's own Config loads too (Base is its own).
func TestLoadPlatformConfig(t *testing.T) {
	t.Parallel()
	c, err := config.Load[config.Config]("APP", envLookup(map[string]string{"APP_SERVICE": "app", "APP_PROFILE": "k8s",
		"APP_TLS_CA_FILE": "ca.pem", "APP_TLS_CERT_FILE": "c.pem", "APP_TLS_KEY_FILE": "k.pem"}), config.Default)
	if err != nil {
		t.Fatal(err)
	}
	if c.Service != "app" || c.Profile != config.K8s || c.Server.DrainDelay != config.Default(config.K8s).Server.DrainDelay {
		t.Errorf("service %q profile %q drain %v", c.Service, c.Profile, c.Server.DrainDelay)
	}
}

func TestFromEnvAliasErrorNamesTheAlias(t *testing.T) {
	t.Parallel()
	var c struct {
		Port int `alias:"PORT"`
	}
	err := config.FromEnv(&c, "SHOP", envLookup(map[string]string{"PORT": "eighty"}))
	if err == nil || !strings.Contains(err.Error(), "PORT: ") || strings.Contains(err.Error(), "SHOP_PORT") {
		t.Errorf("error should name PORT, the variable read: %v", err)
	}
}

// fullDefaults is the dev platform config with one entry in every map, so that every field type is listed.
func fullDefaults() shop {
	s := shopDefaults(config.Dev)
	s.Profile = config.Dev
	s.RateLimit.Methods = map[string]ratelimit.Rule{"/shop.v1.Shop/Get": {RPS: 5}}
	s.Fault.Rules = map[string]fault.Rule{"*": {AbortCode: "UNAVAILABLE"}}
	s.Registry.Nacos.Metadata = map[string]string{"team": "a"}
	return s
}

func TestVarsHaveHelpAndDefaults(t *testing.T) {
	t.Parallel()
	d := config.Default(config.Dev)
	if vars := config.Vars(&d, "SHOP"); len(vars) < 50 {
		t.Fatalf("only %d variables for the platform config", len(vars))
	}
	s := fullDefaults()
	vars := config.Vars(&s, "SHOP_")
	byName := map[string]config.Var{}
	for _, v := range vars {
		byName[v.Name] = v
		if strings.TrimSpace(v.Help) == "" {
			t.Errorf("%s has no help tag", v.Name)
		}
	}
	if names := config.Keys(&s, "SHOP"); !slices.Equal(names, slices.Sorted(maps.Keys(byName))) {
		t.Errorf("Keys and Vars disagree:\n%v", names)
	}
	for name, want := range map[string]config.Var{
		"SHOP_PROFILE":                                 {Default: "dev"},
		"SHOP_LISTEN_ADDR":                             {Default: ":50051"},
		"SHOP_TLS_CA_FILE":                             {Default: ""},
		"SHOP_SERVER_DRAIN_DELAY":                      {Default: "0s"},
		"SHOP_SERVER_STREAM_DEFAULT_DEADLINE":          {Default: "5m"},
		"SHOP_SERVER_KEEPALIVE_TIME":                   {Default: "1m"},
		"SHOP_CLIENT_RETRY_INITIAL_BACKOFF":            {Default: "50ms"},
		"SHOP_CLIENT_RETRY_CODES":                      {Default: "UNAVAILABLE"},
		"SHOP_CLIENT_BREAKER_FAILURE_RATIO":            {Default: "0.5"},
		"SHOP_CLIENT_HEALTH_CHECK":                     {Default: "true"},
		"SHOP_SERVER_MAX_CONCURRENT_STREAMS":           {Default: "256"},
		"SHOP_TARGETS_INVENTORY_ADDRESSES":             {Default: "127.0.0.1:50052"},
		"SHOP_RATE_LIMIT_METHODS_SHOP_V1_SHOP_GET_RPS": {Default: "5"},
		"SHOP_REGISTRY_NACOS_METADATA_TEAM":            {Default: "a"},
		"SHOP_KAFKA_BROKERS":                           {Alias: "KAFKA_BROKERS"},
		"SHOP_NATS_URL":                                {Alias: "NATS_URL"},
	} {
		got, ok := byName[name]
		if !ok {
			t.Errorf("Vars lacks %s", name)
			continue
		}
		if got.Default != want.Default || got.Alias != want.Alias {
			t.Errorf("%s: default %q alias %q, want %q %q", name, got.Default, got.Alias, want.Default, want.Alias)
		}
	}
	if !slices.IsSortedFunc(vars, func(a, b config.Var) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("Vars is not sorted")
	}

	// Every default, written into the environment as Vars renders it, reads back as the same value.
	env := map[string]string{}
	for _, v := range vars {
		if v.Default != "" {
			env[v.Name] = v.Default
		}
	}
	back := fullDefaults()
	if err := config.FromEnv(&back, "SHOP", envLookup(env)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, s) {
		t.Errorf("defaults do not read back:\n%+v\n%+v", back, s)
	}
}

// FromEnv looks up exactly the listed names and their aliases.
func TestVarsMatchFromEnv(t *testing.T) {
	t.Parallel()
	s := fullDefaults()
	var want []string
	for _, v := range config.Vars(&s, "SHOP") {
		want = append(want, v.Name)
		if v.Alias != "" {
			want = append(want, v.Alias)
		}
	}
	slices.Sort(want)
	var read []string
	if err := config.FromEnv(&s, "SHOP", func(k string) (string, bool) { read = append(read, k); return "", false }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(read)
	if !slices.Equal(read, want) {
		t.Errorf("FromEnv read\n%v\nVars list\n%v", read, want)
	}
}

func TestWriteVars(t *testing.T) {
	t.Parallel()
	vars := []config.Var{
		{Name: "SHOP_KAFKA_BROKERS", Alias: "KAFKA_BROKERS", Default: "127.0.0.1:9092", Help: "Kafka brokers"},
		{Name: "SHOP_DSN", Help: "database"},
		{Name: "SHOP_SERVER_DRAIN_DELAY", Default: "0s", Help: "drain"},
	}
	var out bytes.Buffer
	if err := config.WriteVars(&out, vars); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	want := []string{"SHOP_KAFKA_BROKERS (KAFKA_BROKERS) 127.0.0.1:9092 — Kafka brokers", `SHOP_DSN "" — database`, "SHOP_SERVER_DRAIN_DELAY 0s — drain"}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	col := -1
	for i, l := range lines {
		if got := strings.Join(strings.Fields(l), " "); got != want[i] {
			t.Errorf("line %d = %q, want %q", i, got, want[i])
		}
		dash := strings.Index(l, "—")
		if dash < 0 {
			t.Fatalf("line %d has no \"—\": %q", i, l)
		}
		at := utf8.RuneCountInString(l[:dash])
		if col >= 0 && at != col {
			t.Errorf("help not aligned:\n%s", out.String())
		}
		col = at
	}
}
