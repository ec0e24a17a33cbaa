package manifests_test

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/shopmesh/shopmesh/deploy/devsecrets"
	"github.com/shopmesh/shopmesh/deploy/servicelist"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
)

// loadCompose loads dir's compose.yaml with the env files `make secrets` wrote into secrets.
func loadCompose(t *testing.T, dir, secrets string) *types.Project {
	t.Helper()
	opts, err := composeProject(dir, secrets)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose-go: %v", err)
	}
	return p
}

func checkCompose(t *testing.T, root, bins string, list []servicelist.Service, gen generated) {
	dir := filepath.Join(root, "deploy", "compose")
	p := loadCompose(t, dir, gen.dir)
	checkComposeMounts(t, p, list)

	// One-shot jobs: something waits for them to complete.
	jobs := map[string]bool{}
	for _, s := range p.Services {
		for dep, d := range s.DependsOn {
			if d.Condition == types.ServiceConditionCompletedSuccessfully {
				jobs[dep] = true
			}
		}
	}
	published := map[string]string{}
	for _, name := range sortedKeys(p.Services) {
		s := p.Services[name]
		if !pinned(s.Image) {
			t.Errorf("%s: image %q is not pinned to a version tag", name, s.Image)
		}
		switch {
		case jobs[name]:
			if s.Restart != "no" && s.Restart != "" {
				t.Errorf("%s: a one-shot job must not restart, got restart %q", name, s.Restart)
			}
		case s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) == 0:
			t.Errorf("%s: no healthcheck", name)
		}
		for dep, d := range s.DependsOn {
			want := types.ServiceConditionHealthy
			if jobs[dep] {
				want = types.ServiceConditionCompletedSuccessfully
			}
			if d.Condition != want {
				t.Errorf("%s: depends_on %s with condition %q, want %q", name, dep, d.Condition, want)
			}
			if _, ok := p.Services[dep]; !ok {
				t.Errorf("%s: depends_on unknown service %s", name, dep)
			}
		}
		for _, port := range s.Ports {
			if port.Published == "" {
				continue
			}
			key := port.HostIP + ":" + port.Published + "/" + port.Protocol
			if other, dup := published[key]; dup {
				t.Errorf("%s and %s both publish %s", name, other, key)
			}
			published[key] = name
		}
	}
	if len(published) == 0 {
		t.Error("nothing published")
	}

	for _, entry := range list {
		svc := entry.Name
		t.Run(svc, func(t *testing.T) {
			s, ok := p.Services[svc]
			if !ok {
				t.Fatalf("no service %s", svc)
			}
			if s.Build == nil || s.Build.Dockerfile != "deploy/docker/Dockerfile" || s.Build.Args["SERVICE"] == nil || *s.Build.Args["SERVICE"] != svc {
				t.Errorf("build = %+v, want deploy/docker/Dockerfile with SERVICE=%s", s.Build, svc)
			}
			if got := []string(s.HealthCheck.Test); !slices.Equal(got, []string{"CMD", "/app", "healthcheck"}) {
				t.Errorf("healthcheck %q, want [CMD /app healthcheck]", got)
			}
			if !s.ReadOnly || s.User == "" || strings.HasPrefix(s.User, "0") || s.User == "root" {
				t.Errorf("read_only %v user %q: want a read-only root filesystem and a non-root user", s.ReadOnly, s.User)
			}
			if got := s.GetScale(); got != entry.Replicas {
				t.Errorf("replicas = %d, want %d (services/%s/service.yaml)", got, entry.Replicas, svc)
			}
			// Start order: its schema first, then the brokers it uses, Nacos and every service it calls;
			// for Kafka and Nacos, the jobs that create its users there (after those are healthy).
			deps := map[string]string{"nacos-setup": types.ServiceConditionCompletedSuccessfully}
			if entry.Database {
				deps[svc+"-migrate"] = types.ServiceConditionCompletedSuccessfully
			}
			if entry.Kafka {
				deps["kafka-setup"] = types.ServiceConditionCompletedSuccessfully
			}
			if entry.NATS {
				deps["nats"] = types.ServiceConditionHealthy
			}
			for _, c := range entry.Calls {
				deps[c] = types.ServiceConditionHealthy
			}
			got := map[string]string{}
			for dep, d := range s.DependsOn {
				got[dep] = d.Condition
			}
			if !maps.Equal(got, deps) {
				t.Errorf("depends_on %v, want %v", got, deps)
			}
			if _, ok := p.Services[svc+"-migrate"]; ok != entry.Database {
				t.Errorf("a %s-migrate job: %v, want %v (database: %v)", svc, ok, entry.Database, entry.Database)
			}
			if isHTTP(entry) && !slices.ContainsFunc(s.Ports, func(pc types.ServicePortConfig) bool {
				return pc.Published == strconv.Itoa(entry.DevPort) && pc.Target == 8080 && pc.HostIP == "127.0.0.1"
			}) {
				t.Errorf("%s is not published on 127.0.0.1:%d: %+v", svc, entry.DevPort, s.Ports)
			}
			var certs bool
			for _, v := range s.Volumes {
				if v.Target == "/certs" && v.ReadOnly && strings.HasSuffix(filepath.ToSlash(v.Source), ".run/certs/"+svc) {
					certs = true
				}
			}
			if !certs {
				t.Errorf("its own folder of `make certs -per-service` (.run/certs/%s) is not mounted read-only at /certs", svc)
			}
			if !slices.ContainsFunc(s.EnvFiles, func(f types.EnvFile) bool {
				return bool(f.Required) && filepath.Base(f.Path) == svc+".env" && filepath.Dir(f.Path) == filepath.Join(gen.dir, "compose")
			}) {
				t.Errorf("env_file %+v: want the required %s.env of make secrets", s.EnvFiles, svc)
			}
			env := map[string]string{}
			for k, v := range s.Environment {
				if v == nil {
					t.Errorf("%s has no value", k)
					continue
				}
				env[k] = *v
			}
			p := entry.Prefix()
			if env[p+"_REGISTRY_BACKEND"] != "nacos" {
				t.Errorf("%s_REGISTRY_BACKEND = %q, want nacos", p, env[p+"_REGISTRY_BACKEND"])
			}
			if !strings.HasPrefix(env[p+"_TELEMETRY_OTLP_ENDPOINT"], "jaeger:") {
				t.Errorf("OTLP endpoint %q is not jaeger", env[p+"_TELEMETRY_OTLP_ENDPOINT"])
			}
			for _, k := range []string{"_TLS_CA_FILE", "_TLS_CERT_FILE", "_TLS_KEY_FILE"} {
				f := env[p+k]
				if !strings.HasPrefix(f, "/certs/") {
					t.Errorf("%s%s = %q is not under /certs", p, k, f)
				}
			}
			if env[p+"_TLS_CA_FILE"] != "/certs/ca.pem" || env[p+"_TLS_CERT_FILE"] != "/certs/cert.pem" || env[p+"_TLS_KEY_FILE"] != "/certs/key.pem" {
				t.Errorf("certificate files %q, %q, %q do not match `make certs -per-service` names", env[p+"_TLS_CA_FILE"], env[p+"_TLS_CERT_FILE"], env[p+"_TLS_KEY_FILE"])
			}
			checkEnv(t, bins, entry, env, config.Compose)
			checkSecretEnv(t, entry, env, gen.vals)
			if s.StopGracePeriod == nil || int64(*s.StopGracePeriod) <= int64(drainBudget(t, entry, env)) {
				t.Errorf("stop_grace_period %v must exceed drain delay + shutdown timeout %v", s.StopGracePeriod, drainBudget(t, entry, env))
			}
		})
	}
	for _, job := range sortedKeys(jobs) {
		s := p.Services[job]
		svc, isMigrate := strings.CutSuffix(job, "-migrate")
		if !isMigrate {
			continue // kafka-setup, nacos-setup: checkSetupJobs
		}
		if !slices.Equal(s.Command, types.ShellCommand{"migrate", "up"}) {
			t.Errorf("%s: command %q, want [migrate up]", job, s.Command)
		}
		if !maps.EqualFunc(s.Environment, p.Services[svc].Environment, func(a, b *string) bool { return a != nil && b != nil && *a == *b }) {
			t.Errorf("%s: environment differs from %s's", job, svc)
		}
	}
	checkAdvertisedHosts(t, p, jobs)
	nats, err := os.ReadFile(filepath.Join(dir, "config", "nats.conf"))
	if err != nil || !strings.Contains(string(nats), "sync_interval: always") {
		t.Errorf("NATS config must fsync every write (sync_interval: always): %v", err)
	}
	natsEnv := map[string]string{}
	for k, v := range p.Services["nats"].Environment {
		if v != nil {
			natsEnv[k] = *v
		}
	}
	checkNATSUsers(t, string(nats), natsEnv, list, gen.vals)
	checkSetupJobs(t, p, list, gen.vals)
	for _, want := range []string{"postgres", "kafka", "nats", "nacos", "jaeger", "prometheus", "grafana"} {
		if _, ok := p.Services[want]; !ok {
			t.Errorf("no %s service", want)
		}
	}
	if img := p.Services["kafka"].Image; img != "apache/kafka:3.9.1" {
		t.Errorf("kafka image %q, want apache/kafka:3.9.1", img)
	}
}

// checkComposeMounts: no container mounts the certificate folder of `make certs` whole or the CA key;
// a service's containers (and its migrate job) mount its own folder .run/certs/<service> only, and
// nothing else of .run (the other containers: nothing of it).
func checkComposeMounts(t *testing.T, p *types.Project, list []servicelist.Service) {
	t.Helper()
	for _, name := range sortedKeys(p.Services) {
		own := strings.TrimSuffix(name, "-migrate")
		if _, ok := servicelist.Find(list, own); !ok {
			own = ""
		}
		for _, v := range p.Services[name].Volumes {
			src := filepath.ToSlash(v.Source)
			_, after, underRun := strings.Cut(src, "/.run/")
			switch {
			case strings.Contains(src, "ca-key"):
				t.Errorf("%s mounts the CA key %s", name, v.Source)
			case !underRun:
			case own == "" || after != "certs/"+own:
				t.Errorf("%s mounts %s; a container may mount only its own .run/certs/<service> folder", name, v.Source)
			case !v.ReadOnly:
				t.Errorf("%s mounts %s writable", name, v.Source)
			}
		}
	}
}

// checkAdvertisedHosts: no two registering containers announce the same fixed address in Nacos. A
// replicated service must not set <P>_REGISTRY_NACOS_ADVERTISE_HOST at all (its replicas share one
// environment, so they would all register one address and Nacos would hold a single instance): without
// it each container registers its own interface address. A fixed host may appear once in the project.
// One-shot jobs do not register and are skipped.
func checkAdvertisedHosts(t *testing.T, p *types.Project, jobs map[string]bool) {
	t.Helper()
	const key = "_REGISTRY_NACOS_ADVERTISE_HOST"
	owner := map[string]string{}
	for _, name := range sortedKeys(p.Services) {
		s := p.Services[name]
		if jobs[name] {
			continue
		}
		for k, v := range s.Environment {
			if !strings.HasSuffix(k, key) || v == nil || *v == "" {
				continue
			}
			if n := s.GetScale(); n > 1 {
				t.Errorf("%s: %d replicas all advertise %s=%s in Nacos; remove it so each registers its own address", name, n, k, *v)
			}
			if other, dup := owner[*v]; dup {
				t.Errorf("%s and %s both advertise %s in Nacos", other, name, *v)
			}
			owner[*v] = name
		}
	}
}

// checkSetupJobs: Kafka and Nacos authenticate in compose, and the one-shot jobs that create the
// service users run their script (init/, generated from the list) with the generated passwords.
func checkSetupJobs(t *testing.T, p *types.Project, list []servicelist.Service, vals map[string]string) {
	t.Helper()
	env := func(name string) map[string]string {
		out := map[string]string{}
		for k, v := range p.Services[name].Environment {
			if v != nil {
				out[k] = *v
			}
		}
		return out
	}
	kafka := env("kafka")
	for k, want := range map[string]string{
		"KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND":                  "false",
		"KAFKA_SUPER_USERS":                                     "User:" + devsecrets.KafkaAdmin,
		"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":                  "CLIENT:SASL_PLAINTEXT,INTERNAL:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
		"KAFKA_LISTENER_NAME_CLIENT_SASL_ENABLED_MECHANISMS":    "SCRAM-SHA-512",
		"KAFKA_LISTENER_NAME_INTERNAL_PLAIN_SASL_JAAS_CONFIG":   devsecrets.KafkaAdminJAAS(vals["kafka-admin-password"]),
		"KAFKA_LISTENER_NAME_CONTROLLER_PLAIN_SASL_JAAS_CONFIG": devsecrets.KafkaAdminJAAS(vals["kafka-admin-password"]),
		"SHOPMESH_KAFKA_ADMIN_PASSWORD":                         vals["kafka-admin-password"],
	} {
		if kafka[k] != want {
			t.Errorf("kafka: %s = %q, want %q", k, kafka[k], want)
		}
	}
	nacos := env("nacos")
	if nacos["NACOS_AUTH_ENABLE"] != "true" || nacos["NACOS_AUTH_TOKEN"] != vals["nacos-auth-token"] ||
		nacos["NACOS_AUTH_IDENTITY_KEY"] != vals["nacos-identity-key"] || nacos["NACOS_AUTH_IDENTITY_VALUE"] != vals["nacos-identity-value"] {
		t.Error("nacos: want NACOS_AUTH_ENABLE=true and the generated token and identity")
	}
	for _, job := range []struct{ name, admin, adminVal, suffix, kind string }{
		{"kafka-setup", "SHOPMESH_KAFKA_ADMIN_PASSWORD", "kafka-admin-password", "_KAFKA_PASSWORD", "kafka"},
		{"nacos-setup", "NACOS_ADMIN_PASSWORD", "nacos-admin-password", "_NACOS_PASSWORD", "nacos"},
	} {
		s, ok := p.Services[job.name]
		if !ok {
			t.Errorf("no %s job", job.name)
			continue
		}
		script := "/setup/" + job.name + ".sh"
		if !slices.Equal(s.Entrypoint, types.ShellCommand{"/bin/sh", script}) ||
			!slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
				return v.Target == script && v.ReadOnly && filepath.Base(v.Source) == job.name+".sh"
			}) {
			t.Errorf("%s: entrypoint %q, volumes %+v: want its init/%s.sh mounted read-only and run", job.name, s.Entrypoint, s.Volumes, job.name)
		}
		if dep, ok := s.DependsOn[job.kind]; !ok || dep.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s: want it to wait for %s healthy", job.name, job.kind)
		}
		e := env(job.name)
		want := map[string]string{job.admin: vals[job.adminVal]}
		for _, svc := range list {
			if job.kind == "kafka" && !svc.Kafka {
				continue
			}
			want[svc.Prefix()+job.suffix] = vals[svc.Name+"-"+job.kind+"-password"]
		}
		if !maps.Equal(e, want) {
			t.Errorf("%s: environment %v, want exactly the admin's and each service's password (%v)", job.name, sortedKeys(e), sortedKeys(want))
		}
	}
}
