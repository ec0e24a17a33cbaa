package k6check_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/loadtest/k6check"
)

// api is a small HTTP server the test scripts call: /ok answers JSON, /status/N answers N, /slow waits.
func api(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		var in struct {
			CustomerID string `json:"customer_id"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.CustomerID == "" {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"token": "tok-" + in.CustomerID, "nested": map[string]any{"items": []int{4, 5}}})
	})
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("Authorization") == "" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	})
	mux.HandleFunc("GET /status/{code}", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.PathValue("code") {
		case "404":
			w.WriteHeader(http.StatusNotFound)
		case "500":
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.WriteHeader(http.StatusOK)
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, &hits
}

// write puts files into a fresh directory and returns it.
func write(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func run(t *testing.T, script string, base string, opts k6check.Options) k6check.Result {
	t.Helper()
	if opts.Env == nil {
		opts.Env = map[string]string{}
	}
	opts.Env["BASE_URL"] = base
	if opts.MaxDuration == 0 {
		opts.MaxDuration = 500 * time.Millisecond
	}
	res, err := k6check.Run(t.Context(), script, opts)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	k6check.Print(&out, res)
	t.Log("\n" + out.String())
	return res
}

func hasProblem(res k6check.Result, substr string) bool {
	return slices.ContainsFunc(res.Problems, func(p string) bool { return strings.Contains(p, substr) })
}

const lib = `
import http from 'k6/http';
export const BASE = __ENV.BASE_URL;
export function token(id) {
  const res = http.post(BASE + '/token', JSON.stringify({ customer_id: id }), { headers: { 'Content-Type': 'application/json' }, tags: { name: 'token' } });
  if (res.status !== 200) { throw new Error('token ' + res.status); }
  return res.json('token');
}
`

// A passing script: ES module imports of a local file and the k6 modules, setup data handed to every
// VU, checks, a custom metric, JSON selectors, tags, thresholds and teardown.
func TestScriptThatPasses(t *testing.T) {
	t.Parallel()
	srv, _ := api(t)
	dir := write(t, map[string]string{"lib.js": lib, "main.js": `
import http from 'k6/http';
import { check, group, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { BASE, token } from './lib.js';

const seen = new Counter('tokens_seen');
const waited = new Trend('waited', true);

export const options = {
  scenarios: {
    main: { executor: 'constant-arrival-rate', rate: Number(__ENV.RATE || 20), timeUnit: '1s', duration: '1m', preAllocatedVUs: 2, maxVUs: 5 },
  },
  thresholds: {
    checks: ['rate==1'],
    http_req_failed: ['rate<0.001'],
    'http_req_duration{name:ok}': ['p(99)<60000', 'max<60000'],
    'http_reqs{name:token}': ['count==1'],
    tokens_seen: ['count>=1'],
    waited: [{ threshold: 'avg>=0' }],
  },
};

export function setup() {
  const tok = token('cust-0001');
  const res = http.post(BASE + '/token', JSON.stringify({ customer_id: 'x' }), { headers: { 'Content-Type': 'application/json' }, tags: { name: 'selector' } });
  return { tok, second: res.json('nested.items.1'), count: res.json('nested.items.#') };
}

export default function (data) {
  group('read', () => {
    const t0 = Date.now();
    const res = http.get(BASE + '/ok', { headers: { Authorization: 'Bearer ' + data.tok }, tags: { name: 'ok' }, timeout: '5s' });
    check(res, {
      'status 200': (r) => r.status === 200,
      'json ok': (r) => r.json('ok') === true,
      'setup data': () => data.second === 5 && data.count === 2 && data.tok === 'tok-cust-0001',
      'env and vu': () => __ENV.BASE_URL === BASE && __VU > 0,
    });
    seen.add(1);
    sleep(0.01);
    waited.add(Date.now() - t0);
  });
}

export function teardown(data) {
  if (data.tok !== 'tok-cust-0001') { throw new Error('teardown got ' + JSON.stringify(data)); }
}
`})
	res := run(t, filepath.Join(dir, "main.js"), srv.URL, k6check.Options{Env: map[string]string{"UNUSED": "1"}})
	if !res.OK() {
		t.Fatalf("problems: %q", res.Problems)
	}
	if len(res.Scenarios) != 1 || res.Scenarios[0].Iterations == 0 {
		t.Fatalf("scenarios %+v: want one that ran", res.Scenarios)
	}
	n := res.Scenarios[0].Iterations
	for _, c := range res.Checks {
		if c.Passes != n || c.Fails != 0 {
			t.Errorf("check %q: %d passes, %d fails, want %d passes", c.Name, c.Passes, c.Fails, n)
		}
	}
	if len(res.Checks) != 4 {
		t.Errorf("%d checks, want 4", len(res.Checks))
	}
	if !slices.Equal(res.EnvRead, []string{"BASE_URL", "RATE"}) {
		t.Errorf("EnvRead %q, want the variables the script looks at (a header's -e is checked against them)", res.EnvRead)
	}
	if len(res.Thresholds) != 7 {
		t.Errorf("%d thresholds evaluated, want 7", len(res.Thresholds))
	}
	for _, th := range res.Thresholds {
		if th.Samples == 0 {
			t.Errorf("threshold %s %s: no samples", th.Metric, th.Expr)
		}
	}
}

// The failures a real k6 run would show: a status the script does not expect (http_req_failed), a
// failed check, an exception in an iteration (fail()) and the crossed rate threshold.
func TestFailuresAreReported(t *testing.T) {
	t.Parallel()
	srv, _ := api(t)
	dir := write(t, map[string]string{"main.js": `
import http from 'k6/http';
import { check, fail } from 'k6';
export const options = {
  scenarios: { s: { executor: 'per-vu-iterations', vus: 2, iterations: 3 } },
  thresholds: { http_req_failed: ['rate<0.001'], checks: ['rate>0.999'] },
};
export default function () {
  const res = http.get(__ENV.BASE_URL + '/status/500', { tags: { name: 'boom' } });
  if (!check(res, { 'status 200': (r) => r.status === 200 })) {
    fail('boom answered ' + res.status);
  }
}
`})
	res := run(t, filepath.Join(dir, "main.js"), srv.URL, k6check.Options{})
	for _, want := range []string{
		"unexpected responses 500 to GET boom",
		`check "status 200" failed 6 of 6 times`,
		"6 iterations ended with an exception, e.g. GoError: boom answered 500",
		"threshold http_req_failed rate<0.001 crossed",
		"threshold checks rate>0.999 crossed",
	} {
		if !hasProblem(res, want) {
			t.Errorf("no problem %q in %q", want, res.Problems)
		}
	}
}

// A response the script declares expected (http.expectedStatuses) is not a failure; a transport error
// is.
func TestExpectedStatusesAndTransportErrors(t *testing.T) {
	t.Parallel()
	srv, _ := api(t)
	dir := write(t, map[string]string{"main.js": `
import http from 'k6/http';
import { check } from 'k6';
export const options = { iterations: 1 };
export default function () {
  const res = http.get(__ENV.BASE_URL + '/status/404', { tags: { name: 'missing' }, responseCallback: http.expectedStatuses(200, { min: 400, max: 404 }) });
  check(res, { 'is 404': (r) => r.status === 404 });
  http.setResponseCallback(http.expectedStatuses(200));
  const batch = http.batch([['GET', __ENV.BASE_URL + '/status/200', null, { tags: { name: 'b1' } }], __ENV.BASE_URL + '/status/200']);
  check(batch, { 'batch 200': (rs) => rs.length === 2 && rs.every((r) => r.status === 200) });
  http.get('http://127.0.0.1:1/closed', { tags: { name: 'closed' }, timeout: 2000 });
}
`})
	res := run(t, filepath.Join(dir, "main.js"), srv.URL, k6check.Options{})
	if hasProblem(res, "missing") || hasProblem(res, "b1") {
		t.Errorf("an expected response was reported: %q", res.Problems)
	}
	if len(res.Problems) != 1 || !hasProblem(res, "unexpected responses 0 (") || !hasProblem(res, "GET closed") {
		t.Errorf("problems %q: want only the refused connection", res.Problems)
	}
}

// A setup() that throws aborts the run before any iteration, as in k6, and says why.
func TestSetupAbort(t *testing.T) {
	t.Parallel()
	srv, hits := api(t)
	dir := write(t, map[string]string{"lib.js": lib, "main.js": `
import http from 'k6/http';
import { token } from './lib.js';
export const options = { scenarios: { s: { executor: 'constant-vus', vus: 1, duration: '1s' } } };
export function setup() { return { tok: token('') }; }
export default function () { http.get(__ENV.BASE_URL + '/ok'); }
`})
	res := run(t, filepath.Join(dir, "main.js"), srv.URL, k6check.Options{})
	if !strings.Contains(res.SetupError, "token 400") {
		t.Errorf("setup error %q, want the script's message", res.SetupError)
	}
	if len(res.Scenarios) != 0 || hits.Load() != 1 {
		t.Errorf("scenarios %+v after %d requests: want none run after the one setup request", res.Scenarios, hits.Load())
	}
	if !hasProblem(res, "unexpected responses 400 to POST token") {
		t.Errorf("problems %q: want the 400 counted", res.Problems)
	}
}

// What k6check cannot follow fails loudly rather than passing: an unknown module, executor, metric,
// request parameter, and a threshold whose tag filter matches nothing.
func TestUnsupportedOrWrongIsAProblem(t *testing.T) {
	t.Parallel()
	srv, _ := api(t)
	cases := map[string]struct{ src, want string }{
		"module": {`import ws from 'k6/ws'; export default function () {}`, `module "k6/ws" is not supported`},
		"remote": {`import { x } from 'https://jslib.k6.io/x.js'; export default function () {}`, "is not supported"},
		"executor": {`export const options = { scenarios: { s: { executor: 'ramping-vus', stages: [] } } };
export default function () {}`, `executor "ramping-vus" is not supported`},
		"exec": {`export const options = { scenarios: { s: { executor: 'constant-vus', vus: 1, duration: '1s', exec: 'nope' } } };
export default function () {}`, `exports no function "nope"`},
		"metric": {`export const options = { thresholds: { nope: ['rate<1'] } };
export default function () {}`, `no metric "nope"`},
		"no samples": {`import http from 'k6/http';
export const options = { thresholds: { 'http_req_duration{name:typo}': ['p(99)<1000'] } };
export default function () { http.get(__ENV.BASE_URL + '/status/200', { tags: { name: 'real' } }); }`, "no samples"},
		"param": {`import http from 'k6/http';
export default function () { http.get(__ENV.BASE_URL + '/status/200', { jar: null }); }`, `request param "jar" is not supported`},
		"syntax": {`export default function () {`, "main.js:1"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := write(t, map[string]string{"main.js": c.src})
			res := run(t, filepath.Join(dir, "main.js"), srv.URL, k6check.Options{})
			if !hasProblem(res, c.want) {
				t.Errorf("problems %q: want one with %q", res.Problems, c.want)
			}
		})
	}
}

// A threshold on a duration is reported and, on a shared machine, does not fail the run unless
// Options.Timing asks for it; a rate threshold always does.
func TestTimingThresholds(t *testing.T) {
	t.Parallel()
	srv, _ := api(t)
	dir := write(t, map[string]string{"main.js": `
import http from 'k6/http';
export const options = { iterations: 2, thresholds: { http_req_duration: ['p(99)<0'] } };
export default function () { http.get(__ENV.BASE_URL + '/status/200'); }
`})
	script := filepath.Join(dir, "main.js")
	res := run(t, script, srv.URL, k6check.Options{})
	if !res.OK() || len(res.Thresholds) != 1 || res.Thresholds[0].OK || !res.Thresholds[0].Timing {
		t.Errorf("without Timing: problems %q, thresholds %+v: want a crossed timing threshold that does not fail", res.Problems, res.Thresholds)
	}
	res = run(t, script, srv.URL, k6check.Options{Timing: true})
	if !hasProblem(res, "threshold http_req_duration p(99)<0 crossed") {
		t.Errorf("with Timing: problems %q", res.Problems)
	}
}

func TestReadHeader(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	dir := filepath.Join(root, "loadtest", "k6")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct{ header, want string }{
		"ok":          {"//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e RATE=5 loadtest/k6/s.js", ""},
		"missing":     {"// no command", "no `k6 run ...` command"},
		"other path":  {"//   k6 run loadtest/k6/other.js", `runs "loadtest/k6/other.js"`},
		"other flag":  {"//   k6 run --vus 10 loadtest/k6/s.js", "option --vus"},
		"bad env":     {"//   k6 run -e RATE loadtest/k6/s.js", "not KEY=VALUE"},
		"two scripts": {"//   k6 run loadtest/k6/s.js loadtest/k6/s.js", "more than one"},
	}
	for name, c := range cases {
		path := filepath.Join(dir, "s.js")
		if err := os.WriteFile(path, []byte(c.header+"\nexport default function () {}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		h, err := k6check.ReadHeader(root, path)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.want == "" && (h.Env["BASE_URL"] != "http://127.0.0.1:8080" || h.Env["RATE"] != "5"):
			t.Errorf("%s: env %v", name, h.Env)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want %q", name, err, c.want)
		}
	}
}

// Time limits stop JavaScript that does not return: setup() at its setupTimeout, an iteration at its
// scenario's gracefulStop after the (bounded) duration.
func TestTimeLimitsInterrupt(t *testing.T) {
	t.Parallel()
	srv, _ := api(t)
	dir := write(t, map[string]string{
		"setup.js": `
import { sleep } from 'k6';
export const options = { setupTimeout: '200ms' };
export function setup() { sleep(30); while (true) {} }
export default function () {}
`,
		"spin.js": `
export const options = { scenarios: { s: { executor: 'constant-vus', vus: 1, duration: '1m', gracefulStop: '100ms' } } };
export default function () { while (true) {} }
`})
	res := run(t, filepath.Join(dir, "setup.js"), srv.URL, k6check.Options{})
	if !strings.Contains(res.SetupError, "setup: context deadline exceeded") {
		t.Errorf("setup error %q, want the timeout", res.SetupError)
	}
	res = run(t, filepath.Join(dir, "spin.js"), srv.URL, k6check.Options{MaxDuration: 100 * time.Millisecond})
	if len(res.Scenarios) != 1 || res.Scenarios[0].Interrupted != 1 || !hasProblem(res, "completed no iteration") {
		t.Errorf("scenarios %+v, problems %q: want the spinning iteration interrupted", res.Scenarios, res.Problems)
	}
}
