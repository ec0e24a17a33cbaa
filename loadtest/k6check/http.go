package k6check

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dop251/goja"
)

const defaultRequestTimeout = 60 * time.Second

// expectedStatuses is a response callback (http.expectedStatuses): which statuses are not failures.
type expectedStatuses struct {
	ranges [][2]int
}

func defaultExpected() *expectedStatuses { return &expectedStatuses{ranges: [][2]int{{200, 399}}} }

func (e *expectedStatuses) ok(status int) bool {
	for _, r := range e.ranges {
		if status >= r[0] && status <= r[1] {
			return true
		}
	}
	return false
}

// request is one call prepared from the script's arguments (read on the VU's goroutine).
type request struct {
	method, url string
	body        []byte
	hasBody     bool
	header      http.Header
	tags        map[string]string
	timeout     time.Duration
	discard     bool
	callback    *expectedStatuses
}

// reply is what came back (made on any goroutine: http.batch sends in parallel).
type reply struct {
	status             int
	statusText, proto  string
	header             http.Header
	body               []byte
	err                error
	waiting, receiving time.Duration
	duration           time.Duration
	finalURL           string
}

// httpModule is `k6/http`: the request functions, batch, expectedStatuses and setResponseCallback.
func (v *vu) httpModule() map[string]any {
	noBody := func(method string) func(goja.FunctionCall) goja.Value {
		return func(call goja.FunctionCall) goja.Value {
			return v.send(v.prepare(method, call.Argument(0), nil, call.Argument(1)))
		}
	}
	withBody := func(method string) func(goja.FunctionCall) goja.Value {
		return func(call goja.FunctionCall) goja.Value {
			return v.send(v.prepare(method, call.Argument(0), call.Argument(1), call.Argument(2)))
		}
	}
	return map[string]any{
		"get":     noBody(http.MethodGet),
		"head":    noBody(http.MethodHead),
		"post":    withBody(http.MethodPost),
		"put":     withBody(http.MethodPut),
		"patch":   withBody(http.MethodPatch),
		"del":     withBody(http.MethodDelete),
		"options": withBody(http.MethodOptions),
		"request": func(call goja.FunctionCall) goja.Value {
			return v.send(v.prepare(strings.ToUpper(call.Argument(0).String()), call.Argument(1), call.Argument(2), call.Argument(3)))
		},
		"batch":            v.batch,
		"expectedStatuses": v.expectedStatuses,
		"setResponseCallback": func(call goja.FunctionCall) goja.Value {
			v.callback = v.callbackOf(call.Argument(0))
			return goja.Undefined()
		},
	}
}

func (v *vu) expectedStatuses(call goja.FunctionCall) goja.Value {
	e := &expectedStatuses{}
	for _, a := range call.Arguments {
		if obj, ok := a.(*goja.Object); ok {
			lo, hi := obj.Get("min"), obj.Get("max")
			if lo == nil || hi == nil {
				v.throw("expectedStatuses: want status numbers or {min, max}")
			}
			e.ranges = append(e.ranges, [2]int{int(lo.ToInteger()), int(hi.ToInteger())})
			continue
		}
		n := int(a.ToInteger())
		e.ranges = append(e.ranges, [2]int{n, n})
	}
	return v.rt.ToValue(e)
}

// callbackOf reads a responseCallback value: null turns http_req_failed off, as in k6.
func (v *vu) callbackOf(val goja.Value) *expectedStatuses {
	if goja.IsNull(val) || goja.IsUndefined(val) {
		return nil
	}
	e, ok := val.Export().(*expectedStatuses)
	if !ok {
		v.throw("responseCallback: only http.expectedStatuses(...) is supported by k6check")
	}
	return e
}

// prepare reads the arguments of one request.
func (v *vu) prepare(method string, urlVal, bodyVal, paramsVal goja.Value) request {
	if v.init {
		v.throw("making requests in the init context is not supported (k6 refuses it too)")
	}
	req := request{method: method, url: urlVal.String(), header: http.Header{}, timeout: defaultRequestTimeout, callback: v.callback}
	if u, err := url.Parse(req.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		v.throw("%s %q: not an http(s) URL", method, req.url)
	}
	if bodyVal != nil && !goja.IsUndefined(bodyVal) && !goja.IsNull(bodyVal) {
		req.hasBody = true
		switch b := bodyVal.Export().(type) {
		case string:
			req.body = []byte(b)
		case goja.ArrayBuffer:
			req.body = b.Bytes()
		case map[string]any:
			form := url.Values{}
			for k, val := range b {
				form.Set(k, fmt.Sprint(val))
			}
			req.body = []byte(form.Encode())
			req.header.Set("Content-Type", "application/x-www-form-urlencoded")
		default:
			req.body = []byte(bodyVal.String())
		}
	}
	if paramsVal == nil || goja.IsUndefined(paramsVal) || goja.IsNull(paramsVal) {
		return req
	}
	params, ok := paramsVal.(*goja.Object)
	if !ok {
		v.throw("%s %s: params must be an object", method, req.url)
	}
	for _, key := range params.Keys() {
		val := params.Get(key)
		switch key {
		case "headers":
			for k, hv := range v.stringMap(val, "headers") {
				req.header.Set(k, hv)
			}
		case "tags":
			req.tags = v.stringMap(val, "tags")
		case "timeout":
			d, err := duration(val.Export(), defaultRequestTimeout)
			if n, isNum := val.Export().(int64); isNum {
				d, err = time.Duration(n)*time.Millisecond, nil
			}
			if err != nil || d <= 0 {
				v.throw("timeout %v: want a duration", val)
			}
			req.timeout = d
		case "responseType":
			switch val.String() {
			case "text":
			case "none":
				req.discard = true
			default:
				v.throw("responseType %q is not supported by k6check (text, none)", val.String())
			}
		case "responseCallback":
			req.callback = v.callbackOf(val)
		default:
			v.throw("request param %q is not supported by k6check (headers, tags, timeout, responseType, responseCallback)", key)
		}
	}
	return req
}

// do sends req; it touches no JavaScript, so batch can run several at once.
func (v *vu) do(ctx context.Context, req request) reply {
	ctx, cancel := context.WithTimeout(ctx, req.timeout)
	defer cancel()
	var body io.Reader
	if req.hasBody {
		body = bytes.NewReader(req.body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, req.url, body)
	if err != nil {
		return reply{err: err}
	}
	hr.Header = req.header.Clone()
	if hr.Header.Get("User-Agent") == "" {
		hr.Header.Set("User-Agent", "k6check (shopmesh)")
	}
	start := time.Now()
	resp, err := v.run.client.Do(hr)
	if err != nil {
		return reply{err: err, duration: time.Since(start)}
	}
	defer func() { _ = resp.Body.Close() }()
	headersAt := time.Now()
	data, err := io.ReadAll(resp.Body)
	end := time.Now()
	rep := reply{status: resp.StatusCode, statusText: resp.Status, proto: resp.Proto, header: resp.Header,
		waiting: headersAt.Sub(start), receiving: end.Sub(headersAt), duration: end.Sub(start), finalURL: resp.Request.URL.String()}
	if err != nil {
		rep.status, rep.err = 0, err
		return rep
	}
	if !req.discard {
		rep.body = data
	}
	return rep
}

// send sends one request and returns the k6 response object.
func (v *vu) send(req request) goja.Value {
	return v.response(req, v.do(v.ctx, req))
}

// response records the request's samples and builds the response object the script sees.
func (v *vu) response(req request, rep reply) goja.Value {
	name := req.url
	if n, ok := req.tags["name"]; ok {
		name = n
	}
	tags := v.sampleTags(req.tags)
	tags["name"], tags["method"], tags["url"], tags["status"] = name, req.method, req.url, strconv.Itoa(rep.status)
	expected := true
	if req.callback != nil {
		expected = req.callback.ok(rep.status)
		tags["expected_response"] = strconv.FormatBool(expected)
		failed := 1.0
		if expected {
			failed = 0
		}
		v.run.reg.add("http_req_failed", failed, tags)
	}
	reg := v.run.reg
	reg.add("http_reqs", 1, tags)
	reg.add("http_req_duration", ms(rep.duration), tags)
	reg.add("http_req_waiting", ms(rep.waiting), tags)
	reg.add("http_req_receiving", ms(rep.receiving), tags)
	reg.add("data_sent", float64(len(req.body)), tags)
	reg.add("data_received", float64(len(rep.body)), tags)
	rr := RequestResult{Name: name, Method: req.method, Status: rep.status, Expected: expected}
	errCode := 0
	if rep.err != nil {
		rr.Error = errKind(rep.err)
		errCode = 1000
		if errors.Is(rep.err, context.DeadlineExceeded) {
			errCode = 1050
		}
	}
	v.run.recordRequest(rr)

	rt := v.rt
	o := rt.NewObject()
	headers := rt.NewObject()
	for k, vals := range rep.header {
		_ = headers.Set(k, strings.Join(vals, ", "))
	}
	timings := rt.NewObject()
	for k, d := range map[string]time.Duration{"duration": rep.duration, "waiting": rep.waiting, "receiving": rep.receiving,
		"sending": 0, "blocked": 0, "connecting": 0, "tls_handshaking": 0} {
		_ = timings.Set(k, ms(d))
	}
	reqObj := rt.NewObject()
	reqHeaders := rt.NewObject()
	for k, vals := range req.header {
		_ = reqHeaders.Set(k, vals)
	}
	_ = reqObj.Set("method", req.method)
	_ = reqObj.Set("url", req.url)
	_ = reqObj.Set("headers", reqHeaders)
	_ = reqObj.Set("body", string(req.body))
	body := goja.Null()
	if !req.discard {
		body = rt.ToValue(string(rep.body))
	}
	errMsg := ""
	if rep.err != nil {
		errMsg = rep.err.Error()
	}
	final := rep.finalURL
	if final == "" {
		final = req.url
	}
	for k, val := range map[string]any{
		"status": rep.status, "status_text": rep.statusText, "proto": rep.proto, "url": final, "body": body,
		"headers": headers, "timings": timings, "request": reqObj, "error": errMsg, "error_code": errCode,
		"cookies": rt.NewObject(),
	} {
		_ = o.Set(k, val)
	}
	var parsed goja.Value
	_ = o.Set("json", func(call goja.FunctionCall) goja.Value {
		if parsed == nil {
			p, err := v.parseData(string(rep.body))
			if err != nil || len(rep.body) == 0 {
				v.throw("cannot parse the body of %s %s as JSON: %v", req.method, req.url, err)
			}
			parsed = p
		}
		if len(call.Arguments) == 0 || goja.IsUndefined(call.Argument(0)) {
			return parsed
		}
		return v.selectJSON(parsed, call.Argument(0).String())
	})
	_ = o.Set("html", func(goja.FunctionCall) goja.Value {
		v.throw("response.html() is not supported by k6check")
		return nil
	})
	return o
}

// selectJSON follows a gjson-style path ("a.b.0.c", "items.#") as res.json(selector) does in k6.
func (v *vu) selectJSON(val goja.Value, path string) goja.Value {
	for part := range strings.SplitSeq(path, ".") {
		obj, ok := val.(*goja.Object)
		if !ok {
			return goja.Undefined()
		}
		if part == "#" {
			part = "length"
		}
		val = obj.Get(part)
		if val == nil {
			return goja.Undefined()
		}
	}
	return val
}

// errKind shortens a transport error for the report (the URL is already in the request's name).
func errKind(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// batch is http.batch: an array or object of requests sent in parallel.
func (v *vu) batch(call goja.FunctionCall) goja.Value {
	arg, ok := call.Argument(0).(*goja.Object)
	if !ok {
		v.throw("batch: want an array or object of requests")
	}
	keys := arg.Keys()
	reqs := make([]request, len(keys))
	for i, k := range keys {
		reqs[i] = v.batchItem(arg.Get(k))
	}
	replies := make([]reply, len(reqs))
	var wg sync.WaitGroup
	for i := range reqs {
		wg.Go(func() { replies[i] = v.do(v.ctx, reqs[i]) })
	}
	wg.Wait()
	var out *goja.Object
	if arg.ClassName() == "Array" {
		vals := make([]any, len(reqs))
		for i := range reqs {
			vals[i] = v.response(reqs[i], replies[i])
		}
		out = v.rt.NewArray(vals...)
	} else {
		out = v.rt.NewObject()
		for i, k := range keys {
			_ = out.Set(k, v.response(reqs[i], replies[i]))
		}
	}
	return out
}

func (v *vu) batchItem(item goja.Value) request {
	if s, ok := item.Export().(string); ok {
		return v.prepare(http.MethodGet, v.rt.ToValue(s), nil, nil)
	}
	obj, ok := item.(*goja.Object)
	if !ok {
		v.throw("batch: a request must be a URL, an array or an object")
	}
	if obj.ClassName() == "Array" {
		get := func(i int) goja.Value {
			if x := obj.Get(strconv.Itoa(i)); x != nil {
				return x
			}
			return goja.Undefined()
		}
		return v.prepare(strings.ToUpper(get(0).String()), get(1), get(2), get(3))
	}
	method := http.MethodGet
	if m := obj.Get("method"); m != nil && !goja.IsUndefined(m) {
		method = strings.ToUpper(m.String())
	}
	field := func(k string) goja.Value {
		if x := obj.Get(k); x != nil {
			return x
		}
		return goja.Undefined()
	}
	if !slices.Contains([]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}, method) {
		v.throw("batch: method %q", method)
	}
	return v.prepare(method, field("url"), field("body"), field("params"))
}
