package manifests_test

import (
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/shopmesh/shopmesh/deploy/devsecrets"
	"github.com/shopmesh/shopmesh/deploy/servicelist"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
)

// rendered is an overlay's output, decoded into the typed API objects, by name.
type rendered struct {
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	jobs         map[string]*batchv1.Job
	services     map[string]*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	hpas         map[string]*autoscalingv2.HorizontalPodAutoscaler
	pdbs         map[string]*policyv1.PodDisruptionBudget
	policies     map[string]*networkingv1.NetworkPolicy
	namespaces   map[string]*corev1.Namespace
}

// decodeStrict decodes JSON into v the way the API server's strict field validation does: field names
// match case-sensitively, and an unknown or duplicate field fails (a typo kubectl would drop or reject).
func decodeStrict(data []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(data, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// kinds is every kind an overlay may render ("apiVersion/Kind"), each with what decodes one object of
// it into its map of r.
func (r *rendered) kinds() map[string]func(t *testing.T, name string, data []byte) {
	return map[string]func(*testing.T, string, []byte){
		"apps/v1/Deployment":                     into(&r.deployments),
		"apps/v1/StatefulSet":                    into(&r.statefulSets),
		"batch/v1/Job":                           into(&r.jobs),
		"v1/Service":                             into(&r.services),
		"v1/ConfigMap":                           into(&r.configMaps),
		"v1/Secret":                              into(&r.secrets),
		"v1/Namespace":                           into(&r.namespaces),
		"autoscaling/v2/HorizontalPodAutoscaler": into(&r.hpas),
		"policy/v1/PodDisruptionBudget":          into(&r.pdbs),
		"networking.k8s.io/v1/NetworkPolicy":     into(&r.policies),
	}
}

// into returns a decoder of objects of type T into *m (created empty), by name: strict, each name once.
func into[T any](m *map[string]*T) func(t *testing.T, name string, data []byte) {
	*m = map[string]*T{}
	return func(t *testing.T, name string, data []byte) {
		t.Helper()
		v := new(T)
		if err := decodeStrict(data, v); err != nil {
			t.Errorf("%T %s: %v", v, name, err)
			return
		}
		if _, dup := (*m)[name]; dup {
			t.Errorf("%T %s twice", v, name)
		}
		(*m)[name] = v
	}
}

func render(t *testing.T, dir string) rendered {
	t.Helper()
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var r rendered
	kinds := r.kinds()
	for _, res := range res.Resources() {
		data, err := res.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		gvk := res.GetGvk()
		decode, ok := kinds[gvk.ApiVersion()+"/"+gvk.Kind]
		if !ok {
			t.Errorf("unexpected object %s %s", gvk, res.GetName())
			continue
		}
		decode(t, res.GetName(), data)
	}
	return r
}

// workload is a pod template with what owns it.
type workload struct {
	kind, name string
	replicas   *int32
	pod        corev1.PodSpec
}

// workloads are the rendered Deployments, StatefulSets and Jobs, in a stable order.
func (r rendered) workloads() []workload {
	var ws []workload
	for _, name := range sortedKeys(r.deployments) {
		d := r.deployments[name]
		ws = append(ws, workload{"Deployment", name, d.Spec.Replicas, d.Spec.Template.Spec})
	}
	for _, name := range sortedKeys(r.statefulSets) {
		s := r.statefulSets[name]
		ws = append(ws, workload{"StatefulSet", name, s.Spec.Replicas, s.Spec.Template.Spec})
	}
	for _, name := range sortedKeys(r.jobs) {
		j := r.jobs[name]
		ws = append(ws, workload{"Job", name, nil, j.Spec.Template.Spec})
	}
	return ws
}

// companions are the objects each service's Deployment needs beside it, by kind, with their checks.
var companions = []struct {
	kind  string
	check func(t *testing.T, r rendered, svc string, d *appsv1.Deployment)
}{
	{"HorizontalPodAutoscaler", func(t *testing.T, r rendered, svc string, d *appsv1.Deployment) {
		hpa, ok := r.hpas[svc]
		if !ok || hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != svc ||
			hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas || len(hpa.Spec.Metrics) == 0 {
			t.Errorf("no HorizontalPodAutoscaler for Deployment %s with min >= 2 and a metric", svc)
			return
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas < *hpa.Spec.MinReplicas {
			t.Errorf("replicas %v below the HPA minimum %d", d.Spec.Replicas, *hpa.Spec.MinReplicas)
		}
	}},
	{"PodDisruptionBudget", func(t *testing.T, r rendered, svc string, d *appsv1.Deployment) {
		if pdb, ok := r.pdbs[svc]; !ok || !selects(pdb.Spec.Selector.MatchLabels, d.Spec.Template.Labels) ||
			(pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil) {
			t.Errorf("no PodDisruptionBudget selecting %s", svc)
		}
	}},
	{"NetworkPolicy", func(t *testing.T, r rendered, svc string, d *appsv1.Deployment) {
		np, ok := r.policies[svc]
		if !ok || !selects(np.Spec.PodSelector.MatchLabels, d.Spec.Template.Labels) || len(np.Spec.PolicyTypes) != 2 {
			t.Errorf("no NetworkPolicy (Ingress and Egress) selecting %s", svc)
			return
		}
		if !allows(np.Spec.Ingress, "prometheus", 9090) {
			t.Errorf("NetworkPolicy %s: Prometheus may not scrape the admin port 9090", svc)
		}
	}},
	{"Service", func(t *testing.T, r rendered, svc string, d *appsv1.Deployment) {
		if _, ok := r.services[svc]; !ok {
			t.Errorf("no Service %s", svc)
		}
	}},
}

// ingressNamespace is the prod ingress controller's namespace (deploy/cmd/servicegen IngressNamespace).
const ingressNamespace = "ingress-nginx"

// checkIngressOnly: in prod the edge's API port (8080) is admitted from the ingress controller's
// namespace only (no rule open to every source on it), and the edge knows TLS ends at the ingress.
func checkIngressOnly(t *testing.T, np *networkingv1.NetworkPolicy, terminated string) {
	t.Helper()
	if terminated != "true" {
		t.Errorf("prod: HTTPS_TERMINATED_UPSTREAM = %q, want true (TLS ends at the ingress)", terminated)
	}
	if np == nil {
		t.Fatal("prod: no NetworkPolicy for the edge")
	}
	var fromIngress bool
	for _, r := range np.Spec.Ingress {
		if !slices.ContainsFunc(r.Ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port != nil && p.Port.IntVal == 8080 }) {
			continue
		}
		if len(r.From) == 0 {
			t.Error("prod: the edge's NetworkPolicy admits port 8080 from everywhere; want the ingress controller's namespace only")
		}
		for _, f := range r.From {
			if f.NamespaceSelector == nil || f.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != ingressNamespace || f.PodSelector != nil || f.IPBlock != nil {
				t.Errorf("prod: the edge's port 8080 admits %+v; want namespace %s only", f, ingressNamespace)
				continue
			}
			fromIngress = true
		}
	}
	if !fromIngress {
		t.Errorf("prod: the edge's NetworkPolicy does not admit port 8080 from namespace %s", ingressNamespace)
	}
}

// containerEnv resolves a container's environment as the kubelet would: envFrom ConfigMaps, then env
// (values, ConfigMap and Secret keys). A Secret the overlay does not render (prod: provided by the
// operator) gets a placeholder of the right shape.
func containerEnv(t *testing.T, r rendered, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, src := range c.EnvFrom {
		if src.ConfigMapRef == nil {
			t.Errorf("%s: envFrom other than a ConfigMap", c.Name)
			continue
		}
		cm, ok := r.configMaps[src.ConfigMapRef.Name]
		if !ok {
			t.Errorf("%s: envFrom ConfigMap %s is not rendered", c.Name, src.ConfigMapRef.Name)
			continue
		}
		for k, v := range cm.Data {
			env[src.Prefix+k] = v
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			if s, ok := r.secrets[ref.Name]; ok {
				v, ok := s.Data[ref.Key]
				if !ok {
					t.Errorf("%s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
				}
				env[e.Name] = string(v)
				continue
			}
			switch {
			case strings.HasSuffix(e.Name, "_DSN"):
				// Not a committed password: prod refuses those (config.CommittedSecret).
				env[e.Name] = "postgres://svc:operator-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "@db.example:5432/svc?sslmode=verify-full"
			case strings.HasSuffix(e.Name, "_JWT_KEYS"):
				env[e.Name] = "operator:placeholder-key-provided-by-the-operator-" + strings.Repeat("x", 32)
			default:
				env[e.Name] = "placeholder-secret-provided-by-the-operator-" + strings.Repeat("x", 32)
			}
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP":
			env[e.Name] = "10.244.0.17" // what the kubelet puts there: this pod's address
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			env[e.Name] = r.configMaps[ref.Name].Data[ref.Key]
		default:
			t.Errorf("%s: unsupported valueFrom", e.Name)
		}
	}
	return env
}

// checkKustomize renders overlay of k8sDir (a copy of deploy/k8s whose dev overlay holds the files of
// `make secrets`, whose values are vals) and checks it.
func checkKustomize(t *testing.T, k8sDir, bins, overlay string, list []servicelist.Service, vals map[string]string) {
	r := render(t, filepath.Join(k8sDir, "overlays", overlay))
	profile := config.K8s
	if overlay == "prod" {
		profile = config.Prod
	}
	if len(r.namespaces) != 1 {
		t.Errorf("want one Namespace, got %v", sortedKeys(r.namespaces))
	}
	deny, ok := r.policies["default-deny"]
	if !ok || len(deny.Spec.PodSelector.MatchLabels) != 0 || len(deny.Spec.PodSelector.MatchExpressions) != 0 ||
		len(deny.Spec.Ingress) != 0 || len(deny.Spec.Egress) != 0 || len(deny.Spec.PolicyTypes) != 2 {
		t.Error("no default-deny NetworkPolicy (every pod, Ingress and Egress, no rule)")
	}
	for _, w := range r.workloads() {
		for _, c := range slices.Concat(w.pod.InitContainers, w.pod.Containers) {
			if !pinned(c.Image) {
				t.Errorf("%s %s: image %s is not pinned", w.kind, w.name, c.Image)
			}
		}
	}

	for _, s := range list {
		svc := s.Name
		t.Run(svc, func(t *testing.T) {
			d, ok := r.deployments[svc]
			if !ok {
				t.Fatalf("no Deployment %s", svc)
			}
			checkDeployment(t, r, bins, s, d, profile)
			if overlay == "dev" {
				checkSecretEnv(t, s, containerEnv(t, r, d.Spec.Template.Spec.Containers[0]), vals)
			}
			if overlay == "prod" {
				// Prod's Kafka is authenticated: the service's own user, its password from <svc>-kafka.
				c := d.Spec.Template.Spec.Containers[0]
				env, p := containerEnv(t, r, c), s.Prefix()
				fromSecret := slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
					return e.Name == p+"_KAFKA_PASSWORD" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil &&
						e.ValueFrom.SecretKeyRef.Name == svc+"-kafka"
				})
				if s.Kafka && (env[p+"_KAFKA_USERNAME"] != svc || !fromSecret) {
					t.Errorf("prod: %s_KAFKA_USERNAME = %q and %s_KAFKA_PASSWORD from Secret %s-kafka: %v; want its own user", p, env[p+"_KAFKA_USERNAME"], p, svc, fromSecret)
				}
				if !s.Kafka && (env[p+"_KAFKA_USERNAME"] != "" || env[p+"_KAFKA_PASSWORD"] != "") {
					t.Errorf("prod: Kafka credentials for %s, which does not use Kafka", svc)
				}
				if isHTTP(s) {
					checkIngressOnly(t, r.policies[svc], env[p+"_HTTPS_TERMINATED_UPSTREAM"])
				}
			}
			for _, c := range companions {
				c.check(t, r, svc, d)
			}
		})
	}

	// The call graph of services/*/service.yaml, both ends: every edge (calls) is admitted by the
	// callee's ingress and the caller's egress, and no other pair of services is admitted.
	for _, from := range list {
		for _, to := range list {
			if from.Name == to.Name {
				continue
			}
			allowed := slices.Contains(from.Calls, to.Name)
			in, out := r.policies[to.Name], r.policies[from.Name]
			switch {
			case allowed && (in == nil || !allowsIngress(in.Spec.Ingress, from.Name, 50051)):
				t.Errorf("NetworkPolicy %s does not admit %s on 50051", to.Name, from.Name)
			case !allowed && in != nil && allowsIngress(in.Spec.Ingress, from.Name, 50051):
				t.Errorf("NetworkPolicy %s admits %s, which does not call it", to.Name, from.Name)
			}
			if allowed && (out == nil || !allowsEgress(out.Spec.Egress, to.Name, 50051)) {
				t.Errorf("NetworkPolicy %s does not let it call %s on 50051", from.Name, to.Name)
			}
		}
	}
	// Infrastructure egress: exactly what the service uses (OTLP always).
	for _, s := range list {
		np := r.policies[s.Name]
		if np == nil {
			continue // reported above
		}
		for port, uses := range map[int32]bool{5432: s.Database, 9092: s.Kafka, 4222: s.NATS, 4317: true} {
			if got := allowsEgress(np.Spec.Egress, "", port); got != uses {
				t.Errorf("NetworkPolicy %s: egress to port %d %v, want %v (services/%s/service.yaml)", s.Name, port, got, uses, s.Name)
			}
		}
	}

	switch overlay {
	case "dev":
		if s, ok := r.statefulSets["nats"]; ok {
			cm := r.configMaps["nats-config"]
			if cm == nil {
				for name, c := range r.configMaps {
					if strings.HasPrefix(name, "nats-config") {
						cm = c
					}
				}
			}
			if cm == nil {
				t.Error("no ConfigMap nats-config")
			} else {
				checkNATSUsers(t, cm.Data["nats.conf"], containerEnv(t, r, s.Spec.Template.Spec.Containers[0]), list, vals)
			}
		}
		// Every Secret value is one `make secrets` generated (none is committed in the overlay).
		generated := map[string]bool{}
		for _, v := range devsecrets.K8sFiles(list, vals) {
			generated[v] = true
		}
		for _, name := range sortedKeys(r.secrets) {
			for k, v := range r.secrets[name].Data {
				if !generated[string(v)] {
					t.Errorf("Secret %s key %s is not a value of make secrets", name, k)
				}
			}
		}
		for _, name := range []string{"postgres", "kafka", "nats", "nacos", "jaeger"} {
			s, ok := r.statefulSets[name]
			if !ok || s.Spec.Replicas == nil || *s.Spec.Replicas != 1 {
				t.Errorf("no single-replica StatefulSet %s", name)
				continue
			}
			if _, ok := r.services[name]; !ok {
				t.Errorf("no Service %s", name)
			}
			c := s.Spec.Template.Spec.Containers[0]
			if c.ReadinessProbe == nil {
				t.Errorf("StatefulSet %s has no readiness probe", name)
			}
		}
	case "prod":
		if len(r.secrets) != 0 {
			t.Errorf("prod renders Secrets %v; they are the operator's (no value in the repository)", sortedKeys(r.secrets))
		}
		if len(r.statefulSets) != 0 {
			t.Errorf("prod renders StatefulSets %v; its infrastructure is managed", sortedKeys(r.statefulSets))
		}
		for name, d := range r.deployments {
			c := d.Spec.Template.Spec.Containers[0]
			if d.Spec.Replicas == nil || *d.Spec.Replicas < 3 {
				t.Errorf("prod %s: replicas %v, want >= 3", name, d.Spec.Replicas)
			}
			req, lim := c.Resources.Requests.Memory(), c.Resources.Limits.Memory()
			if lim.IsZero() || req.Cmp(*lim) != 0 || c.Resources.Limits.Cpu().IsZero() {
				t.Errorf("prod %s: want memory limit = request and a CPU limit, got %v", name, c.Resources)
			}
		}
	}
}

func checkDeployment(t *testing.T, r rendered, bins string, s servicelist.Service, d *appsv1.Deployment, profile config.Profile) {
	t.Helper()
	svc := s.Name
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	env := containerEnv(t, r, c)
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		// Otherwise the kubelet adds ORDER_PORT, ORDER_SERVICE_HOST, ... for every Service: variables
		// in the services' own namespace, which check-config rejects as unknown.
		t.Error("enableServiceLinks must be false")
	}
	checkEnv(t, bins, s, env, profile)
	p := s.Prefix()
	checkAdvertiseHost(t, r, c)

	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %v: want CPU and memory requests and a memory limit", c.Resources)
	}
	sc, psc := c.SecurityContext, pod.SecurityContext
	nonRoot := (sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)
	if !nonRoot || sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
		!slices.Contains(sc.Capabilities.Drop, corev1.Capability("ALL")) {
		t.Errorf("securityContext: want runAsNonRoot, readOnlyRootFilesystem, no privilege escalation, drop ALL; got %+v / %+v", sc, psc)
	}

	// Probes: native gRPC on the plaintext health port for gRPC services, HTTP for the gateway.
	if c.LivenessProbe == nil || c.ReadinessProbe == nil {
		t.Fatal("want liveness and readiness probes")
	}
	if isHTTP(s) {
		httpPort := port(t, env[p+"_HTTP_ADDR"])
		for _, pr := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
			if pr.HTTPGet == nil || resolvePort(c, pr.HTTPGet.Port.String()) != httpPort {
				t.Errorf("gateway probe %+v: want an HTTP GET on the HTTP port %s", pr.ProbeHandler, httpPort)
			}
		}
	} else {
		hp := port(t, env[p+"_HEALTH_ADDR"])
		for _, pr := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
			if pr.GRPC == nil || strconv.Itoa(int(pr.GRPC.Port)) != hp {
				t.Errorf("probe %+v: want a gRPC probe on the %s_HEALTH_ADDR port %s", pr.ProbeHandler, p, hp)
			}
		}
		if !hasPort(c, hp) || !hasPort(c, port(t, env[p+"_LISTEN_ADDR"])) {
			t.Errorf("container ports %v lack the listen or health port", c.Ports)
		}
		head, ok := r.services[svc+env[p+"_REGISTRY_DNS_SUFFIX"]]
		if env[p+"_REGISTRY_BACKEND"] != "dns" || !ok || head.Spec.ClusterIP != corev1.ClusterIPNone ||
			!selects(head.Spec.Selector, d.Spec.Template.Labels) || len(head.Spec.Ports) == 0 ||
			strconv.Itoa(int(head.Spec.Ports[0].Port)) != env[p+"_REGISTRY_DNS_PORT"] {
			t.Errorf("DNS discovery: want %s_REGISTRY_BACKEND=dns and a headless Service %s%s on %s_REGISTRY_DNS_PORT",
				p, svc, env[p+"_REGISTRY_DNS_SUFFIX"], p)
		}
	}
	if !hasPort(c, port(t, env[p+"_ADMIN_ADDR"])) {
		t.Errorf("container ports %v lack the admin port", c.Ports)
	}
	// Shutdown: the pod gets at least preStop + drain + shutdown before SIGKILL.
	var preStop time.Duration
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Error("want a preStop sleep (endpoints drop the pod meanwhile)")
	} else {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	grace := 30 * time.Second
	if pod.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	}
	if need := preStop + drainBudget(t, s, env); grace < need {
		t.Errorf("terminationGracePeriodSeconds %v < preStop %v + drain and shutdown %v", grace, preStop, need-preStop)
	}

	// Certificates from the <svc>-tls Secret, mounted where the TLS variables point.
	certDir := filepath.Dir(env[p+"_TLS_CERT_FILE"])
	var mounted bool
	for _, m := range c.VolumeMounts {
		if m.MountPath != certDir || !m.ReadOnly {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == svc+"-tls" {
				mounted = true
			}
		}
	}
	// Its own key pair only: no other Secret is mounted in the pod (the CA key is in none).
	for _, v := range pod.Volumes {
		if v.Secret != nil && v.Secret.SecretName != svc+"-tls" {
			t.Errorf("volume %s mounts Secret %s; a pod mounts only its own %s-tls", v.Name, v.Secret.SecretName, svc)
		}
		if v.Projected != nil || v.HostPath != nil {
			t.Errorf("volume %s: projected or hostPath volumes could carry other keys", v.Name)
		}
	}
	if !mounted || filepath.Dir(env[p+"_TLS_CA_FILE"]) != certDir || filepath.Dir(env[p+"_TLS_KEY_FILE"]) != certDir {
		t.Errorf("TLS files %s/%s/%s are not all in the read-only mount of Secret %s-tls", env[p+"_TLS_CA_FILE"],
			env[p+"_TLS_CERT_FILE"], env[p+"_TLS_KEY_FILE"], svc)
	}
}

// checkAdvertiseHost: the replicas of a Deployment share its pod template, so a fixed
// <P>_REGISTRY_NACOS_ADVERTISE_HOST (a value, or a ConfigMap key) would register every pod under one
// address in Nacos. Only the pod's own IP from the downward API (status.podIP) may be set; without the
// variable each pod registers its interface address (eth0), which is the pod IP too.
func checkAdvertiseHost(t *testing.T, r rendered, c corev1.Container) {
	t.Helper()
	const key = "_REGISTRY_NACOS_ADVERTISE_HOST"
	for _, src := range c.EnvFrom {
		if src.ConfigMapRef == nil {
			continue // reported by containerEnv
		}
		if cm := r.configMaps[src.ConfigMapRef.Name]; cm != nil {
			for k := range cm.Data {
				if strings.HasSuffix(src.Prefix+k, key) {
					t.Errorf("ConfigMap %s sets %s%s: every pod would advertise the same address; use the downward API (status.podIP) or nothing", cm.Name, src.Prefix, k)
				}
			}
		}
	}
	for _, e := range c.Env {
		if strings.HasSuffix(e.Name, key) && (e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "status.podIP") {
			t.Errorf("%s is not the pod IP (valueFrom.fieldRef status.podIP): every pod would advertise the same address", e.Name)
		}
	}
}

func resolvePort(c corev1.Container, p string) string {
	for _, cp := range c.Ports {
		if cp.Name == p {
			return strconv.Itoa(int(cp.ContainerPort))
		}
	}
	return p
}

func hasPort(c corev1.Container, p string) bool {
	return slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return strconv.Itoa(int(cp.ContainerPort)) == p })
}

// selects reports whether selector matches labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func portAllowed(ports []networkingv1.NetworkPolicyPort, port int32) bool {
	if len(ports) == 0 {
		return true
	}
	return slices.ContainsFunc(ports, func(p networkingv1.NetworkPolicyPort) bool {
		return p.Port != nil && p.Port.IntValue() == int(port)
	})
}

// peerAllowed reports whether peers admit pods named app ("" = any destination: an empty peer list).
func peerAllowed(peers []networkingv1.NetworkPolicyPeer, app string) bool {
	if len(peers) == 0 {
		return true
	}
	return app != "" && slices.ContainsFunc(peers, func(p networkingv1.NetworkPolicyPeer) bool {
		return p.PodSelector != nil && p.PodSelector.MatchLabels["app.kubernetes.io/name"] == app
	})
}

func allowsIngress(rules []networkingv1.NetworkPolicyIngressRule, from string, port int32) bool {
	return slices.ContainsFunc(rules, func(r networkingv1.NetworkPolicyIngressRule) bool {
		return len(r.From) > 0 && peerAllowed(r.From, from) && portAllowed(r.Ports, port)
	})
}

// allows is allowsIngress that also accepts a rule open to everyone.
func allows(rules []networkingv1.NetworkPolicyIngressRule, from string, port int32) bool {
	return slices.ContainsFunc(rules, func(r networkingv1.NetworkPolicyIngressRule) bool {
		return peerAllowed(r.From, from) && portAllowed(r.Ports, port)
	})
}

func allowsEgress(rules []networkingv1.NetworkPolicyEgressRule, to string, port int32) bool {
	return slices.ContainsFunc(rules, func(r networkingv1.NetworkPolicyEgressRule) bool {
		if to == "" {
			return len(r.To) == 0 && len(r.Ports) > 0 && portAllowed(r.Ports, port)
		}
		return len(r.To) > 0 && peerAllowed(r.To, to) && portAllowed(r.Ports, port)
	})
}
