package localstack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shopmesh/shopmesh/deploy/servicelist"
)

// InfraEndpoints are the real servers `make infra-up` (deploy/infra/infra.sh) runs: with Config.Infra
// set, the stack runs on them instead of the embedded brokers and SQLite files. Every service gets a
// PostgreSQL database of its own, the real Kafka and NATS, Nacos for registration, discovery and the
// config center, and (when OTLPEndpoint is set) exports every trace to Jaeger.
type InfraEndpoints struct {
	// DatabaseURL is a login on the PostgreSQL server (infra.env's DATABASE_URL); only its server and
	// credentials are used, each service gets its own database on that server.
	DatabaseURL string
	// DBPrefix, when set, makes the stack create fresh databases <DBPrefix>_<service> at start (dropping
	// any left from an earlier run) and drop them at Stop unless KeepDatabases. Empty: the services use
	// the databases infra.sh creates (order_svc, inventory_svc, payment_svc) and keep their data.
	DBPrefix      string
	KeepDatabases bool
	KafkaBrokers  []string
	NATSURL       string
	// NacosAddr is the Nacos HTTP address (its gRPC port is +1000); "" keeps static discovery and no
	// config center. NacosNamespace ("" = public)
	// separates this stack's registrations and config documents from other stacks on the same server.
	NacosAddr      string
	NacosNamespace string
	// OTLPEndpoint receives the traces ("" = tracing off); Config.OTLPEndpoint, when set, wins.
	OTLPEndpoint string
	// Credentials are the servers' credentials of a set started with INFRA_AUTH=1 (infra.env's
	// <P>_NATS_USER/_PASSWORD, <P>_KAFKA_USERNAME/_PASSWORD, NACOS_USERNAME/_PASSWORD): each service
	// gets its own (and the Nacos login as <P>_REGISTRY_NACOS_USERNAME/_PASSWORD). Empty: no auth.
	Credentials map[string]string
}

// credentialSuffixes name the credential variables of infra.env a service may be given.
var credentialSuffixes = []string{"_NATS_USER", "_NATS_PASSWORD", "_KAFKA_USERNAME", "_KAFKA_PASSWORD"}

// credentials is the service's own credential variables (prefix p) of the infra env.
func (e InfraEndpoints) credentials(p string, svc servicelist.Service) []string {
	var env []string
	for _, s := range credentialSuffixes {
		if (strings.Contains(s, "NATS") && !svc.NATS) || (strings.Contains(s, "KAFKA") && !svc.Kafka) {
			continue
		}
		if v := e.Credentials[p+s]; v != "" {
			env = append(env, p+s+"="+v)
		}
	}
	return env
}

// ReadInfraEnv reads the `export KEY=VALUE` lines infra.sh writes (.run/infra.env). PostgreSQL,
// Kafka and NATS must be up (their lines present); without Nacos the services use static discovery
// and no config center; without Jaeger there are no traces.
func ReadInfraEnv(path string) (InfraEndpoints, error) {
	f, err := os.Open(path)
	if err != nil {
		return InfraEndpoints{}, fmt.Errorf("infra env: %w (start the servers with `make infra-up`)", err)
	}
	defer func() { _ = f.Close() }()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		// `export A=1 B=2` sets both (values have no blanks).
		for _, kv := range strings.Fields(strings.TrimPrefix(line, "export ")) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			vars[k] = strings.Trim(v, `"'`)
		}
	}
	if err := sc.Err(); err != nil {
		return InfraEndpoints{}, fmt.Errorf("infra env %s: %w", path, err)
	}
	e := InfraEndpoints{
		DatabaseURL:  vars["DATABASE_URL"],
		NATSURL:      vars["NATS_URL"],
		NacosAddr:    vars["NACOS_ADDR"],
		OTLPEndpoint: vars["OTLP_ENDPOINT"],
	}
	for k, v := range vars {
		if k == "NACOS_USERNAME" || k == "NACOS_PASSWORD" || slices.ContainsFunc(credentialSuffixes, func(s string) bool { return strings.HasSuffix(k, s) }) {
			if e.Credentials == nil {
				e.Credentials = map[string]string{}
			}
			e.Credentials[k] = v
		}
	}
	for _, b := range strings.Split(vars["KAFKA_BROKERS"], ",") {
		if b = strings.TrimSpace(b); b != "" {
			e.KafkaBrokers = append(e.KafkaBrokers, b)
		}
	}
	if err := e.validate(); err != nil {
		return InfraEndpoints{}, fmt.Errorf("infra env %s: %w (are all servers up? `bash deploy/infra/infra.sh status`)", path, err)
	}
	return e, nil
}

var dbNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,40}$`)

func (e InfraEndpoints) validate() error {
	var errs []error
	if e.DatabaseURL == "" {
		errs = append(errs, errors.New("DATABASE_URL (postgres) missing"))
	} else if u, err := url.Parse(e.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		errs = append(errs, fmt.Errorf("DATABASE_URL %q is not a postgres:// URL", e.DatabaseURL))
	}
	if len(e.KafkaBrokers) == 0 {
		errs = append(errs, errors.New("KAFKA_BROKERS (kafka) missing"))
	}
	if e.NATSURL == "" {
		errs = append(errs, errors.New("NATS_URL (nats) missing"))
	}
	if e.DBPrefix != "" && !dbNameRE.MatchString(e.DBPrefix) {
		errs = append(errs, fmt.Errorf("db prefix %q: want lower-case letters, digits and _", e.DBPrefix))
	}
	return errors.Join(errs...)
}

// Database is the database service uses.
func (e InfraEndpoints) Database(service string) string {
	if e.DBPrefix != "" {
		return e.DBPrefix + "_" + service
	}
	return service + "_svc"
}

// DSN is service's connection string: DatabaseURL with the service's database.
func (e InfraEndpoints) DSN(service string) string {
	u, err := url.Parse(e.DatabaseURL)
	if err != nil {
		return e.DatabaseURL
	}
	u.Path = "/" + e.Database(service)
	return u.String()
}

// prepareDatabases creates the fresh databases of services (DBPrefix set); without a prefix it checks
// that the server answers, so a stopped PostgreSQL is reported before a minute of start-up timeouts.
func (e InfraEndpoints) prepareDatabases(ctx context.Context, services []string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.DatabaseURL)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if e.DBPrefix == "" {
		return nil
	}
	for _, svc := range services {
		db := e.Database(svc)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop database %s: %w", db, err)
		}
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
			return fmt.Errorf("create database %s: %w", db, err)
		}
	}
	return nil
}

// dropDatabases drops the fresh databases of services (best effort: the stack is stopping).
func (e InfraEndpoints) dropDatabases(services []string) error {
	if e.DBPrefix == "" || e.KeepDatabases {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.DatabaseURL)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer func() { _ = conn.Close(ctx) }()
	var errs []error
	for _, svc := range services {
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+e.Database(svc)+" WITH (FORCE)"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// nacosEnv points the instance of the service with variable prefix p at Nacos (nothing without a
// Nacos address: static discovery, no config center).
func (s *Stack) nacosEnv(p, instance string) []string {
	e := s.cfg.Infra
	if e.NacosAddr == "" {
		return nil
	}
	dir := filepath.Join(s.cfg.RunDir, "nacos", instance)
	env := []string{
		p + "_REGISTRY_BACKEND=nacos",
		p + "_REGISTRY_NACOS_ADDRS=" + e.NacosAddr,
		p + "_REGISTRY_NACOS_NAMESPACE=" + e.NacosNamespace,
		p + "_REGISTRY_NACOS_CACHE_DIR=" + filepath.Join(dir, "cache"),
		p + "_REGISTRY_NACOS_LOG_DIR=" + filepath.Join(dir, "log"),
		p + "_CONFIG_CENTER_BACKEND=nacos",
	}
	if u := e.Credentials["NACOS_USERNAME"]; u != "" {
		env = append(env, p+"_REGISTRY_NACOS_USERNAME="+u, p+"_REGISTRY_NACOS_PASSWORD="+e.Credentials["NACOS_PASSWORD"])
	}
	if a := s.admin[instance]; a != "" {
		if _, port, err := splitPort(a); err == nil {
			env = append(env, fmt.Sprintf("%s_REGISTRY_NACOS_ADMIN_PORT=%d", p, port))
		}
	}
	return env
}
