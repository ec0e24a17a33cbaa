package k8stest_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"

	"github.com/shopmesh/shopmesh/deploy/composetest"
	"github.com/shopmesh/shopmesh/deploy/k8stest"
)

const (
	overlayDir = "deploy/k8s/overlays/dev"
	clusterSh  = "deploy/k8s/cluster/cluster.sh"
	// The load of the fault steps: a closed loop of loadWorkers clients, at most loadRate orders/s.
	loadWorkers = 4
	loadRate    = 10
)

// harness holds what the steps share.
type harness struct {
	t           *testing.T
	ctx         context.Context
	root        string
	bin         string // the cluster's binaries (kubectl)
	kubeDir     string // SHOPMESH_K8S_DIR
	volumes     string // node folder of the harness's PersistentVolumes
	run         *composetest.Runner
	sum         composetest.Summary
	overlay     *k8stest.Overlay
	ns          string
	api         *composetest.API
	client      *http.Client
	apiSrv      *k8stest.APIServer
	forward     *k8stest.PortForward
	runID       string
	applied     bool // the overlay may be applied: teardown deletes it
	started     bool // the cluster may be up: teardown takes it down
	keepCluster bool
	upOnly      bool // K8S_TEST_MODE=up: stop after the first orders and leave everything up

	outMu sync.Mutex
	outs  []composetest.Outcome // every order the loads placed, for the audit

	tokenMu sync.Mutex
	tokens  map[string]string
}

func (h *harness) step(name string, required bool, fn func() (string, error)) bool {
	h.t.Helper()
	return h.sum.Run(h.t, name, required, fn)
}

// TestK8s is `make k8s-test`: see the package documentation for its steps.
func TestK8s(t *testing.T) {
	if os.Getenv("K8S_TEST") != "1" {
		t.Skip("K8S_TEST=1 runs the dev overlay on a single-node cluster built here (make k8s-test)")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Minute)
	defer cancel()
	cache := os.Getenv("SHOPMESH_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "shopmesh")
	}
	kubeDir := os.Getenv("SHOPMESH_K8S_DIR")
	if kubeDir == "" {
		kubeDir = filepath.Join(root, ".run", "k8s")
	}
	h := &harness{t: t, ctx: ctx, root: root, kubeDir: kubeDir,
		bin:         filepath.Join(cache, "k8s-"+envOr("K8S_VERSION", "v1.37.2"), "bin"),
		volumes:     envOr("K8S_TEST_VOLUMES", "/var/lib/shopmesh-k8s/k8stest-volumes"),
		keepCluster: os.Getenv("K8S_TEST_CLUSTER") == "keep",
		runID:       "k8s-" + randHex(4),
		tokens:      map[string]string{},
		client:      &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}}}
	// kubectl (and the scripts that call it: dev-secrets.sh) from the cluster's binaries, on its kubeconfig.
	t.Setenv("PATH", h.bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("KUBECONFIG", filepath.Join(kubeDir, "kubeconfig"))
	h.run = &composetest.Runner{Root: root, Log: t.Logf}
	defer func() {
		h.teardown()
		fmt.Printf("\n=== k8s-test summary (run %s)\n%s", h.runID, h.sum.String())
	}()

	switch mode := os.Getenv("K8S_TEST_MODE"); mode {
	case "", "up":
		h.upOnly = mode == "up"
	case "down":
		// make k8s-down: whatever make k8s-up (or a kept run) left, then the cluster.
		h.started = true
		h.step("make secrets", false, h.secrets)
		h.applied = h.overlay != nil
		h.sum.Resume()
		h.step("delete -k dev", false, h.deleteOverlay)
		h.step("cluster down", false, h.clusterDown)
		return
	default:
		t.Fatalf("K8S_TEST_MODE=%q: want up, down or nothing (the whole test)", mode)
	}

	h.step("preflight", true, h.preflight)
	h.step("k8s binaries", true, func() (string, error) {
		return "", h.run.Stream(ctx, 45*time.Minute, "bash", "deploy/k8s/cluster/build.sh")
	})
	h.step("addon images", true, h.addonImages)
	h.step("stand-in images", true, func() (string, error) {
		return "", h.run.Stream(ctx, 45*time.Minute, "bash", "deploy/compose/standin/build.sh")
	})
	h.step("cluster up", true, h.clusterUp)
	h.step("make secrets", true, h.secrets)
	h.step("make images", true, h.images)
	h.step("load images", true, h.loadImages)
	h.step("clean namespace", true, h.cleanNamespace)
	h.step("volumes", true, h.makeVolumes)
	h.step("apply -k dev", true, h.apply)
	h.step("pods ready", true, h.ready)
	h.step("gateway", true, h.gateway)
	h.step("orders via API", true, func() (string, error) { return h.placeOrders(10) })
	if h.upOnly {
		// make k8s-up: everything stays up, even after a failure (make k8s-down takes it away).
		h.started = false
		t.Logf("up: eval \"$(%s env)\"; kubectl -n %s port-forward svc/gateway 8080:80; make k8s-down", clusterSh, h.ns)
		return
	}
	h.step("delete inventory pod", false, h.deleteInventoryPod)
	h.step("rollout payment", false, h.rolloutPayment)
	h.step("PDB eviction", false, h.pdbEviction)
	h.step("HPA", false, h.hpa)
	h.step("audit", false, h.audit)
	if t.Failed() {
		h.saveLogs()
		if os.Getenv("K8S_TEST_KEEP") == "1" {
			return // teardown says so
		}
	}
	h.sum.Resume() // the overlay and the cluster go away whatever happened before
	h.step("delete -k dev", false, h.deleteOverlay)
	if !h.keepCluster {
		h.step("cluster down", false, h.clusterDown)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (h *harness) kubectl(timeout time.Duration, args ...string) ([]byte, error) {
	return h.run.Run(h.ctx, timeout, "kubectl", args...)
}

// kubectlJSON runs kubectl … -o json and decodes its standard output into out.
func (h *harness) kubectlJSON(out any, args ...string) error {
	data, err := k8stest.Output(h.ctx, h.root, time.Minute, "kubectl", append(args, "-o", "json")...)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, out)
}

func (h *harness) preflight() (string, error) {
	if _, err := h.run.Run(h.ctx, 30*time.Second, "docker", "info", "--format", "{{.ServerVersion}}"); err != nil {
		return "", fmt.Errorf("no Docker engine (make engine-up): %w", err)
	}
	var missing []string
	for _, tool := range []string{"ip", "iptables-save", "containerd", "ctr"} {
		if _, err := lookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("missing on this machine: %s (deploy/k8s/cluster/README.md)", strings.Join(missing, ", "))
	}
	return "run " + h.runID + ", kubeconfig " + os.Getenv("KUBECONFIG"), nil
}

func lookPath(name string) (string, error) {
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not on PATH", name)
}

// addonImages runs the build.sh of every folder of deploy/k8s/cluster that has one besides the binaries'
// (CoreDNS: cluster.sh up loads the images of addons/images.txt from the Docker engine).
func (h *harness) addonImages() (string, error) {
	scripts, err := filepath.Glob(filepath.Join(h.root, "deploy/k8s/cluster/*/build.sh"))
	if err != nil {
		return "", err
	}
	var built []string
	for _, s := range scripts {
		if err := h.run.Stream(h.ctx, 30*time.Minute, "bash", s); err != nil {
			return "", err
		}
		built = append(built, filepath.Base(filepath.Dir(s)))
	}
	return strings.Join(built, ", "), nil
}

func (h *harness) clusterUp() (string, error) {
	h.started = true
	// K8S_TEST_CLUSTER=keep: a running cluster (status exits 0) is used as it is.
	if _, err := h.run.Run(h.ctx, time.Minute, "bash", clusterSh, "status"); err != nil || !h.keepCluster {
		if err := h.run.Stream(h.ctx, 20*time.Minute, "bash", clusterSh, "up"); err != nil {
			return "", err
		}
	}
	// The node Ready and the cluster DNS (the services find each other through it) available.
	if _, err := h.kubectl(5*time.Minute, "wait", "--for=condition=Ready", "node", "--all", "--timeout=5m"); err != nil {
		return "", err
	}
	if _, err := h.kubectl(5*time.Minute, "-n", "kube-system", "wait", "--for=condition=Available",
		"deployment", "--all", "--timeout=5m"); err != nil {
		return "", err
	}
	out, err := k8stest.Output(h.ctx, h.root, time.Minute, "kubectl", "version", "-o", "json")
	if err != nil {
		return "", err
	}
	var v struct {
		Server struct {
			GitVersion string `json:"gitVersion"`
		} `json:"serverVersion"`
	}
	_ = json.Unmarshal(out, &v)
	mini, err := k8stest.Output(h.ctx, h.root, time.Minute, "kubectl", "config", "view", "--raw", "--minify", "-o", "json")
	if err != nil {
		return "", err
	}
	if h.apiSrv, err = k8stest.NewAPIServer(mini, h.kubeDir); err != nil {
		return "", err
	}
	return "node Ready, kube-system available, server " + v.Server.GitVersion, nil
}

// secrets runs `make secrets` (what deploy/k8s/README.md tells users first), then renders the overlay
// the harness reads (it needs the generated files).
func (h *harness) secrets() (string, error) {
	if _, err := h.run.Run(h.ctx, 5*time.Minute, "make", "--no-print-directory", "secrets"); err != nil {
		return "", err
	}
	var err error
	if h.overlay, err = k8stest.Render(filepath.Join(h.root, overlayDir)); err != nil {
		return "", err
	}
	h.ns = h.overlay.Namespace
	return fmt.Sprintf("overlay: namespace %s, %d Deployments, %d StatefulSets, %d Jobs, %d images",
		h.ns, len(h.overlay.Deployments), len(h.overlay.StatefulSets), len(h.overlay.Jobs), len(h.overlay.Images())), nil
}

// images runs `make images IMAGE_TAG=<the tag the base names>`.
func (h *harness) images() (string, error) {
	tag := ""
	for _, img := range h.overlay.Images() {
		if name, t, ok := strings.Cut(img, ":"); ok && strings.HasPrefix(name, "shopmesh/") {
			if tag != "" && t != tag {
				return "", fmt.Errorf("service images with tags %s and %s", tag, t)
			}
			tag = t
		}
	}
	if tag == "" {
		return "", errors.New("the overlay names no shopmesh/ image")
	}
	return "IMAGE_TAG=" + tag, h.run.Stream(h.ctx, 30*time.Minute, "make", "--no-print-directory", "images", "IMAGE_TAG="+tag)
}

func (h *harness) loadImages() (string, error) {
	imgs := h.overlay.Images()
	err := h.run.Stream(h.ctx, 30*time.Minute, "bash", append([]string{clusterSh, "load"}, imgs...)...)
	return strings.Join(imgs, ", "), err
}

// cleanNamespace deletes what an earlier run left: the namespace and the harness's volumes.
func (h *harness) cleanNamespace() (string, error) {
	var detail []string
	if _, err := k8stest.Output(h.ctx, h.root, time.Minute, "kubectl", "get", "namespace", h.ns); err == nil {
		if _, err := h.kubectl(10*time.Minute, "delete", "namespace", h.ns, "--wait", "--timeout=8m"); err != nil {
			return "", err
		}
		detail = append(detail, "namespace "+h.ns+" of an earlier run deleted")
	}
	n, err := h.deleteVolumes()
	if err != nil {
		return "", err
	}
	if n > 0 {
		detail = append(detail, fmt.Sprintf("%d volumes of an earlier run deleted", n))
	}
	if len(detail) == 0 {
		return "nothing left from an earlier run", nil
	}
	return strings.Join(detail, "; "), nil
}

// makeVolumes backs the StatefulSets' claims with hostPath volumes when the cluster has no default
// StorageClass (the test cluster has no provisioner).
func (h *harness) makeVolumes() (string, error) {
	var scs struct {
		Items []struct {
			Metadata struct {
				Name        string            `json:"name"`
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := h.kubectlJSON(&scs, "get", "storageclass"); err != nil {
		return "", err
	}
	for _, sc := range scs.Items {
		if sc.Metadata.Annotations["storageclass.kubernetes.io/is-default-class"] == "true" {
			return "default StorageClass " + sc.Metadata.Name + ": the claims are provisioned", nil
		}
	}
	claims := h.overlay.Claims()
	if err := k8stest.MakeVolumeDirs(h.volumes, claims); err != nil {
		return "", err
	}
	list, err := k8stest.PersistentVolumes(h.volumes, claims)
	if err != nil {
		return "", err
	}
	f := filepath.Join(h.t.TempDir(), "volumes.json")
	if err := os.WriteFile(f, list, 0o600); err != nil {
		return "", err
	}
	if _, err := h.kubectl(time.Minute, "apply", "-f", f); err != nil {
		return "", err
	}
	names := make([]string, len(claims))
	for i, c := range claims {
		names[i] = fmt.Sprintf("%s %s", c.PVC, c.Storage)
	}
	return fmt.Sprintf("no default StorageClass: %d hostPath volumes under %s (%s)", len(claims), h.volumes, strings.Join(names, ", ")), nil
}

// deleteVolumes deletes the harness's PersistentVolumes and their folders.
func (h *harness) deleteVolumes() (int, error) {
	var pvs struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := h.kubectlJSON(&pvs, "get", "pv", "-l", k8stest.VolumeLabel+"=true"); err != nil {
		return 0, err
	}
	if len(pvs.Items) > 0 {
		if _, err := h.kubectl(3*time.Minute, "delete", "pv", "-l", k8stest.VolumeLabel+"=true", "--wait", "--timeout=2m"); err != nil {
			return 0, err
		}
	}
	return len(pvs.Items), os.RemoveAll(h.volumes)
}

// apply is what deploy/k8s/README.md tells users: dev-secrets.sh, then kubectl apply -k (server-side).
func (h *harness) apply() (string, error) {
	h.applied = true
	if _, err := h.run.Run(h.ctx, 3*time.Minute, "bash", "deploy/k8s/dev-secrets.sh", h.ns); err != nil {
		return "", err
	}
	out, err := h.kubectl(5*time.Minute, "apply", "--server-side", "-k", overlayDir)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d objects applied", strings.Count(string(out), "serverside-applied")), nil
}

func (h *harness) jobs() []string {
	var out []string
	for _, j := range h.overlay.Jobs {
		out = append(out, j.Name)
	}
	return out
}

// state reads the namespace's workloads and pods.
func (h *harness) state() (*k8stest.State, error) {
	data, err := k8stest.Output(h.ctx, h.root, time.Minute, "kubectl", "-n", h.ns, "get",
		"deployments,statefulsets,jobs,pods", "-o", "json")
	if err != nil {
		return nil, err
	}
	return k8stest.ParseState(data)
}

// waitReady polls until k8stest.Unready lists nothing, or timeout.
func (h *harness) waitReady(timeout time.Duration) (*k8stest.State, error) {
	deadline := time.Now().Add(timeout)
	var last []string
	for {
		s, err := h.state()
		if err == nil {
			if last = k8stest.Unready(s, h.overlay.Workloads(), h.jobs()); len(last) == 0 {
				return s, nil
			}
		} else {
			last = []string{err.Error()}
		}
		if time.Now().After(deadline) || h.ctx.Err() != nil {
			return s, fmt.Errorf("not ready after %v: %s", timeout, strings.Join(last, "; "))
		}
		time.Sleep(3 * time.Second)
	}
}

func (h *harness) ready() (string, error) {
	s, err := h.waitReady(20 * time.Minute)
	if s == nil {
		return "", err
	}
	ready := 0
	for i := range s.Pods {
		if k8stest.PodReady(&s.Pods[i]) {
			ready++
		}
	}
	detail := fmt.Sprintf("%d pods Ready, jobs %s complete", ready, strings.Join(h.jobs(), ", "))
	if r := k8stest.Restarts(s.Pods); len(r) > 0 {
		detail += "; restarts: " + strings.Join(r, " ")
	}
	return detail, err
}

// gateway makes the gateway Service reachable on 127.0.0.1 with kubectl port-forward (deploy/k8s/README.md).
func (h *harness) gateway() (string, error) {
	port, err := composetest.FreePort(18080)
	if err != nil {
		return "", err
	}
	h.forward = &k8stest.PortForward{Kubectl: filepath.Join(h.bin, "kubectl"), Namespace: h.ns, Target: "svc/gateway",
		Port: port, Remote: 80, Log: h.t.Logf}
	if err := h.forward.Start(h.ctx, time.Minute); err != nil {
		return "", err
	}
	h.api = &composetest.API{Base: fmt.Sprintf("http://127.0.0.1:%d", port), Token: h.token, Client: h.client}
	code, body, err := h.get("/readyz")
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("GET /readyz: %d %.200s", code, body)
	}
	// The gateway finds its backends through DNS (inventory-headless…), looked up again every
	// GATEWAY_REGISTRY_DNS_REFRESH (30 s) or after a connection error: a gateway that started before
	// inventory was Ready answers its routes 503 until the next lookup.
	took, err := h.waitFor(2*time.Minute, "GET /v1/products answers 200", func() (bool, error) {
		code, body, err = h.get("/v1/products")
		return code == http.StatusOK, err
	})
	detail := fmt.Sprintf("kubectl port-forward svc/gateway %s, /readyz 200; /v1/products 200 after %.1fs", h.api.Base, took.Seconds())
	if err != nil {
		return detail, fmt.Errorf("%w: last answer %d %.200s", err, code, body)
	}
	return detail, nil
}

func (h *harness) get(path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.api.Base+path, nil)
	if err != nil {
		return 0, nil, err
	}
	tok, err := h.token("cust-0001")
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, body, err
}

// token signs (once per customer) a token with the first key of .run/secrets/gateway-jwt-keys, the
// value of the Secret gateway-jwt.
func (h *harness) token(customer string) (string, error) {
	h.tokenMu.Lock()
	defer h.tokenMu.Unlock()
	if tok, ok := h.tokens[customer]; ok {
		return tok, nil
	}
	keys, err := os.ReadFile(filepath.Join(h.root, ".run/secrets/gateway-jwt-keys"))
	if err != nil {
		return "", err
	}
	tok, err := composetest.SignToken(string(keys), customer, nil, time.Now(), 3*time.Hour)
	if err != nil {
		return "", err
	}
	h.tokens[customer] = tok
	return tok, nil
}

// placeOrders places n orders one after the other and waits for each to be CONFIRMED.
func (h *harness) placeOrders(n int) (string, error) {
	code, body, err := h.get("/v1/products")
	if err != nil {
		return "", fmt.Errorf("GET /v1/products: %w", err)
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("GET /v1/products: %d %.200s", code, body)
	}
	var list struct {
		Products []struct {
			SKU string `json:"sku"`
		} `json:"products"`
	}
	if err := json.Unmarshal(body, &list); err != nil || len(list.Products) == 0 {
		return "", fmt.Errorf("GET /v1/products: no product (INVENTORY_SEED): %.200s", body)
	}
	var (
		slowest time.Duration
		first   composetest.Outcome
	)
	for i := range n {
		cust := fmt.Sprintf("cust-%04d", 1+i)
		t0 := time.Now()
		retry := composetest.Retry{MaxAttempts: 3, Budget: 30 * time.Second}
		if i == 0 {
			// Ready pods are not yet known to every caller: the gateway finds order's and payment's
			// pods by looking their headless Services up every second once they have none, and
			// health-checks each new connection before calling it. When order is the last pod to get
			// Ready, the first orders meet 503 for a moment (seen in CI: 3 attempts in 2 s were not
			// enough). The first order may take the whole budget; the others may not.
			retry.MaxAttempts = 100
		}
		o := h.api.Place(h.ctx, retry, cust,
			fmt.Sprintf("%s-first-%02d", h.runID, i), list.Products[i%len(list.Products)].SKU, 1)
		h.record([]composetest.Outcome{o})
		if !o.Accepted {
			return "", fmt.Errorf("order %d: %s after %d attempts", i+1, o.Status, o.Attempts)
		}
		if i == 0 {
			first = o
		}
		wctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
		got, err := h.api.WaitStatus(wctx, cust, o.OrderID)
		cancel()
		if err != nil {
			return "", err
		}
		if got.Status != "CONFIRMED" {
			return "", fmt.Errorf("order %s: %s %s, want CONFIRMED", got.ID, got.Status, got.CancelReason)
		}
		slowest = max(slowest, time.Since(t0))
	}
	return fmt.Sprintf("%d orders CONFIRMED (slowest placed→CONFIRMED %v; the first accepted after %d attempts, %v)", n,
		slowest.Round(time.Millisecond), first.Attempts, first.Latency.Round(time.Millisecond)), nil
}

func (h *harness) record(outs []composetest.Outcome) {
	h.outMu.Lock()
	h.outs = append(h.outs, outs...)
	h.outMu.Unlock()
}

// load starts the closed-loop order load; the returned function stops it, records the outcomes for
// the audit and returns them.
func (h *harness) load(name string) func() []composetest.Outcome {
	l := &k8stest.ClosedLoop{API: h.api, Workers: loadWorkers, Rate: loadRate, Customers: 50, SKUs: 24,
		KeyPrefix: h.runID + "-" + name, Retry: composetest.Retry{MaxAttempts: 5, Budget: 30 * time.Second}}
	stop := l.Background(h.ctx)
	return func() []composetest.Outcome {
		outs := stop()
		h.record(outs)
		return outs
	}
}

// loadErr is the error of a fault step's load: a failed order.
func loadErr(t composetest.Tally) error {
	if t.Sent == 0 {
		return errors.New("no order sent")
	}
	if t.Failed > 0 {
		return fmt.Errorf("%d failed orders", t.Failed)
	}
	return nil
}

// appPods returns the ready pods of app.
func (h *harness) appPods(app string) ([]string, error) {
	s, err := h.state()
	if err != nil {
		return nil, err
	}
	return k8stest.ReadyPods(s.Pods, map[string]string{"app.kubernetes.io/name": app}), nil
}

// handled reads pod's grpc_server_handled_total for method through the API server's pod proxy (the
// admin port 9090).
func (h *harness) handled(pod, method string) (float64, error) {
	out, err := k8stest.Output(h.ctx, h.root, 30*time.Second, "kubectl", "get", "--raw",
		fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:9090/proxy/metrics", h.ns, pod))
	if err != nil {
		return 0, err
	}
	return k8stest.CounterSum(out, "grpc_server_handled_total", map[string]string{"grpc_method": method}), nil
}

// waitFor polls cond every 2 s until it holds, or timeout.
func (h *harness) waitFor(timeout time.Duration, what string, cond func() (bool, error)) (time.Duration, error) {
	t0 := time.Now()
	var lastErr error
	for {
		ok, err := cond()
		if ok && err == nil {
			return time.Since(t0), nil
		}
		lastErr = err
		if time.Since(t0) > timeout || h.ctx.Err() != nil {
			if lastErr != nil {
				return time.Since(t0), fmt.Errorf("%s: not after %v: %w", what, timeout, lastErr)
			}
			return time.Since(t0), fmt.Errorf("%s: not after %v", what, timeout)
		}
		time.Sleep(2 * time.Second)
	}
}

// deleteInventoryPod deletes one inventory pod under load: its replacement becomes Ready and serves
// ReserveStock, and no order fails.
func (h *harness) deleteInventoryPod() (string, error) {
	before, err := h.appPods("inventory")
	if err != nil {
		return "", err
	}
	if len(before) < 2 {
		return "", fmt.Errorf("ready inventory pods %v: want 2", before)
	}
	victim := before[0]
	stop := h.load("delpod")
	time.Sleep(8 * time.Second)
	_, derr := h.kubectl(time.Minute, "-n", h.ns, "delete", "pod", victim, "--wait=false")
	var replacement string
	back, werr := h.waitFor(3*time.Minute, "a new inventory pod Ready", func() (bool, error) {
		pods, err := h.appPods("inventory")
		if err != nil {
			return false, err
		}
		for _, p := range pods {
			if !slices.Contains(before, p) {
				replacement = p
			}
		}
		return replacement != "" && len(pods) >= 2 && !slices.Contains(pods, victim), nil
	})
	// The replacement takes its share of the load once order's resolver has looked inventory-headless
	// up again: within ORDER_REGISTRY_DNS_REFRESH (30 s) and the DNS TTL of its Ready pod.
	var n float64
	var serr error
	served := time.Duration(0)
	if replacement != "" {
		served, serr = h.waitFor(90*time.Second, "the replacement serves ReserveStock", func() (bool, error) {
			var err error
			n, err = h.handled(replacement, "ReserveStock")
			return n > 0, err
		})
	}
	time.Sleep(5 * time.Second)
	outs := stop()
	tally := composetest.Count(outs)
	detail := fmt.Sprintf("deleted %s, replacement %s Ready after %.1fs, serving ReserveStock %.1fs later (%.0f calls then); %s",
		victim, replacement, back.Seconds(), served.Seconds(), n, tally)
	return detail, errors.Join(derr, werr, serr, loadErr(tally))
}

// rolloutPayment restarts payment's Deployment (a rolling update) under load: no order fails, and the
// new pods serve AuthorizePayment.
func (h *harness) rolloutPayment() (string, error) {
	before, err := h.appPods("payment")
	if err != nil {
		return "", err
	}
	if len(before) < 2 {
		return "", fmt.Errorf("ready payment pods %v: want 2", before)
	}
	stop := h.load("rollout")
	time.Sleep(8 * time.Second)
	t0 := time.Now()
	_, rerr := h.kubectl(time.Minute, "-n", h.ns, "rollout", "restart", "deployment/payment")
	_, serr := h.kubectl(6*time.Minute, "-n", h.ns, "rollout", "status", "deployment/payment", "--timeout=5m")
	took := time.Since(t0)
	// The old pods drain their connections after the rollout is complete (preStop, drain delay, graceful
	// stop); order moves to the new pods when those close and its resolver looks payment-headless up
	// again. Wait until every new pod has served AuthorizePayment, under the load.
	after, err := h.appPods("payment")
	errs := []error{rerr, serr, err}
	served := map[string]float64{}
	took2, werr := h.waitFor(90*time.Second, "every new payment pod serves AuthorizePayment", func() (bool, error) {
		all := len(after) > 0
		for _, p := range after {
			if slices.Contains(before, p) {
				return false, fmt.Errorf("pod %s of before the rollout still ready", p)
			}
			n, err := h.handled(p, "AuthorizePayment")
			if err != nil {
				return false, err
			}
			served[p] = n
			all = all && n > 0
		}
		return all, nil
	})
	time.Sleep(5 * time.Second)
	outs := stop()
	tally := composetest.Count(outs)
	errs = append(errs, werr, loadErr(tally))
	var parts []string
	for _, p := range after {
		parts = append(parts, fmt.Sprintf("%s %.0f", p, served[p]))
	}
	return fmt.Sprintf("rolled %d pods in %.1fs; every new pod serving AuthorizePayment %.1fs later (%s); %s",
		len(before), took.Seconds(), took2.Seconds(), strings.Join(parts, ", "), tally), errors.Join(errs...)
}

// pdbEviction asks the eviction API to evict both inventory pods at once under load: the
// PodDisruptionBudget (maxUnavailable 1) admits one (201) and refuses the other (429); the evicted pod
// is replaced and no order fails.
func (h *harness) pdbEviction() (string, error) {
	pods, err := h.appPods("inventory")
	if err != nil {
		return "", err
	}
	if len(pods) != 2 {
		return "", fmt.Errorf("ready inventory pods %v: want 2", pods)
	}
	stop := h.load("evict")
	time.Sleep(5 * time.Second)
	type answer struct {
		pod  string
		code int
		msg  string
		err  error
	}
	answers := make([]answer, len(pods))
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Go(func() {
			code, msg, err := h.apiSrv.Evict(h.ctx, h.ns, p)
			answers[i] = answer{p, code, msg, err}
		})
	}
	wg.Wait()
	var codes []string
	admitted, refused := 0, 0
	var errs []error
	for _, a := range answers {
		codes = append(codes, fmt.Sprintf("%s→%d", a.pod, a.code))
		switch {
		case a.err != nil:
			errs = append(errs, a.err)
		case a.code == http.StatusCreated || a.code == http.StatusOK:
			admitted++
		case a.code == http.StatusTooManyRequests:
			refused++
			h.t.Logf("eviction of %s refused: %s", a.pod, a.msg)
		default:
			errs = append(errs, fmt.Errorf("evict %s: %d %s", a.pod, a.code, a.msg))
		}
	}
	if admitted != 1 || refused != 1 {
		errs = append(errs, fmt.Errorf("%d admitted, %d refused with 429: want 1 and 1", admitted, refused))
	}
	back, werr := h.waitFor(3*time.Minute, "inventory back to 2 ready pods", func() (bool, error) {
		s, err := h.state()
		if err != nil {
			return false, err
		}
		return len(k8stest.Unready(s, []k8stest.Workload{{Kind: "Deployment", Name: "inventory", Replicas: 2}}, nil)) == 0, nil
	})
	time.Sleep(5 * time.Second)
	outs := stop()
	tally := composetest.Count(outs)
	errs = append(errs, werr, loadErr(tally))
	return fmt.Sprintf("concurrent evictions %s (1 admitted, 429 for the other); replaced in %.1fs; %s",
		strings.Join(codes, ", "), back.Seconds(), tally), errors.Join(errs...)
}

// hpa shows what the HPAs can do without a metrics server: not scale on CPU (ScalingActive false), but
// bring a Deployment scaled below minReplicas back to it (the controller does that before reading
// metrics). Under load, on order.
func (h *harness) hpa() (string, error) {
	var hpa autoscalingv2.HorizontalPodAutoscaler
	cond := func() (*autoscalingv2.HorizontalPodAutoscalerCondition, error) {
		if err := h.kubectlJSON(&hpa, "-n", h.ns, "get", "hpa", "order"); err != nil {
			return nil, err
		}
		return k8stest.Condition(&hpa, autoscalingv2.ScalingActive), nil
	}
	var active *autoscalingv2.HorizontalPodAutoscalerCondition
	_, err := h.waitFor(2*time.Minute, "HPA order reports ScalingActive", func() (bool, error) {
		c, err := cond()
		active = c
		return c != nil, err
	})
	if err != nil {
		return "", err
	}
	detail := fmt.Sprintf("ScalingActive=%s %s (%s)", active.Status, active.Reason, firstN(active.Message, 90))
	var errs []error
	if active.Status != corev1.ConditionFalse {
		errs = append(errs, errors.New("ScalingActive is not False without a metrics server"))
	}
	minReplicas := int32(1)
	if hpa.Spec.MinReplicas != nil {
		minReplicas = *hpa.Spec.MinReplicas
	}
	stop := h.load("hpa")
	time.Sleep(5 * time.Second)
	_, serr := h.kubectl(time.Minute, "-n", h.ns, "scale", "deployment/order", fmt.Sprintf("--replicas=%d", minReplicas-1))
	restored, werr := h.waitFor(3*time.Minute, "the HPA restores order's minReplicas", func() (bool, error) {
		var d struct {
			Spec struct {
				Replicas int32 `json:"replicas"`
			} `json:"spec"`
		}
		if err := h.kubectlJSON(&d, "-n", h.ns, "get", "deployment", "order"); err != nil {
			return false, err
		}
		return d.Spec.Replicas == minReplicas, nil
	})
	_, rerr := h.waitFor(3*time.Minute, "order ready", func() (bool, error) {
		s, err := h.state()
		if err != nil {
			return false, err
		}
		return len(k8stest.Unready(s, []k8stest.Workload{{Kind: "Deployment", Name: "order", Replicas: minReplicas}}, nil)) == 0, nil
	})
	time.Sleep(5 * time.Second)
	outs := stop()
	tally := composetest.Count(outs)
	errs = append(errs, serr, werr, rerr, loadErr(tally))
	detail += fmt.Sprintf("; scaled order to %d: the HPA set it back to %d after %.1fs; %s", minReplicas-1, minReplicas, restored.Seconds(), tally)
	return detail, errors.Join(errs...)
}

func firstN(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// audit waits for every accepted order to leave PENDING through the API, then checks the order
// database: each accepted order exactly once, terminal, with one terminal event in the outbox.
func (h *harness) audit() (string, error) {
	h.outMu.Lock()
	outs := slices.Clone(h.outs)
	h.outMu.Unlock()
	ctx, cancel := context.WithTimeout(h.ctx, 3*time.Minute)
	defer cancel()
	final := h.api.Settle(ctx, outs)
	// The relay publishes the last events within a few seconds: the database is read until it agrees
	// or 60 s have passed.
	var res k8stest.AuditResult
	_, err := h.waitFor(time.Minute, "the order database agrees with the answers", func() (bool, error) {
		out, err := k8stest.Output(h.ctx, h.root, 2*time.Minute, "kubectl", "-n", h.ns, "exec", "postgres-0", "-c", "postgres", "--",
			"psql", "-U", "postgres", "-d", "order", "-tA", "-F", "|", "-c", k8stest.AuditQuery(h.runID+"-"))
		if err != nil {
			return false, err
		}
		rows, err := k8stest.ParseRows(out)
		if err != nil {
			return false, err
		}
		res = k8stest.Audit(outs, rows)
		return res.OK(), nil
	})
	if res.Rows == 0 && err != nil {
		return fmt.Sprintf("API: %v", final), err
	}
	tally := composetest.Count(outs)
	detail := fmt.Sprintf("%s; API final %v; database: %s", tally, final, res)
	var errs []error
	if !res.OK() {
		errs = append(errs, errors.New("the database disagrees with the answers"))
	}
	if final["unknown"] > 0 || final["PENDING"] > 0 {
		errs = append(errs, fmt.Errorf("orders not settled through the API: %v", final))
	}
	return detail, errors.Join(errs...)
}

// deleteOverlay is `kubectl delete -k` of the overlay (its Namespace with everything in it), then the
// harness's volumes.
func (h *harness) deleteOverlay() (string, error) {
	if h.forward != nil {
		h.forward.Stop()
		h.forward = nil
	}
	if !h.started || h.overlay == nil {
		return "nothing applied", nil
	}
	if _, err := k8stest.Output(h.ctx, h.root, 30*time.Second, "kubectl", "get", "--raw", "/readyz"); err != nil {
		return "the cluster does not answer: nothing to delete", os.RemoveAll(h.volumes)
	}
	if _, err := h.kubectl(10*time.Minute, "delete", "-k", overlayDir, "--ignore-not-found", "--wait", "--timeout=8m"); err != nil {
		return "", err
	}
	if _, err := h.waitFor(5*time.Minute, "namespace "+h.ns+" gone", func() (bool, error) {
		_, err := k8stest.Output(h.ctx, h.root, time.Minute, "kubectl", "get", "namespace", h.ns)
		return err != nil && strings.Contains(err.Error(), "NotFound"), nil
	}); err != nil {
		return "", err
	}
	h.applied = false
	n, err := h.deleteVolumes()
	return fmt.Sprintf("namespace %s gone, %d volumes deleted", h.ns, n), err
}

// clusterDown is `cluster.sh down`, then the machine is searched for what the cluster could leave:
// processes, mounts, network links, pod network namespaces, iptables chains.
func (h *harness) clusterDown() (string, error) {
	if err := h.run.Stream(h.ctx, 10*time.Minute, "bash", clusterSh, "down"); err != nil {
		return "", err
	}
	h.started = false
	var errs []error
	// cluster.sh status exits 3 and prints "nothing left" when nothing of the cluster is left.
	status, err := h.run.Run(h.ctx, time.Minute, "bash", clusterSh, "status")
	if s := strings.TrimSpace(string(status)); err == nil || !strings.HasPrefix(s, "nothing left") {
		errs = append(errs, fmt.Errorf("cluster.sh status after down: %s", strings.ReplaceAll(s, "\n", "; ")))
	}
	// And the harness's own look at the machine.
	left := k8stest.DefaultHost(h.kubeDir).Leftovers()
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out, err := k8stest.Output(h.ctx, h.root, time.Minute, save)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, c := range k8stest.Chains(out, "KUBE-", "CNI-", "SMK8S-") {
			left = append(left, save+" "+c)
		}
	}
	if len(left) > 0 {
		errs = append(errs, fmt.Errorf("left after cluster.sh down: %s", strings.Join(left, "; ")))
	}
	return "cluster.sh status: nothing left; no process, mount, link, netns or iptables chain of the cluster found", errors.Join(errs...)
}

// teardown runs when the test ends early: logs saved, overlay deleted, cluster down
// (K8S_TEST_KEEP=1 leaves everything up to look at).
func (h *harness) teardown() {
	if h.forward != nil {
		h.forward.Stop()
	}
	if !h.started {
		return
	}
	if os.Getenv("K8S_TEST_KEEP") == "1" {
		h.t.Logf("K8S_TEST_KEEP=1: the cluster and the overlay stay up (make k8s-down)")
		return
	}
	h.ctx = context.Background()
	if h.applied {
		if _, err := h.deleteOverlay(); err != nil {
			h.t.Errorf("teardown: %v", err)
		}
	}
	if !h.keepCluster {
		if _, err := h.clusterDown(); err != nil {
			h.t.Errorf("teardown: %v", err)
		}
	}
}

// saveLogs writes the namespace's objects, events and every pod's logs to .run/k8stest/.
func (h *harness) saveLogs() {
	if h.ns == "" {
		return
	}
	dir := filepath.Join(h.root, ".run", "k8stest")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		h.t.Logf("save logs: %v", err)
		return
	}
	ctx := context.Background()
	save := func(name string, args ...string) {
		out, err := h.run.Run(ctx, 2*time.Minute, "kubectl", args...)
		if err != nil {
			out = append(out, []byte("\n"+err.Error())...)
		}
		_ = os.WriteFile(filepath.Join(dir, name), out, 0o600)
	}
	save("get.txt", "-n", h.ns, "get", "all,pvc,events", "-o", "wide")
	save("describe-pods.txt", "-n", h.ns, "describe", "pods")
	if s, err := h.state(); err == nil {
		for _, p := range s.Pods {
			save("logs-"+p.Name+".txt", "-n", h.ns, "logs", p.Name, "--all-containers", "--timestamps", "--prefix")
		}
	}
	h.t.Logf("objects, events and pod logs in %s", dir)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
