package composetest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// getJSON GETs u within 10 s and decodes a 200 answer into out; it returns the status code.
func getJSON(ctx context.Context, c *http.Client, u string, header http.Header, out any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("GET %s: %s: %.200s", u, resp.Status, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return resp.StatusCode, fmt.Errorf("GET %s: %w", u, err)
	}
	return resp.StatusCode, nil
}

// TraceServices returns the service names of the processes of trace id in Jaeger's query API (base
// "http://127.0.0.1:16686") with the number of spans; an unknown trace is an empty map.
func TraceServices(ctx context.Context, c *http.Client, base, id string) (map[string]int, error) {
	var tr struct {
		Data []struct {
			Spans []struct {
				ProcessID string `json:"processID"`
			} `json:"spans"`
			Processes map[string]struct {
				ServiceName string `json:"serviceName"`
			} `json:"processes"`
		} `json:"data"`
	}
	code, err := getJSON(ctx, c, strings.TrimSuffix(base, "/")+"/api/traces/"+id, nil, &tr)
	if code == http.StatusNotFound {
		return map[string]int{}, nil
	}
	if err != nil {
		return nil, err
	}
	got := map[string]int{}
	for _, d := range tr.Data {
		for _, s := range d.Spans {
			got[d.Processes[s.ProcessID].ServiceName]++
		}
	}
	return got, nil
}

// UpTargets runs the instant query `up` in Prometheus (base "http://127.0.0.1:9090") and returns, per
// value of label (e.g. "service"), how many series are 1 and how many 0.
func UpTargets(ctx context.Context, c *http.Client, base, label string) (up, down map[string]int, err error) {
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if _, err := getJSON(ctx, c, strings.TrimSuffix(base, "/")+"/api/v1/query?query=up", nil, &r); err != nil {
		return nil, nil, err
	}
	if r.Status != "success" {
		return nil, nil, fmt.Errorf("prometheus query up: status %q", r.Status)
	}
	up, down = map[string]int{}, map[string]int{}
	for _, s := range r.Data.Result {
		name, ok := s.Metric[label]
		if !ok {
			continue
		}
		if v, _ := s.Value[1].(string); v == "1" {
			up[name]++
		} else {
			down[name]++
		}
	}
	return up, down, nil
}

// Nacos reads the registry over Nacos' open API (base "http://127.0.0.1:8848"), logging in first when
// it answers 401/403 and a password is given.
type Nacos struct {
	Base, Username, Password string
	Client                   *http.Client
	token                    string
}

// Instances returns the healthy instances ("ip:port") of service in DEFAULT_GROUP.
func (n *Nacos) Instances(ctx context.Context, service string) ([]string, error) {
	var r struct {
		Hosts []struct {
			IP      string `json:"ip"`
			Port    int    `json:"port"`
			Healthy bool   `json:"healthy"`
			Enabled bool   `json:"enabled"`
		} `json:"hosts"`
	}
	for attempt := 0; ; attempt++ {
		q := url.Values{"serviceName": {service}, "healthyOnly": {"true"}}
		if n.token != "" {
			q.Set("accessToken", n.token)
		}
		code, err := getJSON(ctx, n.Client, strings.TrimSuffix(n.Base, "/")+"/nacos/v1/ns/instance/list?"+q.Encode(), nil, &r)
		if (code == http.StatusUnauthorized || code == http.StatusForbidden) && attempt == 0 && n.Password != "" {
			if lerr := n.login(ctx); lerr != nil {
				return nil, fmt.Errorf("%w; login: %w", err, lerr)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	var out []string
	for _, h := range r.Hosts {
		if h.Healthy {
			out = append(out, fmt.Sprintf("%s:%d", h.IP, h.Port))
		}
	}
	return out, nil
}

func (n *Nacos) login(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	form := url.Values{"username": {n.Username}, "password": {n.Password}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(n.Base, "/")+"/nacos/v1/auth/login",
		strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := n.Client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	var t struct {
		AccessToken string `json:"accessToken"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&t); err != nil || t.AccessToken == "" {
		return fmt.Errorf("nacos login as %s: %s", n.Username, resp.Status)
	}
	n.token = t.AccessToken
	return nil
}
