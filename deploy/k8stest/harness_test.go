package k8stest_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/shopmesh/shopmesh/deploy/composetest"
	"github.com/shopmesh/shopmesh/deploy/k8stest"
)

// devOverlay renders a copy of deploy/k8s whose dev overlay has a generated value in every file of
// secrets/ its kustomization reads (what `make secrets` writes).
func devOverlay(t *testing.T) *k8stest.Overlay {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "k8s")
	src := filepath.Join("..", "k8s")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			if rel == filepath.Join("overlays", "dev", "secrets") || rel == "out" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	kust, err := os.ReadFile(filepath.Join(dst, "overlays", "dev", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	secrets := filepath.Join(dst, "overlays", "dev", "secrets")
	if err := os.MkdirAll(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	files := regexp.MustCompile(`=secrets/([A-Za-z0-9._-]+)`).FindAllStringSubmatch(string(kust), -1)
	if len(files) == 0 {
		t.Fatal("the dev kustomization reads no secrets/ file")
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(secrets, f[1]), []byte(randHex(16)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	o, err := k8stest.Render(filepath.Join(dst, "overlays", "dev"))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// The harness reads from the dev overlay what it waits for, loads and backs with volumes.
func TestRenderDevOverlay(t *testing.T) {
	o := devOverlay(t)
	if o.Namespace != "shopmesh-dev" {
		t.Errorf("namespace %q", o.Namespace)
	}
	imgs := o.Images()
	for _, want := range []string{"shopmesh/order:0.1.0", "shopmesh/gateway:0.1.0", "postgres:17.6-alpine", "apache/kafka:3.9.1"} {
		if !slices.Contains(imgs, want) {
			t.Errorf("images %v: no %s", imgs, want)
		}
	}
	if !slices.IsSorted(imgs) || len(slices.Compact(slices.Clone(imgs))) != len(imgs) {
		t.Errorf("images %v: want sorted, each once", imgs)
	}
	claims := map[string]k8stest.Claim{}
	for _, c := range o.Claims() {
		claims[c.PVC] = c
	}
	for pvc, want := range map[string]k8stest.Claim{
		"data-postgres-0": {Namespace: "shopmesh-dev", StatefulSet: "postgres", PVC: "data-postgres-0", Storage: "2Gi", UID: 70, GID: 70},
		"data-kafka-0":    {Namespace: "shopmesh-dev", StatefulSet: "kafka", PVC: "data-kafka-0", Storage: "5Gi", UID: 1000, GID: 1000},
		"data-nats-0":     {Namespace: "shopmesh-dev", StatefulSet: "nats", PVC: "data-nats-0", Storage: "2Gi", UID: 1000, GID: 1000},
	} {
		if claims[pvc] != want {
			t.Errorf("claim %s = %+v, want %+v", pvc, claims[pvc], want)
		}
	}
	ws := o.Workloads()
	if !slices.Contains(ws, k8stest.Workload{Kind: "Deployment", Name: "order", Replicas: 2}) ||
		!slices.Contains(ws, k8stest.Workload{Kind: "StatefulSet", Name: "postgres", Replicas: 1}) {
		t.Errorf("workloads %v", ws)
	}
	var jobs []string
	for _, j := range o.Jobs {
		jobs = append(jobs, j.Name)
	}
	if !slices.Contains(jobs, "kafka-setup") || !slices.Contains(jobs, "nacos-setup") {
		t.Errorf("jobs %v", jobs)
	}
	if len(o.HPAs) != 4 || len(o.PDBs) != 4 {
		t.Errorf("%d HPAs, %d PDBs: want one of each per service", len(o.HPAs), len(o.PDBs))
	}
}

func TestPersistentVolumesArePreBound(t *testing.T) {
	claims := []k8stest.Claim{{Namespace: "ns", StatefulSet: "pg", PVC: "data-pg-0", Storage: "2Gi", UID: 70, GID: 70}}
	data, err := k8stest.PersistentVolumes("/var/lib/x", claims)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Kind  string                    `json:"kind"`
		Items []corev1.PersistentVolume `json:"items"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatal(err)
	}
	if list.Kind != "List" || len(list.Items) != 1 {
		t.Fatalf("%s", data)
	}
	pv := list.Items[0]
	q := pv.Spec.Capacity[corev1.ResourceStorage]
	switch {
	case pv.Name != "ns-data-pg-0" || pv.Labels[k8stest.VolumeLabel] != "true":
		t.Errorf("metadata %+v", pv.ObjectMeta)
	case pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.Namespace != "ns" || pv.Spec.ClaimRef.Name != "data-pg-0":
		t.Errorf("claimRef %+v", pv.Spec.ClaimRef)
	case pv.Spec.HostPath == nil || pv.Spec.HostPath.Path != "/var/lib/x/ns/data-pg-0":
		t.Errorf("hostPath %+v", pv.Spec.HostPath)
	case pv.Spec.StorageClassName != "" || q.String() != "2Gi" ||
		pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain:
		t.Errorf("spec %+v", pv.Spec)
	}
}

func TestMakeVolumeDirsEmptiesAndOwns(t *testing.T) {
	base := t.TempDir()
	c := k8stest.Claim{Namespace: "ns", PVC: "data-x-0", UID: int64(os.Getuid()), GID: int64(os.Getgid())}
	dir := k8stest.VolumePath(base, c)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "old"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := k8stest.MakeVolumeDirs(base, []k8stest.Claim{c}); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 0 {
		t.Fatalf("volume folder %s: %v %v, want it empty", dir, entries, err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestUnready(t *testing.T) {
	dep := func(name string, want, ready, updated, replicas int32) appsv1.Deployment {
		d := appsv1.Deployment{}
		d.Name, d.Generation, d.Spec.Replicas = name, 2, ptr(want)
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: 2, ReadyReplicas: ready, UpdatedReplicas: updated,
			Replicas: replicas, AvailableReplicas: ready}
		return d
	}
	ss := appsv1.StatefulSet{}
	ss.Name, ss.Spec.Replicas, ss.Status.ReadyReplicas = "postgres", ptr(int32(1)), 1
	s := &k8stest.State{
		Deployments:  []appsv1.Deployment{dep("order", 2, 2, 2, 2), dep("payment", 2, 2, 1, 3)},
		StatefulSets: []appsv1.StatefulSet{ss},
	}
	s.Jobs = make([]batchv1.Job, 1)
	s.Jobs[0].Name = "kafka-setup"
	want := []k8stest.Workload{{Kind: "Deployment", Name: "order"}, {Kind: "Deployment", Name: "payment"},
		{Kind: "StatefulSet", Name: "postgres"}, {Kind: "Deployment", Name: "gateway"}}
	bad := k8stest.Unready(s, want, []string{"kafka-setup"})
	if len(bad) != 3 || !strings.HasPrefix(bad[0], "deployment/payment: 2/2 ready, 1 updated, 3 pods") ||
		bad[1] != "deployment/gateway: missing" || bad[2] != "job/kafka-setup: not complete" {
		t.Fatalf("Unready = %q", bad)
	}
	s.Deployments[1] = dep("payment", 2, 2, 2, 2)
	s.Deployments = append(s.Deployments, dep("gateway", 2, 2, 2, 2))
	s.Jobs[0].Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}
	if bad := k8stest.Unready(s, want, []string{"kafka-setup"}); len(bad) != 0 {
		t.Fatalf("Unready = %q, want nothing", bad)
	}
}

func TestParseStateAndReadyPods(t *testing.T) {
	data := []byte(`{"apiVersion":"v1","kind":"List","items":[
 {"kind":"Deployment","metadata":{"name":"order"},"spec":{"replicas":2}},
 {"kind":"Pod","metadata":{"name":"order-a","labels":{"app.kubernetes.io/name":"order"}},
  "status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}],"containerStatuses":[{"name":"order","restartCount":2}]}},
 {"kind":"Pod","metadata":{"name":"order-b","labels":{"app.kubernetes.io/name":"order"}},
  "status":{"phase":"Running","conditions":[{"type":"Ready","status":"False"}]}},
 {"kind":"Pod","metadata":{"name":"order-c","labels":{"app.kubernetes.io/name":"order"},"deletionTimestamp":"2026-12-07T07:00:00Z"},
  "status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}},
 {"kind":"Pod","metadata":{"name":"pay-a","labels":{"app.kubernetes.io/name":"payment"}},
  "status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}},
 {"kind":"Job","metadata":{"name":"kafka-setup"}}]}`)
	s, err := k8stest.ParseState(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Deployments) != 1 || len(s.Pods) != 4 || len(s.Jobs) != 1 {
		t.Fatalf("state %+v", s)
	}
	if got := k8stest.ReadyPods(s.Pods, map[string]string{"app.kubernetes.io/name": "order"}); !slices.Equal(got, []string{"order-a"}) {
		t.Errorf("ReadyPods = %v, want only the ready pod not being deleted", got)
	}
	if got := k8stest.Restarts(s.Pods); !slices.Equal(got, []string{"order-a=2"}) {
		t.Errorf("Restarts = %v", got)
	}
}

// inflight answers orders after a short wait, recording the most requests it had at once.
type inflight struct {
	now, peak atomic.Int64
	n         atomic.Int64
	mu        sync.Mutex
	keys      map[string]int
}

func (s *inflight) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cur := s.now.Add(1)
	defer s.now.Add(-1)
	for {
		p := s.peak.Load()
		if cur <= p || s.peak.CompareAndSwap(p, cur) {
			break
		}
	}
	s.mu.Lock()
	s.keys[r.Header.Get("Idempotency-Key")]++
	s.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	w.WriteHeader(http.StatusCreated)
	_, _ = fmt.Fprintf(w, `{"id":"o-%d","status":"PENDING"}`, s.n.Add(1))
}

// The closed loop never has more orders in flight than clients, and counts every order once.
func TestClosedLoopIsBounded(t *testing.T) {
	s := &inflight{keys: map[string]int{}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	api := &composetest.API{Base: srv.URL, Token: func(string) (string, error) { return "t", nil }}
	l := &k8stest.ClosedLoop{API: api, Workers: 3, Customers: 2, SKUs: 2, KeyPrefix: "t",
		Retry: composetest.Retry{MaxAttempts: 2, Budget: 5 * time.Second}}
	stop := l.Background(context.Background())
	for s.n.Load() < 30 {
		time.Sleep(10 * time.Millisecond)
	}
	outs := stop()
	c := composetest.Count(outs)
	if c.Sent < 30 || c.Accepted != c.Sent || c.Failed != 0 {
		t.Fatalf("tally %s", c)
	}
	if p := s.peak.Load(); p > 3 {
		t.Fatalf("%d orders in flight at once with 3 clients", p)
	}
	if len(s.keys) != c.Sent {
		t.Fatalf("%d keys for %d orders", len(s.keys), c.Sent)
	}
	for k, n := range s.keys {
		if n != 1 {
			t.Fatalf("key %s sent %d times", k, n)
		}
	}
	if !slices.IsSortedFunc(outs, func(a, b composetest.Outcome) int { return strings.Compare(a.Key, b.Key) }) {
		t.Fatal("outcomes not sorted by key")
	}
}

func TestAuditFindsEveryDisagreement(t *testing.T) {
	outs := []composetest.Outcome{
		{Key: "r-1", Accepted: true, OrderID: "o1"},
		{Key: "r-2", Accepted: true, OrderID: "o2"}, // no row
		{Key: "r-3", Accepted: true, OrderID: "o3"}, // another id
		{Key: "r-4", Accepted: true, OrderID: "o4"}, // PENDING
		{Key: "r-5", Accepted: true, OrderID: "o5"}, // an event not published
		{Key: "r-6", Accepted: false, Status: "timeout"},
	}
	out := []byte("r-1|o1|CONFIRMED|0\nr-3|oX|CANCELLED|0\nr-4|o4|PENDING|0\nr-5|o5|CONFIRMED|1\nr-6|o6|CONFIRMED|0\n")
	rows, err := k8stest.ParseRows(out)
	if err != nil || len(rows) != 5 {
		t.Fatalf("ParseRows: %v %v", rows, err)
	}
	r := k8stest.Audit(outs, rows)
	if r.OK() || r.Accepted != 5 || r.Rows != 5 || len(r.Missing) != 1 || len(r.WrongID) != 1 ||
		len(r.NotTerminal) != 1 || len(r.Unsent) != 1 || len(r.Unclaimed) != 1 || r.ByStatus["CONFIRMED"] != 3 {
		t.Fatalf("audit %s", r)
	}
	good := k8stest.Audit(outs[:1], rows[:1])
	if !good.OK() || good.String() != "1 accepted, 1 rows (CONFIRMED 1)" {
		t.Fatalf("audit %s", good)
	}
	if _, err := k8stest.ParseRows([]byte("a|b|c\n")); err == nil {
		t.Fatal("ParseRows of a short row: want an error")
	}
	if q := k8stest.AuditQuery("k8s-ab12-"); !strings.Contains(q, "LIKE 'k8s-ab12-%'") || !strings.Contains(q, "sent_at IS NULL") {
		t.Fatalf("query %s", q)
	}
}

func TestCounterSum(t *testing.T) {
	text := []byte(`# HELP grpc_server_handled_total RPCs completed.
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="OK",grpc_method="ReserveStock",grpc_service="x",grpc_type="unary"} 12
grpc_server_handled_total{grpc_code="Unavailable",grpc_method="ReserveStock",grpc_service="x",grpc_type="unary"} 3
grpc_server_handled_total{grpc_code="OK",grpc_method="ReleaseStock",grpc_service="x",grpc_type="unary"} 5
grpc_server_handled_totalx{grpc_method="ReserveStock"} 100
grpc_server_handled_total 1e3
`)
	if got := k8stest.CounterSum(text, "grpc_server_handled_total", map[string]string{"grpc_method": "ReserveStock"}); got != 15 {
		t.Errorf("ReserveStock: %v, want 15", got)
	}
	if got := k8stest.CounterSum(text, "grpc_server_handled_total", nil); got != 1020 {
		t.Errorf("all: %v, want 1020", got)
	}
}

// A fake /proc, /sys/class/net and /run/netns: the cluster's processes, mounts, links and namespaces
// are found, the rest is not.
func TestHostLeftovers(t *testing.T) {
	root := t.TempDir()
	h := k8stest.Host{Proc: filepath.Join(root, "proc"), SysNet: filepath.Join(root, "net"), NetNS: "/run/netns",
		Mark: "shopmesh-k8s", LinkPrefix: "smk8s", ContainerdMarks: []string{"/run/shopmesh-k8s/", "/repo/.run/k8s/containerd.toml"}}
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	procs := map[string]string{
		"10": "/root/.cache/shopmesh/k8s-v1.37.2/bin/kubelet\x00--config\x00x\x00",
		"11": "containerd\x00--config\x00/repo/.run/k8s/containerd.toml\x00",
		"12": "/usr/bin/containerd-shim-runc-v2\x00-address\x00/run/shopmesh-k8s/containerd/containerd.sock\x00",
		"13": "containerd\x00--config\x00/var/run/docker/containerd/containerd.toml\x00", // dockerd's
		"14": "docker\x00build\x00-t\x00shopmesh-k8s/coredns:1\x00",                      // names the mark, not ours
		"15": "etcd\x00--data-dir\x00/x\x00",
	}
	for pid, cmd := range procs {
		write(filepath.Join(h.Proc, pid, "cmdline"), cmd)
	}
	write(filepath.Join(h.Proc, "self", "mountinfo"), strings.Join([]string{
		"1 0 8:1 / / rw - ext4 /dev/root rw",
		"2 1 0:5 / /var/lib/shopmesh-k8s/kubelet/pods/x/volumes/y rw - tmpfs tmpfs rw",
		"3 1 0:6 / /run/netns/cni-1234 rw - nsfs nsfs rw",
		"4 1 0:7 / /var/lib/docker/overlay2/z/merged rw - overlay overlay rw",
	}, "\n")+"\n")
	for _, l := range []string{"lo", "docker0", "smk8s0", "smk8s-node", "veth1", "veth2"} {
		if err := os.MkdirAll(filepath.Join(h.SysNet, l), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../smk8s0", filepath.Join(h.SysNet, "veth1", "master")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../docker0", filepath.Join(h.SysNet, "veth2", "master")); err != nil {
		t.Fatal(err)
	}
	h.NetNS = filepath.Join(root, "netns")
	write(filepath.Join(h.NetNS, "cni-1234"), "")
	write(filepath.Join(h.NetNS, "other"), "")

	if got := h.Processes(); len(got) != 4 || !strings.HasPrefix(got[0], "10 ") || !strings.HasPrefix(got[1], "11 ") ||
		!strings.HasPrefix(got[2], "12 ") || !strings.HasPrefix(got[3], "15 ") {
		t.Errorf("Processes = %q", got)
	}
	if got := h.Mounts(); !slices.Equal(got, []string{"/var/lib/shopmesh-k8s/kubelet/pods/x/volumes/y"}) {
		t.Errorf("Mounts = %q", got) // /run/netns of the fake is elsewhere: only the kubelet mount
	}
	if got := h.Links(); !slices.Equal(got, []string{"smk8s-node", "smk8s0", "veth1"}) {
		t.Errorf("Links = %q", got)
	}
	if got := h.NetNamespaces(); !slices.Equal(got, []string{"cni-1234"}) {
		t.Errorf("NetNamespaces = %q", got)
	}
	if got := h.Leftovers(); len(got) != 4+1+3+1 {
		t.Errorf("Leftovers = %q", got)
	}
	empty := k8stest.Host{Proc: t.TempDir(), SysNet: t.TempDir(), NetNS: t.TempDir(), Mark: "shopmesh-k8s", LinkPrefix: "smk8s"}
	write(filepath.Join(empty.Proc, "self", "mountinfo"), "1 0 8:1 / / rw - ext4 /dev/root rw\n")
	if got := empty.Leftovers(); len(got) != 0 {
		t.Errorf("Leftovers of a clean machine = %q", got)
	}
}

func TestChains(t *testing.T) {
	save := []byte(`*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:DOCKER - [0:0]
-A PREROUTING -j KUBE-SERVICES
COMMIT
*filter
:SMK8S-FORWARD - [0:0]
:CNI-FORWARD - [0:0]
COMMIT
`)
	got := k8stest.Chains(save, "KUBE-", "CNI-", "SMK8S-")
	if !slices.Equal(got, []string{"nat KUBE-SERVICES", "filter SMK8S-FORWARD", "filter CNI-FORWARD"}) {
		t.Fatalf("Chains = %q", got)
	}
}

// Evict posts an Eviction with the kubeconfig's token over TLS verified with its CA, and returns the
// status: 201 when admitted, 429 when a PodDisruptionBudget refuses.
func TestEvictReturnsTheStatus(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	answers := []int{http.StatusCreated, http.StatusTooManyRequests}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name, Namespace string
			} `json:"metadata"`
		}
		_ = json.Unmarshal(body, &ev)
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, fmt.Sprintf("%s %s %s %s/%s %s", r.Method, r.URL.Path, ev.Kind, ev.Metadata.Namespace, ev.Metadata.Name, r.Header.Get("Authorization")))
		code := answers[0]
		answers = answers[1:]
		w.WriteHeader(code)
		if code == http.StatusTooManyRequests {
			_, _ = io.WriteString(w, `{"kind":"Status","message":"Cannot evict pod as it would violate the pod's disruption budget."}`)
		}
	}))
	defer srv.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	tok := randHex(8)
	kc := fmt.Sprintf(`{"clusters":[{"name":"c","cluster":{"server":%q,"certificate-authority-data":%q}}],
		"users":[{"name":"u","user":{"token":%q}}]}`, srv.URL, base64.StdEncoding.EncodeToString(ca), tok)
	a, err := k8stest.NewAPIServer([]byte(kc), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	code, _, err := a.Evict(context.Background(), "ns", "pod-a")
	if err != nil || code != http.StatusCreated {
		t.Fatalf("first eviction: %d %v", code, err)
	}
	code, msg, err := a.Evict(context.Background(), "ns", "pod-b")
	if err != nil || code != http.StatusTooManyRequests || !strings.Contains(msg, "disruption budget") {
		t.Fatalf("second eviction: %d %q %v", code, msg, err)
	}
	want := "POST /api/v1/namespaces/ns/pods/pod-a/eviction Eviction ns/pod-a Bearer " + tok
	if len(seen) != 2 || seen[0] != want {
		t.Fatalf("requests %q, want first %q", seen, want)
	}
	if _, err := k8stest.NewAPIServer([]byte(`{"clusters":[],"users":[]}`), ""); err == nil {
		t.Fatal("a kubeconfig without a cluster: want an error")
	}
}
