// Command gate is the HTTP front of the nacos/nacos-server:v2.4.3 stand-in (issue 19 fixture, see
// ../README.md). It listens on the Nacos HTTP port and passes every request to rnacos, except the two
// places where rnacos differs from Nacos 2.4.3 in what compose relies on:
//
//	GET  /nacos/v1/console/health/{readiness,liveness}  answered here, without a token, as Nacos does
//	     (rnacos asks for one when open-API auth is on). Ready = rnacos answers /nacos/metrics and its
//	     gRPC port accepts connections.
//	POST /nacos/v1/auth/users/admin?password=P  Nacos 2.4's one-time initialisation of the admin user
//	     "nacos" (rnacos has no such API): the first call sets P (or a drawn password when P is empty)
//	     through rnacos's console API and answers {"username":"nacos","password":P}; later calls answer
//	     409 "have admin user cannot use it".
//	POST/PUT /nacos/v1/auth/users (username, password / newPassword), POST /nacos/v1/auth/roles,
//	     POST /nacos/v1/auth/permissions  Nacos's user management, for the admin's accessToken only
//	     (403 otherwise). Users are created or updated through rnacos's console API as developers
//	     (read-write on every namespace: rnacos has no per-resource permissions); roles and permissions
//	     are accepted and not enforced.
//
// rnacos creates "nacos" in an empty data dir with the password of the -initial-password file (drawn
// by the entrypoint, never shown); nobody can log in as "nacos" until the initialisation, as with Nacos.
// The logins pass through the gate: it remembers the admin's accessTokens (until they expire) and, in
// memory only, the admin password of the last successful admin login, which it needs for the console.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", ":8848", "address of the Nacos HTTP port")
	upstream := flag.String("upstream", "http://127.0.0.1:18848", "rnacos's HTTP open API")
	console := flag.String("console", "http://127.0.0.1:10848", "rnacos's console API")
	grpcAddr := flag.String("grpc", "127.0.0.1:9848", "rnacos's gRPC port (checked by readiness)")
	initial := flag.String("initial-password", "/home/nacos/data/.standin-admin-password", "file with the password rnacos gave \"nacos\" in an empty data dir")
	marker := flag.String("initialised", "/home/nacos/data/.standin-admin-initialised", "file marking that the admin password was initialised")
	flag.Parse()
	if err := run(*listen, *upstream, *console, *grpcAddr, *initial, *marker); err != nil {
		log.Fatalf("nacos stand-in gate: %v", err)
	}
}

func run(listen, upstream, console, grpcAddr, initial, marker string) error {
	up, err := url.Parse(upstream)
	if err != nil {
		return fmt.Errorf("-upstream: %w", err)
	}
	g := &gate{upstream: upstream, console: console, grpcAddr: grpcAddr, initial: initial, marker: marker,
		client: &http.Client{Timeout: 5 * time.Second}, tokens: map[string]time.Time{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /nacos/v1/console/health/readiness", g.health)
	mux.HandleFunc("GET /nacos/v1/console/health/liveness", g.health)
	mux.HandleFunc("POST /nacos/v1/auth/users/admin", g.initAdmin)
	mux.HandleFunc("/nacos/v1/auth/login", g.login)
	mux.HandleFunc("/nacos/v1/auth/users/login", g.login)
	mux.HandleFunc("POST /nacos/v1/auth/users", g.admin(g.createUser))
	mux.HandleFunc("PUT /nacos/v1/auth/users", g.admin(g.updateUser))
	mux.HandleFunc("POST /nacos/v1/auth/roles", g.admin(accepted("add role ok!")))
	mux.HandleFunc("POST /nacos/v1/auth/permissions", g.admin(accepted("add permission ok!")))
	mux.Handle("/", httputil.NewSingleHostReverseProxy(up))
	srv := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shutdown)
	}
}

type gate struct {
	upstream, console, grpcAddr, initial, marker string
	client                                       *http.Client
	mu                                           sync.Mutex           // one user-management call at a time; guards the fields below
	adminPassword                                string               // of the last successful admin login
	tokens                                       map[string]time.Time // the admin's accessTokens, until they expire
}

func (g *gate) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	if err := g.ready(ctx); err != nil {
		http.Error(w, "DOWN: "+err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = io.WriteString(w, "OK")
}

func (g *gate) ready(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.upstream+"/nacos/metrics", http.NoBody)
	if err != nil {
		return err
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return errors.New("rnacos HTTP not answering")
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("rnacos HTTP status %d", resp.StatusCode)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", g.grpcAddr)
	if err != nil {
		return errors.New("rnacos gRPC not accepting")
	}
	return conn.Close()
}

// apiResult is the JSON envelope of rnacos's console API.
type apiResult struct {
	Success bool   `json:"success"`
	Code    string `json:"code"`
}

func (g *gate) initAdmin(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, err := os.Stat(g.marker); err == nil {
		writeJSON(w, http.StatusConflict, map[string]any{"code": http.StatusConflict, "message": "have admin user cannot use it", "data": nil})
		return
	}
	password := r.FormValue("password")
	if password == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		password = base64.RawURLEncoding.EncodeToString(b)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := g.setAdminPassword(ctx, password); err != nil {
		log.Printf("nacos stand-in gate: initialising the admin password: %v", err)
		writeJSON(w, http.StatusInternalServerError, map[string]any{"code": http.StatusInternalServerError, "message": "admin initialisation failed", "data": nil})
		return
	}
	if err := os.WriteFile(g.marker, nil, 0o600); err != nil {
		log.Printf("nacos stand-in gate: %v", err)
	}
	g.adminPassword = password
	writeJSON(w, http.StatusOK, map[string]string{"username": "nacos", "password": password})
}

// setAdminPassword logs in to rnacos's console as "nacos" with the initial password and changes it.
func (g *gate) setAdminPassword(ctx context.Context, password string) error {
	initial, err := os.ReadFile(filepath.Clean(g.initial))
	if err != nil {
		return err
	}
	old := string(bytes.TrimSpace(initial))
	c, err := g.consoleLogin(ctx, old)
	if err != nil {
		return err
	}
	body, err := json.Marshal(map[string]string{"oldPassword": old, "newPassword": password})
	if err != nil {
		return err
	}
	if err := g.consoleCall(ctx, c, "/user/reset_password", "application/json", body); err != nil {
		return fmt.Errorf("console reset_password: %w", err)
	}
	return nil
}

// consoleLogin returns a client with a console session of "nacos".
func (g *gate) consoleLogin(ctx context.Context, password string) (*http.Client, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, err
	}
	c := &http.Client{Timeout: 5 * time.Second, Jar: jar}
	form := url.Values{"username": {"nacos"}, "password": {base64.StdEncoding.EncodeToString([]byte(password))}}
	if err := g.consoleCall(ctx, c, "/login/login", "application/x-www-form-urlencoded", []byte(form.Encode())); err != nil {
		return nil, fmt.Errorf("console login: %w", err)
	}
	return c, nil
}

// login passes a login to rnacos and remembers the admin's token and password when it succeeds.
func (g *gate) login(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	user, password := r.FormValue("username"), r.FormValue("password")
	form := url.Values{"username": {user}, "password": {password}}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, g.upstream+"/nacos/v1/auth/login", strings.NewReader(form.Encode()))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := g.client.Do(req)
	if err != nil {
		http.Error(w, "rnacos not answering", http.StatusBadGateway)
		return
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		http.Error(w, "rnacos answer cut", http.StatusBadGateway)
		return
	}
	var tok struct {
		AccessToken string `json:"accessToken"`
		TokenTTL    int64  `json:"tokenTtl"`
	}
	if user == "nacos" && resp.StatusCode == http.StatusOK && json.Unmarshal(body, &tok) == nil && tok.AccessToken != "" {
		g.mu.Lock()
		now := time.Now()
		for t, exp := range g.tokens {
			if now.After(exp) {
				delete(g.tokens, t)
			}
		}
		g.tokens[tok.AccessToken] = now.Add(time.Duration(tok.TokenTTL) * time.Second)
		g.adminPassword = password
		g.mu.Unlock()
	}
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}

// admin wraps a user-management handler: the admin's accessToken (query, form or header) or 403, as
// Nacos answers; the handler runs with g.mu held.
func (g *gate) admin(next func(http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := r.FormValue("accessToken")
		if tok == "" {
			tok = r.Header.Get("accessToken")
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		if exp, ok := g.tokens[tok]; !ok || time.Now().After(exp) {
			http.Error(w, "authorization failed!", http.StatusForbidden)
			return
		}
		next(w, r)
	}
}

func accepted(msg string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"code": http.StatusOK, "message": msg, "data": nil})
	}
}

// createUser adds (or, when it exists, updates) a developer user through the console.
func (g *gate) createUser(w http.ResponseWriter, r *http.Request) {
	g.userCall(w, r, r.FormValue("password"), "create user ok!", "/user/add", "/user/update")
}

// updateUser sets a user's password through the console.
func (g *gate) updateUser(w http.ResponseWriter, r *http.Request) {
	g.userCall(w, r, r.FormValue("newPassword"), "update user ok!", "/user/update")
}

func (g *gate) userCall(w http.ResponseWriter, r *http.Request, password, okMsg string, paths ...string) {
	user := r.FormValue("username")
	if user == "" || password == "" || user == "nacos" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": http.StatusBadRequest, "message": "username and password are required (and not nacos)", "data": nil})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	err := func() error {
		c, err := g.consoleLogin(ctx, g.adminPassword)
		if err != nil {
			return err
		}
		body, err := json.Marshal(map[string]any{"username": user, "password": password, "enable": true, "roles": "1"})
		if err != nil {
			return err
		}
		for _, p := range paths {
			if err := g.consoleCall(ctx, c, p, "application/json", body); err != nil {
				return fmt.Errorf("console %s: %w", p, err)
			}
		}
		return nil
	}()
	if err != nil {
		log.Printf("nacos stand-in gate: user %s: %v", user, err)
		writeJSON(w, http.StatusInternalServerError, map[string]any{"code": http.StatusInternalServerError, "message": "user management failed", "data": nil})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"code": http.StatusOK, "message": okMsg, "data": nil})
}

func (g *gate) consoleCall(ctx context.Context, c *http.Client, path, contentType string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.console+"/rnacos/api/console/v2"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	var res apiResult
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&res); err != nil {
		return fmt.Errorf("status %d: %w", resp.StatusCode, err)
	}
	if !res.Success {
		return fmt.Errorf("rnacos: %s", res.Code)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
