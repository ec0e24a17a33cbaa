// Package devsecrets generates the secrets of the compose stack and of the Kubernetes dev overlay
// (`make secrets`, deploy/cmd/secrets): nothing secret is committed; every value is drawn from
// crypto/rand into an ignored folder, once, and kept on later runs unless rotated.
//
// Layout of Dir (default .run/secrets; the folder 0700, every file 0600):
//
//	<name>                 one value per file, the source of truth (Values lists the names)
//	compose/<container>.env what each compose container reads (env_file), derived from the values
//
// and of K8sDir (deploy/k8s/overlays/dev/secrets, under the overlay so kustomize's secretGenerator may
// read it): one file per Secret key, derived from the same values, no trailing newline.
package devsecrets

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/shopmesh/shopmesh/deploy/servicelist"
)

// Kind is how a value is drawn.
type Kind int

const (
	// Password is "p" and 32 random bytes, base64url without padding (44 characters, URL- and
	// shell-safe). The letter first: nats-server reads an environment variable its config refers to
	// ($NATS_ADMIN_PASSWORD) as a number when it starts with a digit or '-', and refuses to start.
	Password Kind = iota
	// JWTKeys is GATEWAY_JWT_KEYS' kid:secret list: one HS256 key of 48 random bytes (base64url) whose
	// kid is its creation time. Rotating puts a new key first and keeps the previous signing key after
	// it (tokens it signed still verify until they expire); older ones are dropped.
	JWTKeys
	// NacosToken is Nacos' NACOS_AUTH_TOKEN: standard base64 of 32 random bytes (Nacos requires a base64
	// key of at least 32 bytes).
	NacosToken
)

// Value is one generated secret.
type Value struct {
	Name string // file name in Dir
	Kind Kind
}

// Values lists every secret of the compose stack and the dev overlay for the services of list.
func Values(list []servicelist.Service) []Value {
	vs := []Value{
		{"postgres-password", Password},
		{"nacos-auth-token", NacosToken},
		{"nacos-identity-key", Password},
		{"nacos-identity-value", Password},
		{"grafana-admin-password", Password},
		{"kafka-admin-password", Password},
		{"nats-admin-password", Password},
		{"nacos-admin-password", Password},
	}
	for _, s := range list {
		if s.Database {
			vs = append(vs, Value{s.Name + "-db-password", Password})
		}
		if s.Kind == servicelist.KindHTTP {
			vs = append(vs, Value{s.Name + "-jwt-keys", JWTKeys})
		}
		if s.Kafka {
			vs = append(vs, Value{s.Name + "-kafka-password", Password})
		}
		if s.NATS {
			vs = append(vs, Value{s.Name + "-nats-password", Password})
		}
		vs = append(vs, Value{s.Name + "-nacos-password", Password})
	}
	return vs
}

// Options says where to write and what to rotate.
type Options struct {
	Dir      string                // values and compose env files (created 0700)
	K8sDir   string                // the dev overlay's secret files ("" = none)
	Services []servicelist.Service // services/*/service.yaml
	// Rotate names the values drawn anew although present ("all" = every one).
	Rotate []string
	Rand   io.Reader // nil = crypto/rand.Reader
	Now    time.Time // kid of new JWT keys; zero = time.Now()
}

// Result says what Ensure did, by value name.
type Result struct {
	Created, Rotated, Kept []string
}

func (r Result) String() string {
	var b strings.Builder
	for _, x := range []struct {
		verb  string
		names []string
	}{{"created", r.Created}, {"rotated", r.Rotated}, {"kept", r.Kept}} {
		if len(x.names) > 0 {
			fmt.Fprintf(&b, "%s %s\n", x.verb, strings.Join(x.names, " "))
		}
	}
	return b.String()
}

// Ensure makes sure every value of Values exists in o.Dir (kept unless rotated), then rewrites the
// derived files: o.Dir/compose/*.env and the files of o.K8sDir.
func Ensure(o Options) (Result, error) {
	var res Result
	if o.Dir == "" {
		return res, errors.New("the secrets directory is required")
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	all := Values(o.Services)
	for _, r := range o.Rotate {
		if r != "all" && !slices.ContainsFunc(all, func(v Value) bool { return v.Name == r }) {
			return res, fmt.Errorf("rotate %q: no such secret (one of all, %s)", r, strings.Join(names(all), ", "))
		}
	}
	if err := mkdirPrivate(o.Dir); err != nil {
		return res, err
	}
	vals := map[string]string{}
	for _, v := range all {
		path := filepath.Join(o.Dir, v.Name)
		old, err := readValue(path)
		if err != nil {
			return res, err
		}
		rotate := slices.Contains(o.Rotate, "all") || slices.Contains(o.Rotate, v.Name)
		if old != "" && !rotate {
			if err := os.Chmod(path, 0o600); err != nil {
				return res, fmt.Errorf("secrets: %w", err)
			}
			vals[v.Name] = old
			res.Kept = append(res.Kept, v.Name)
			continue
		}
		val, err := draw(o, v.Kind, old)
		if err != nil {
			return res, err
		}
		if err := writePrivate(path, []byte(val+"\n")); err != nil {
			return res, err
		}
		vals[v.Name] = val
		if old == "" {
			res.Created = append(res.Created, v.Name)
		} else {
			res.Rotated = append(res.Rotated, v.Name)
		}
	}
	if err := writeCompose(filepath.Join(o.Dir, "compose"), o.Services, vals); err != nil {
		return res, err
	}
	if o.K8sDir != "" {
		if err := writeK8s(o.K8sDir, o.Services, vals); err != nil {
			return res, err
		}
	}
	return res, nil
}

func names(vs []Value) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.Name
	}
	return out
}

// draw returns a new value of kind; old is the current one (a JWT key list keeps its first key).
func draw(o Options, kind Kind, old string) (string, error) {
	n := 32
	if kind == JWTKeys {
		n = 48
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(o.Rand, b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	switch kind {
	case NacosToken:
		return base64.StdEncoding.EncodeToString(b), nil
	case JWTKeys:
		kid := "k" + o.Now.UTC().Format("20060102T150405")
		key := kid + ":" + base64.RawURLEncoding.EncodeToString(b)
		// The previous signing key stays second (verify only) unless it has the same kid.
		if prev, _, _ := strings.Cut(old, ","); prev != "" && !strings.HasPrefix(prev, kid+":") {
			key += "," + prev
		}
		return key, nil
	default:
		return "p" + base64.RawURLEncoding.EncodeToString(b), nil
	}
}

// DSN is the connection string of svc's own database role in compose and the dev overlay (both name
// the PostgreSQL host postgres).
func DSN(svc, password string) string {
	return fmt.Sprintf("postgres://%s:%s@postgres:5432/%s?sslmode=disable", svc, password, svc)
}

// KafkaAdmin is the Kafka super user of compose and the dev overlay (super.users): it logs in with
// SASL/PLAIN on the broker's internal listener (inter-broker, controller, the kafka-setup job and the
// healthcheck); the services log in with SASL/SCRAM-SHA-512 as their own users, which kafka-setup
// creates.
const KafkaAdmin = "admin"

// KafkaAdminJAAS is the broker's JAAS line of its PLAIN listeners (internal and controller): the
// admin's own login (inter-broker and controller clients) and the one user the listener accepts.
func KafkaAdminJAAS(password string) string {
	return fmt.Sprintf(`org.apache.kafka.common.security.plain.PlainLoginModule required username="%[1]s" password="%[2]s" user_%[1]s="%[2]s";`, KafkaAdmin, password)
}

// NacosAdmin is Nacos' built-in administrator (Nacos 2.4 starts without its password: nacos-setup
// sets it, then creates a user per service).
const NacosAdmin = "nacos"

// ComposeEnv returns the env files of the compose containers, by file name (container.env).
func ComposeEnv(list []servicelist.Service, vals map[string]string) map[string][]string {
	kafkaAdmin := vals["kafka-admin-password"]
	files := map[string][]string{
		"postgres.env": {"POSTGRES_PASSWORD=" + vals["postgres-password"]},
		"nacos.env": {"NACOS_AUTH_TOKEN=" + vals["nacos-auth-token"],
			"NACOS_AUTH_IDENTITY_KEY=" + vals["nacos-identity-key"],
			"NACOS_AUTH_IDENTITY_VALUE=" + vals["nacos-identity-value"]},
		"nacos-setup.env": {"NACOS_ADMIN_PASSWORD=" + vals["nacos-admin-password"]},
		"grafana.env":     {"GF_SECURITY_ADMIN_PASSWORD=" + vals["grafana-admin-password"]},
		"nats.env":        {"NATS_ADMIN_PASSWORD=" + vals["nats-admin-password"]},
		// The apache/kafka image turns every KAFKA_* variable into a server.properties line; the
		// admin password for the healthcheck and kafka-setup is not one.
		"kafka.env": {"KAFKA_LISTENER_NAME_INTERNAL_PLAIN_SASL_JAAS_CONFIG=" + KafkaAdminJAAS(kafkaAdmin),
			"KAFKA_LISTENER_NAME_CONTROLLER_PLAIN_SASL_JAAS_CONFIG=" + KafkaAdminJAAS(kafkaAdmin),
			"SHOPMESH_KAFKA_ADMIN_PASSWORD=" + kafkaAdmin},
		"kafka-setup.env": {"SHOPMESH_KAFKA_ADMIN_PASSWORD=" + kafkaAdmin},
	}
	for _, s := range list {
		p := s.Prefix()
		var env []string
		if s.Kafka {
			pw := vals[s.Name+"-kafka-password"]
			files["kafka-setup.env"] = append(files["kafka-setup.env"], p+"_KAFKA_PASSWORD="+pw)
			env = append(env, p+"_KAFKA_PASSWORD="+pw)
		}
		nacos := vals[s.Name+"-nacos-password"]
		files["nacos-setup.env"] = append(files["nacos-setup.env"], p+"_NACOS_PASSWORD="+nacos)
		env = append(env, p+"_REGISTRY_NACOS_PASSWORD="+nacos)
		if s.Database {
			pw := vals[s.Name+"-db-password"]
			files["postgres.env"] = append(files["postgres.env"], p+"_DB_PASSWORD="+pw)
			env = append(env, p+"_DSN="+DSN(s.Name, pw))
		}
		if s.Kind == servicelist.KindHTTP {
			env = append(env, p+"_JWT_KEYS="+vals[s.Name+"-jwt-keys"])
		}
		if s.NATS {
			pw := vals[s.Name+"-nats-password"]
			files["nats.env"] = append(files["nats.env"], p+"_NATS_PASSWORD="+pw)
			env = append(env, p+"_NATS_PASSWORD="+pw)
		}
		files[s.Name+".env"] = env
	}
	return files
}

// K8sFiles returns the files of the dev overlay's secretGenerator, by file name.
func K8sFiles(list []servicelist.Service, vals map[string]string) map[string]string {
	files := map[string]string{
		"postgres-password":    vals["postgres-password"],
		"nacos-auth-token":     vals["nacos-auth-token"],
		"nacos-identity-key":   vals["nacos-identity-key"],
		"nacos-identity-value": vals["nacos-identity-value"],
		"nacos-admin-password": vals["nacos-admin-password"],
		"kafka-admin-password": vals["kafka-admin-password"],
		"nats-admin-password":  vals["nats-admin-password"],
	}
	for _, s := range list {
		if s.Kafka {
			files[s.Name+"-kafka-password"] = vals[s.Name+"-kafka-password"]
		}
		files[s.Name+"-nacos-password"] = vals[s.Name+"-nacos-password"]
		if s.Database {
			pw := vals[s.Name+"-db-password"]
			files[s.Name+"-db-password"] = pw
			files[s.Name+"-dsn"] = DSN(s.Name, pw)
		}
		if s.NATS {
			files[s.Name+"-nats-password"] = vals[s.Name+"-nats-password"]
		}
		if s.Kind == servicelist.KindHTTP {
			files[s.Name+"-jwt-keys"] = vals[s.Name+"-jwt-keys"]
		}
	}
	return files
}

func writeCompose(dir string, list []servicelist.Service, vals map[string]string) error {
	if err := mkdirPrivate(dir); err != nil {
		return err
	}
	for name, env := range ComposeEnv(list, vals) {
		body := "# Generated by make secrets (deploy/cmd/secrets); do not commit.\n" + strings.Join(env, "\n")
		if len(env) > 0 {
			body += "\n"
		}
		if err := writePrivate(filepath.Join(dir, name), []byte(body)); err != nil {
			return err
		}
	}
	return nil
}

func writeK8s(dir string, list []servicelist.Service, vals map[string]string) error {
	if err := mkdirPrivate(dir); err != nil {
		return err
	}
	for name, v := range K8sFiles(list, vals) {
		if err := writePrivate(filepath.Join(dir, name), []byte(v)); err != nil {
			return err
		}
	}
	return nil
}

// ReadValues reads every value of list from dir (as Ensure wrote them).
func ReadValues(dir string, list []servicelist.Service) (map[string]string, error) {
	vals := map[string]string{}
	for _, v := range Values(list) {
		s, err := readValue(filepath.Join(dir, v.Name))
		if err != nil {
			return nil, err
		}
		if s == "" {
			return nil, fmt.Errorf("%s: missing; run make secrets", filepath.Join(dir, v.Name))
		}
		vals[v.Name] = s
	}
	return vals, nil
}

// readValue returns the trimmed content of path, "" when it does not exist.
func readValue(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("secrets: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func mkdirPrivate(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	return nil
}

// writePrivate replaces path with data (mode 0600) when it differs: a temporary file in the same
// folder, renamed over it.
func writePrivate(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return os.Chmod(path, 0o600)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("secrets: write %s: %w", path, err)
	}
	return nil
}
