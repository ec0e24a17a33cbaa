package main_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// TestCoreDNS builds the command once and runs it as a process on loopback, as the cluster runs the image.
func TestCoreDNS(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "coredns")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, ".") // -trimpath as build.sh: shares its build cache
	build.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	t.Run("plugins outside the build are refused", func(t *testing.T) {
		// forward is in every stock CoreDNS; this build leaves it out on purpose.
		port := freePort(t)
		out, err := runToExit(t, bin, fmt.Sprintf(".:%d {\n    bind 127.0.0.1\n    forward . 127.0.0.1:1\n}\n", port))
		if err == nil {
			t.Fatalf("coredns started with a forward plugin it should not have:\n%s", out)
		}
		if !strings.Contains(strings.ToLower(out), `unknown directive 'forward'`) {
			t.Fatalf("want an unknown-directive error, got %v:\n%s", err, out)
		}
	})

	t.Run("names outside the cluster are NXDOMAIN", func(t *testing.T) {
		// The manifest's catch-all block alone (the cluster block needs an API server).
		corefile := manifestCorefile(t)
		i := strings.Index(corefile, "\n.:53 {")
		if i < 0 {
			t.Fatalf("no catch-all block `.:53 {` in the manifest's Corefile:\n%s", corefile)
		}
		srv := start(t, bin, func(port, readyPort, metricsPort int) string {
			return loopback(t, corefile[i+1:], port, readyPort, metricsPort) + fmt.Sprintf("cluster.local:%d {\n    bind 127.0.0.1\n    ready 127.0.0.1:%d\n}\n", port, readyPort)
		})
		for _, network := range []string{"udp", "tcp"} {
			for _, name := range []string{"example.com.", "gateway.", "kafka.shopmesh-dev.svc.cluster.local.example."} {
				if got := srv.query(t, network, name, dns.TypeA); got.Rcode != dns.RcodeNameError {
					t.Errorf("%s %s: rcode %s, want NXDOMAIN", network, name, dns.RcodeToString[got.Rcode])
				}
			}
		}
	})

	t.Run("cluster zone from the API server", func(t *testing.T) {
		testClusterZone(t, bin)
	})
}

// testClusterZone runs the Corefile of addons/coredns.yaml (on loopback, with a kubeconfig instead of the
// in-cluster service account) against the test cluster's API server.
func testClusterZone(t *testing.T, bin string) {
	kubeconfig := os.Getenv("KUBECONFIG")
	if kubeconfig == "" {
		kubeconfig = filepath.Join("..", "..", "..", "..", ".run", "k8s", "kubeconfig")
	}
	if _, err := os.Stat(kubeconfig); err != nil {
		t.Skipf("no cluster: %v (start one with deploy/k8s/cluster/cluster.sh up, or set KUBECONFIG)", err)
	}
	kubeconfig, err := filepath.Abs(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatalf("kubeconfig %s: %v", kubeconfig, err)
	}
	cfg.Timeout = 20 * time.Second
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if _, err := kc.Discovery().ServerVersion(); err != nil {
		t.Skipf("no cluster answers at %s: %v", cfg.Host, err)
	}

	ns := "coredns-test-" + randomHex(t, 4)
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := kc.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete namespace %s: %v", ns, err)
		}
	})

	// Services without selectors, so the EndpointSlices are ours to write: addresses in the pod CIDR that
	// nothing dials.
	port := []corev1.ServicePort{{Name: "grpc", Port: 50051, Protocol: corev1.ProtocolTCP}}
	web, err := kc.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: port},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kc.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web-headless"},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: port},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-headless-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web-headless"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To[int32](50051), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.244.0.201"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
			{Addresses: []string{"10.244.0.202"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
		},
	}
	if slice, err = kc.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	manifest := manifestCorefile(t)
	srv := start(t, bin, func(port, readyPort, metricsPort int) string {
		// The ConfigMap's Corefile on loopback, with a kubeconfig instead of the in-cluster account, and
		// without its cache, so the update below is seen as soon as the watch delivers it.
		c := loopback(t, manifest, port, readyPort, metricsPort)
		c = replaceOnce(t, c, "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n", "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n        kubeconfig "+kubeconfig+"\n")
		return replaceOnce(t, c, "    cache 30\n", "")
	})

	fqdn := func(name string) string { return name + "." + ns + ".svc.cluster.local." }
	for _, network := range []string{"udp", "tcp"} {
		if got := aRecords(srv.query(t, network, fqdn("web"), dns.TypeA)); !slices.Equal(got, []string{web.Spec.ClusterIP}) {
			t.Errorf("%s A web: %v, want the ClusterIP %s", network, got, web.Spec.ClusterIP)
		}
		if got := aRecords(srv.query(t, network, fqdn("web-headless"), dns.TypeA)); !slices.Equal(got, []string{"10.244.0.201", "10.244.0.202"}) {
			t.Errorf("%s A web-headless: %v, want the two endpoint addresses", network, got)
		}
	}
	if got := srv.query(t, "udp", fqdn("missing"), dns.TypeA); got.Rcode != dns.RcodeNameError {
		t.Errorf("A missing: rcode %s, want NXDOMAIN", dns.RcodeToString[got.Rcode])
	}
	srvRR := srv.query(t, "udp", "_grpc._tcp."+fqdn("web"), dns.TypeSRV)
	if len(srvRR.Answer) != 1 || srvRR.Answer[0].(*dns.SRV).Port != 50051 || srvRR.Answer[0].(*dns.SRV).Target != fqdn("web") {
		t.Errorf("SRV _grpc._tcp.web: %v, want port 50051 on %s", srvRR.Answer, fqdn("web"))
	}
	rev, err := dns.ReverseAddr(web.Spec.ClusterIP)
	if err != nil {
		t.Fatal(err)
	}
	ptrRR := srv.query(t, "udp", rev, dns.TypePTR)
	if len(ptrRR.Answer) != 1 || ptrRR.Answer[0].(*dns.PTR).Ptr != fqdn("web") {
		t.Errorf("PTR %s: %v, want %s", rev, ptrRR.Answer, fqdn("web"))
	}
	if got := srv.query(t, "udp", "example.com.", dns.TypeA); got.Rcode != dns.RcodeNameError {
		t.Errorf("A example.com: rcode %s, want NXDOMAIN", dns.RcodeToString[got.Rcode])
	}

	// A third endpoint, then one not ready: answers follow the watch (no restart, no cache here).
	slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.244.0.203"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	slice.Endpoints[0].Conditions.Ready = ptr.To(false)
	if _, err := kc.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []string{"10.244.0.202", "10.244.0.203"}
	var got []string
	for ctx.Err() == nil {
		if got = aRecords(srv.query(t, "udp", fqdn("web-headless"), dns.TypeA)); slices.Equal(got, want) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("after the update: A web-headless %v, want %v", got, want)
	}
}

type server struct{ addr string }

// manifestCorefile is the Corefile of the ConfigMap in ../addons/coredns.yaml, the one the cluster runs.
func manifestCorefile(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "addons", "coredns.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for doc := range strings.SplitSeq(string(b), "\n---\n") {
		var cm corev1.ConfigMap
		if err := yaml.Unmarshal([]byte(doc), &cm); err != nil {
			t.Fatalf("addons/coredns.yaml: %v", err)
		}
		if cm.Kind == "ConfigMap" && cm.Name == "coredns" {
			return strings.TrimRight(cm.Data["Corefile"], "\n") + "\n"
		}
	}
	t.Fatal("addons/coredns.yaml has no ConfigMap coredns")
	return ""
}

// loopback moves the Corefile's listeners from port 53 and all addresses to loopback ports: DNS on port,
// ready on readyPort, prometheus on metricsPort, health on a free port.
func loopback(t *testing.T, corefile string, port, readyPort, metricsPort int) string {
	t.Helper()
	c := strings.ReplaceAll(corefile, ":53 ", fmt.Sprintf(":%d ", port))
	c = strings.ReplaceAll(c, ":53 {", fmt.Sprintf(":%d {", port))
	c = strings.ReplaceAll(c, "    errors\n", "    bind 127.0.0.1\n    errors\n")
	c = strings.ReplaceAll(c, "    prometheus :9153\n", fmt.Sprintf("    prometheus 127.0.0.1:%d\n", metricsPort))
	if strings.Contains(c, "    ready\n") {
		c = replaceOnce(t, c, "    ready\n", fmt.Sprintf("    ready 127.0.0.1:%d\n", readyPort))
	}
	if strings.Contains(c, "    health {\n") {
		c = replaceOnce(t, c, "    health {\n", fmt.Sprintf("    health 127.0.0.1:%d {\n", freePort(t)))
	}
	if strings.Contains(c, ":53") || strings.Contains(c, " :") {
		t.Fatalf("a listener of the manifest's Corefile is left off loopback:\n%s", c)
	}
	return c
}

func replaceOnce(t *testing.T, s, old, replacement string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("%q occurs %d times in the Corefile, want once:\n%s", old, n, s)
	}
	return strings.Replace(s, old, replacement, 1)
}

// start runs bin with the Corefile corefile(port, readyPort, metricsPort) until the test ends, and waits
// until its ready plugin answers 200 (with the kubernetes plugin: its caches synced) and its DNS port takes
// a TCP connection (ready answers a moment before the servers listen).
func start(t *testing.T, bin string, corefile func(port, readyPort, metricsPort int) string) server {
	t.Helper()
	port, readyPort := freePort(t), freePort(t)
	conf := filepath.Join(t.TempDir(), "Corefile")
	if err := os.WriteFile(conf, []byte(corefile(port, readyPort, freePort(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "-conf", conf)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("coredns output:\n%s", out.String())
		}
	})

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	ready := fmt.Sprintf("http://127.0.0.1:%d/ready", readyPort)
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.After(time.Minute)
	for {
		select {
		case <-exited:
			t.Fatalf("coredns exited before ready: %v\n%s", waitErr, out.String())
		case <-deadline:
			t.Fatalf("coredns not ready at %s within a minute:\n%s", ready, out.String())
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := client.Get(ready)
		if err != nil {
			continue
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			continue
		}
		if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
			_ = c.Close()
			return server{addr: addr}
		}
	}
}

func (s server) query(t *testing.T, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	r, _, err := c.Exchange(m, s.addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, dns.TypeToString[qtype], name, err)
	}
	return r
}

// runToExit runs bin with the Corefile text and returns its output once it exits (within 30 s).
func runToExit(t *testing.T, bin, corefile string) (string, error) {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "Corefile")
	if err := os.WriteFile(conf, []byte(corefile), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-conf", conf).CombinedOutput()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("coredns still running after 30 s:\n%s", out)
	}
	return string(out), err
}

func aRecords(m *dns.Msg) []string {
	var ips []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	slices.Sort(ips)
	return ips
}

// freePort returns a loopback port free for both TCP and UDP at the time of the call.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return port
		}
	}
	t.Fatal("no loopback port free for both TCP and UDP")
	return 0
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
