package k8stest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// Output runs name args in dir within timeout and returns its standard output alone (kubectl prints
// warnings on standard error, which must not reach a JSON decoder); standard error goes into the error.
func Output(ctx context.Context, dir string, timeout time.Duration, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.WaitDelay = 10 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (after %v)", ctx.Err(), timeout)
		}
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// State is the live state of a namespace's workloads (`kubectl get deployments,statefulsets,jobs,pods
// -o json`).
type State struct {
	Deployments  []appsv1.Deployment
	StatefulSets []appsv1.StatefulSet
	Jobs         []batchv1.Job
	Pods         []corev1.Pod
}

// ParseState decodes the List `kubectl get … -o json` prints; other kinds are skipped.
func ParseState(data []byte) (*State, error) {
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("kubectl get: %w", err)
	}
	s := &State{}
	for _, raw := range list.Items {
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := json.Unmarshal(raw, &meta); err != nil {
			return nil, err
		}
		var err error
		switch meta.Kind {
		case "Deployment":
			var d appsv1.Deployment
			err = json.Unmarshal(raw, &d)
			s.Deployments = append(s.Deployments, d)
		case "StatefulSet":
			var st appsv1.StatefulSet
			err = json.Unmarshal(raw, &st)
			s.StatefulSets = append(s.StatefulSets, st)
		case "Job":
			var j batchv1.Job
			err = json.Unmarshal(raw, &j)
			s.Jobs = append(s.Jobs, j)
		case "Pod":
			var p corev1.Pod
			err = json.Unmarshal(raw, &p)
			s.Pods = append(s.Pods, p)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", meta.Kind, err)
		}
	}
	return s, nil
}

// PodReady reports the pod's Ready condition (and not being deleted).
func PodReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Unready lists what keeps the namespace from being where an applied overlay has it: every workload of
// want present with all its replicas ready, updated and no extra (old or terminating) pod, and every Job
// of jobs complete. Empty means ready.
func Unready(s *State, want []Workload, jobs []string) []string {
	var bad []string
	deps := map[string]*appsv1.Deployment{}
	for i := range s.Deployments {
		deps[s.Deployments[i].Name] = &s.Deployments[i]
	}
	sts := map[string]*appsv1.StatefulSet{}
	for i := range s.StatefulSets {
		sts[s.StatefulSets[i].Name] = &s.StatefulSets[i]
	}
	for _, w := range want {
		switch w.Kind {
		case "Deployment":
			d, ok := deps[w.Name]
			if !ok {
				bad = append(bad, "deployment/"+w.Name+": missing")
				continue
			}
			st := d.Status
			want := replicasOf(d.Spec.Replicas)
			if st.ObservedGeneration < d.Generation || st.ReadyReplicas != want || st.UpdatedReplicas != want ||
				st.Replicas != want || st.AvailableReplicas != want {
				bad = append(bad, fmt.Sprintf("deployment/%s: %d/%d ready, %d updated, %d pods", w.Name,
					st.ReadyReplicas, want, st.UpdatedReplicas, st.Replicas))
			}
		case "StatefulSet":
			ss, ok := sts[w.Name]
			if !ok {
				bad = append(bad, "statefulset/"+w.Name+": missing")
				continue
			}
			want := replicasOf(ss.Spec.Replicas)
			if ss.Status.ReadyReplicas != want {
				bad = append(bad, fmt.Sprintf("statefulset/%s: %d/%d ready", w.Name, ss.Status.ReadyReplicas, want))
			}
		}
	}
	done := map[string]bool{}
	for _, j := range s.Jobs {
		for _, c := range j.Status.Conditions {
			if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
				done[j.Name] = true
			}
		}
	}
	for _, j := range jobs {
		if !done[j] {
			bad = append(bad, "job/"+j+": not complete")
		}
	}
	return bad
}

// Restarts returns the container restarts of each pod that has any, "pod=n", sorted.
func Restarts(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		n := int32(0)
		for _, c := range p.Status.ContainerStatuses {
			n += c.RestartCount
		}
		if n > 0 {
			out = append(out, fmt.Sprintf("%s=%d", p.Name, n))
		}
	}
	sort.Strings(out)
	return out
}

// ReadyPods returns the names of the ready pods whose labels include selector, sorted.
func ReadyPods(pods []corev1.Pod, selector map[string]string) []string {
	var out []string
	for i := range pods {
		p := &pods[i]
		match := true
		for k, v := range selector {
			if p.Labels[k] != v {
				match = false
			}
		}
		if match && PodReady(p) {
			out = append(out, p.Name)
		}
	}
	sort.Strings(out)
	return out
}

// Condition returns the HPA's condition of type t (nil when it has none).
func Condition(h *autoscalingv2.HorizontalPodAutoscaler, t autoscalingv2.HorizontalPodAutoscalerConditionType) *autoscalingv2.HorizontalPodAutoscalerCondition {
	for i := range h.Status.Conditions {
		if h.Status.Conditions[i].Type == t {
			return &h.Status.Conditions[i]
		}
	}
	return nil
}

// APIServer calls the Kubernetes API directly where the harness needs the HTTP status itself (the
// eviction subresource answers 429 when a PodDisruptionBudget refuses).
type APIServer struct {
	Server string
	Token  string
	Client *http.Client
}

// kubeconfig is the part of a kubeconfig `kubectl config view --raw --minify -o json` prints that the
// harness reads: one cluster and one user of the current context.
type kubeconfig struct {
	Clusters []struct {
		Cluster struct {
			Server   string `json:"server"`
			CAData   string `json:"certificate-authority-data"`
			CAFile   string `json:"certificate-authority"`
			Insecure bool   `json:"insecure-skip-tls-verify"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		User struct {
			Token     string `json:"token"`
			TokenFile string `json:"tokenFile"`
			CertData  string `json:"client-certificate-data"`
			KeyData   string `json:"client-key-data"`
			CertFile  string `json:"client-certificate"`
			KeyFile   string `json:"client-key"`
		} `json:"user"`
	} `json:"users"`
}

// NewAPIServer builds a client from a minified kubeconfig in JSON (the current context's cluster and
// user: a bearer token or a client certificate; relative file paths are taken from dir).
func NewAPIServer(minified []byte, dir string) (*APIServer, error) {
	var kc kubeconfig
	if err := json.Unmarshal(minified, &kc); err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	if len(kc.Clusters) != 1 || len(kc.Users) != 1 {
		return nil, fmt.Errorf("kubeconfig: %d clusters and %d users, want the current context's one each", len(kc.Clusters), len(kc.Users))
	}
	c, u := kc.Clusters[0].Cluster, kc.Users[0].User
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case c.CAData != "":
		pem, err := base64.StdEncoding.DecodeString(c.CAData)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig certificate-authority-data: %w", err)
		}
		tlsConf.RootCAs = x509.NewCertPool()
		if !tlsConf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, errors.New("kubeconfig certificate-authority-data: no certificate")
		}
	case c.CAFile != "":
		pem, err := os.ReadFile(abs(c.CAFile))
		if err != nil {
			return nil, err
		}
		tlsConf.RootCAs = x509.NewCertPool()
		if !tlsConf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, errors.New(c.CAFile + ": no certificate")
		}
	case c.Insecure:
		tlsConf.InsecureSkipVerify = true // the kubeconfig says so
	}
	a := &APIServer{Server: strings.TrimSuffix(c.Server, "/"), Token: u.Token}
	if u.TokenFile != "" && a.Token == "" {
		tok, err := os.ReadFile(abs(u.TokenFile))
		if err != nil {
			return nil, err
		}
		a.Token = strings.TrimSpace(string(tok))
	}
	if u.CertData != "" || u.CertFile != "" {
		var cert tls.Certificate
		var err error
		if u.CertData != "" {
			var certPEM, keyPEM []byte
			if certPEM, err = base64.StdEncoding.DecodeString(u.CertData); err == nil {
				if keyPEM, err = base64.StdEncoding.DecodeString(u.KeyData); err == nil {
					cert, err = tls.X509KeyPair(certPEM, keyPEM)
				}
			}
		} else {
			cert, err = tls.LoadX509KeyPair(abs(u.CertFile), abs(u.KeyFile))
		}
		if err != nil {
			return nil, fmt.Errorf("kubeconfig client certificate: %w", err)
		}
		tlsConf.Certificates = []tls.Certificate{cert}
	}
	a.Client = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}}
	return a, nil
}

// Evict asks the eviction subresource to evict pod, and returns the HTTP status (201: admitted; 429: a
// PodDisruptionBudget refuses) with the answer's message.
func (a *APIServer) Evict(ctx context.Context, namespace, pod string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	body, err := json.Marshal(map[string]any{
		"apiVersion": "policy/v1", "kind": "Eviction",
		"metadata": map[string]string{"name": pod, "namespace": namespace},
	})
	if err != nil {
		return 0, "", err
	}
	u := fmt.Sprintf("%s/api/v1/namespaces/%s/pods/%s/eviction", a.Server, namespace, pod)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	if a.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.Token)
	}
	resp, err := a.Client.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("evict %s: %w", pod, err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, "", err
	}
	var st struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(data, &st)
	return resp.StatusCode, st.Message, nil
}
