package security

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// httpTries is how many times each single-request HTTP attack is tried.
const httpTries = 25

// client is an HTTP client whose connections come from the loopback address 127.0.0.<host>: the
// gateway keys anonymous and failed requests by client IP, so each attack gets its own bucket and its
// refusals are the check's (401, 404, 413), not the rate limiter's 429. The flood attack uses this to
// show that one client is throttled.
func client(host byte) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, host)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4}}
}

// do sends one request (a JSON body when body is not nil) and returns the status and the body.
func do(c *http.Client, method, url, token string, body io.Reader) (int, string, error) {
	return doCT(c, method, url, token, "application/json", body)
}

// doCT sends one request with a body of content type ct and returns the status and the body (drained
// and closed).
func doCT(c *http.Client, method, url, token, ct string, body io.Reader) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b), err
}

// jwtSpec is a token the attacker builds by hand (no JWT library: the point is to send what a library
// would refuse to make).
type jwtSpec struct {
	alg, kid string
	key      []byte // nil: no signature
	claims   map[string]any
}

func (s jwtSpec) String() string {
	header := map[string]any{"alg": s.alg, "typ": "JWT"}
	if s.kid != "" {
		header["kid"] = s.kid
	}
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(s.claims)
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	if s.key == nil {
		return signing + "."
	}
	var fn func() hash.Hash
	switch s.alg {
	case "HS512":
		fn = sha512.New
	case "HS384":
		fn = sha512.New384
	default:
		fn = sha256.New
	}
	m := hmac.New(fn, s.key)
	m.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(m.Sum(nil))
}

// claims are a valid claim set for customer cust-0001, changed by edit.
func claims(edit func(map[string]any)) map[string]any {
	now := time.Now()
	c := map[string]any{
		"iss": jwtIssuer, "sub": "cust-0001", "aud": []string{"shopmesh"},
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
	}
	if edit != nil {
		edit(c)
	}
	return c
}

// TestDevTokenInProd: POST /v1/dev/token on a gateway in the prod profile.
func TestDevTokenInProd(t *testing.T) {
	a := attack(t, "HTTP POST /v1/dev/token in prod", "404 (no such route outside dev)")
	f := stack(t)
	c := client(11)
	for range httpTries {
		a.try(func() (bool, error) {
			code, body, err := do(c, http.MethodPost, f.info.GatewayURL+"/v1/dev/token", "",
				strings.NewReader(`{"customer_id":"cust-0001","scopes":["admin"]}`))
			if err != nil {
				return false, err
			}
			a.saw(fmt.Sprint(code))
			return code < 400 || strings.Contains(body, `"token"`), nil
		})
	}
}

// TestForgedJWTs: tokens the gateway must refuse with 401, on a customer route (GET /v1/accounts/me).
func TestForgedJWTs(t *testing.T) {
	f := stack(t)
	k2, k1 := f.keys["k2"], f.keys["k1"]
	other := randomKey()
	cases := []struct {
		name string
		tok  func() string
	}{
		{"JWT expired", func() string {
			return jwtSpec{"HS256", "k2", k2, claims(func(c map[string]any) {
				c["iat"], c["exp"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-10*time.Minute).Unix()
			})}.String()
		}},
		{"JWT alg:none", func() string { return jwtSpec{"none", "k2", nil, claims(nil)}.String() }},
		{"JWT alg:none, no kid", func() string { return jwtSpec{"none", "", nil, claims(nil)}.String() }},
		{"JWT unknown kid", func() string { return jwtSpec{"HS256", "k9", k2, claims(nil)}.String() }},
		{"JWT wrong audience", func() string {
			return jwtSpec{"HS256", "k2", k2, claims(func(c map[string]any) { c["aud"] = []string{"another-api"} })}.String()
		}},
		{"JWT wrong issuer", func() string {
			return jwtSpec{"HS256", "k2", k2, claims(func(c map[string]any) { c["iss"] = "evil" })}.String()
		}},
		{"JWT signed with another key", func() string { return jwtSpec{"HS256", "k2", other, claims(nil)}.String() }},
		{"JWT HS512 signed with the right key", func() string { return jwtSpec{"HS512", "k2", k2, claims(nil)}.String() }},
		{"JWT without exp", func() string {
			return jwtSpec{"HS256", "k2", k2, claims(func(c map[string]any) { delete(c, "exp") })}.String()
		}},
		{"JWT issued in the future", func() string {
			return jwtSpec{"HS256", "k2", k2, claims(func(c map[string]any) {
				c["iat"], c["exp"] = time.Now().Add(time.Hour).Unix(), time.Now().Add(2*time.Hour).Unix()
			})}.String()
		}},
		{"JWT without kid signed with the old key", func() string { return jwtSpec{"HS256", "", k1, claims(nil)}.String() }},
	}
	url := f.info.GatewayURL + "/v1/accounts/me"
	for i, tc := range cases {
		a := attack(t, tc.name, "401")
		c := client(byte(20 + i))
		for range httpTries {
			a.try(func() (bool, error) {
				code, _, err := do(c, http.MethodGet, url, tc.tok(), nil)
				if err != nil {
					return false, err
				}
				a.saw(fmt.Sprint(code))
				return code != http.StatusUnauthorized, nil
			})
		}
	}
	// The control: well-formed tokens with either listed key are accepted, so the 401s above are the
	// verification's.
	c := client(19)
	for kid, key := range map[string][]byte{"k2": k2, "k1": k1} {
		code, body, err := do(c, http.MethodGet, url, jwtSpec{"HS256", kid, key, claims(nil)}.String(), nil)
		if err != nil || code == http.StatusUnauthorized || code == http.StatusTooManyRequests {
			t.Fatalf("control: a valid token (kid %s): %d %s %v", kid, code, body, err)
		}
	}
}

// validToken is a token the gateway accepts, for customer.
func validToken(f *stackFixture, customer string) string {
	return jwtSpec{"HS256", "k2", f.keys["k2"], claims(func(c map[string]any) { c["sub"] = customer })}.String()
}

// TestOversizedBody: a 1 MiB JSON body to POST /v1/orders (GATEWAY_MAX_BODY_BYTES, 64 KiB by default),
// with a valid token.
func TestOversizedBody(t *testing.T) {
	a := attack(t, "HTTP JSON body of 1 MiB (POST /v1/orders)", "413")
	f := stack(t)
	c := client(40)
	pad := strings.Repeat("x", 1<<20)
	for i := range httpTries {
		a.try(func() (bool, error) {
			body := `{"items":[{"sku":"SKU-0001","quantity":1}],"note":"` + pad + `"}`
			code, _, err := do(c, http.MethodPost, f.info.GatewayURL+"/v1/orders", validToken(f, fmt.Sprintf("cust-%04d", 100+i)),
				bytes.NewReader([]byte(body)))
			if err != nil {
				// The server may answer 413 and close before the client has written the body; a reset
				// while writing is a refusal too.
				if isConnClosed(err) {
					a.saw("connection closed while sending")
					return false, nil
				}
				return false, err
			}
			a.saw(fmt.Sprint(code))
			return code != http.StatusRequestEntityTooLarge, nil
		})
	}
}

func isConnClosed(err error) bool {
	s := err.Error()
	return strings.Contains(s, "connection reset") || strings.Contains(s, "broken pipe") || strings.Contains(s, "EOF")
}

// TestBadTokenFlood: one client sends bursts of 400 requests with a bad token, 8 at a time; the rate
// limiter, which runs before authentication, must answer 429 to part of each burst. (With the default
// GATEWAY_RATE_LIMIT_BURST 100 and GATEWAY_RATE_LIMIT_RPS 50, a burst sent within 6 s must meet 429s:
// bounded by the request count, not by a duration the test asserts.)
func TestBadTokenFlood(t *testing.T) {
	a := attack(t, "HTTP flood of bad tokens (bursts of 400 from one IP)", "429s appear")
	f := stack(t)
	bad := jwtSpec{"HS256", "k2", randomKey(), claims(nil)}.String()
	for i := range 5 {
		c := client(byte(50 + i))
		a.try(func() (bool, error) {
			var (
				mu               sync.Mutex
				limited, through int
				firstErr         error
				wg               sync.WaitGroup
			)
			next := make(chan struct{}, 400)
			for range 400 {
				next <- struct{}{}
			}
			close(next)
			for range 8 {
				wg.Go(func() {
					for range next {
						code, _, err := do(c, http.MethodGet, f.info.GatewayURL+"/v1/accounts/me", bad, nil)
						mu.Lock()
						switch {
						case err != nil:
							if firstErr == nil {
								firstErr = err
							}
						case code == http.StatusTooManyRequests:
							limited++
						case code != http.StatusUnauthorized:
							through++ // a bad token let through
						}
						mu.Unlock()
						if err == nil {
							a.saw(fmt.Sprint(code))
						}
					}
				})
			}
			wg.Wait()
			if firstErr != nil {
				return false, firstErr
			}
			return through > 0 || limited == 0, nil
		})
	}
}

// slowClient opens a raw connection to the gateway, sends head and then one byte of drip every tick
// until the server closes the connection or bound passes. It reports whether the server closed it.
func slowClient(addr string, host byte, head, drip string, bound time.Duration) (closed bool, err error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, host)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return false, err
	}
	defer func() { _ = conn.Close() }()
	if _, err := io.WriteString(conn, head); err != nil {
		return false, err
	}
	gone := make(chan struct{})
	go func() {
		// Whatever the server answers (nothing, or a 408/400), it must then close: read to EOF.
		_, _ = io.Copy(io.Discard, conn)
		close(gone)
	}()
	deadline := time.After(bound)
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-gone:
			return true, nil
		case <-deadline:
			return false, nil
		case <-tick.C:
			if _, err := io.WriteString(conn, string(drip[i%len(drip)])); err != nil {
				<-gone
				return true, nil
			}
		}
	}
}

// slowBound is the longest the suite waits for the server to drop a slow client: well above the
// gateway's GATEWAY_READ_HEADER_TIMEOUT (5 s) and GATEWAY_READ_TIMEOUT (30 s) defaults. No duration is
// asserted: only that the connection is closed within the bound.
const slowBound = 90 * time.Second

// TestSlowHeaders (slowloris): headers one byte at a time, never finished.
func TestSlowHeaders(t *testing.T) {
	t.Parallel()
	slowAttack(t, "HTTP slow headers (slowloris, one byte per 300 ms)", 60,
		"GET /v1/products HTTP/1.1\r\nHost: shopmesh\r\n", "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n")
}

// TestSlowBody: complete headers announcing a 4 KiB body, then the body one byte at a time.
func TestSlowBody(t *testing.T) {
	t.Parallel()
	f := stack(t)
	head := "POST /v1/orders HTTP/1.1\r\nHost: shopmesh\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n" +
		"Authorization: Bearer " + validToken(f, "cust-0002") + "\r\n\r\n"
	slowAttack(t, "HTTP slow body (one byte per 300 ms)", 70, head, `{"items":[{"sku":"SKU-0001","quantity":1}]`)
}

// slowAttack runs 8 slow clients at once, each a try; a client still connected after slowBound is an
// attack that succeeded (the server would keep its goroutine and socket for as long as it likes).
func slowAttack(t *testing.T, name string, firstHost byte, head, drip string) {
	a := attack(t, name, "connection closed by the server")
	f := stack(t)
	addr := strings.TrimPrefix(f.info.GatewayURL, "http://")
	done := make(chan struct{})
	const n = 8
	for i := range n {
		go func() {
			defer func() { done <- struct{}{} }()
			a.try(func() (bool, error) {
				closed, err := slowClient(addr, firstHost+byte(i), head, drip, slowBound)
				if err != nil {
					return false, err
				}
				if closed {
					a.saw("closed")
				} else {
					a.saw("still open")
				}
				return !closed, nil
			})
		}()
	}
	for range n {
		<-done
	}
}

// TestOversizedHeaders: 64 KiB of headers (GATEWAY_MAX_HEADER_BYTES, 32 KiB by default).
func TestOversizedHeaders(t *testing.T) {
	a := attack(t, "HTTP request headers of 64 KiB", "431")
	f := stack(t)
	c := client(41)
	big := strings.Repeat("h", 64<<10)
	for range httpTries {
		a.try(func() (bool, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.info.GatewayURL+"/v1/products", nil)
			if err != nil {
				return false, err
			}
			req.Header.Set("X-Padding", big)
			resp, err := c.Do(req)
			if err != nil {
				if isConnClosed(err) {
					a.saw("connection closed")
					return false, nil
				}
				return false, err
			}
			_ = resp.Body.Close()
			a.saw(fmt.Sprint(resp.StatusCode))
			return resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge, nil
		})
	}
}

// TestOversizedImportLine: a stock import (admin token) whose one line is 1 MiB
// (GATEWAY_MAX_IMPORT_LINE_BYTES, 16 KiB by default).
func TestOversizedImportLine(t *testing.T) {
	a := attack(t, "HTTP stock import with a 1 MiB line (admin token)", "413")
	f := stack(t)
	c := client(42)
	tok := jwtSpec{"HS256", "k2", f.keys["k2"], claims(func(c map[string]any) { c["sub"] = "ops"; c["scope"] = "admin" })}.String()
	line := `{"sku":"SKU-0001","quantity":1,"name":"` + strings.Repeat("n", 1<<20) + `"}` + "\n"
	for range httpTries {
		a.try(func() (bool, error) {
			code, _, err := doCT(c, http.MethodPost, f.info.GatewayURL+"/v1/stock:import", tok, "application/x-ndjson", strings.NewReader(line))
			if err != nil {
				if isConnClosed(err) {
					a.saw("connection closed while sending")
					return false, nil
				}
				return false, err
			}
			a.saw(fmt.Sprint(code))
			return code != http.StatusRequestEntityTooLarge, nil
		})
	}
}
