package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeRnacos is the part of rnacos the gate talks to: open-API login (with auth on), /nacos/metrics,
// and the console's login, reset_password, user/add and user/update. The real server is checked by
// hand and by make compose-test; this pins the gate's own answers.
type fakeRnacos struct {
	mu    sync.Mutex
	users map[string]string // name -> password
}

func (f *fakeRnacos) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /nacos/metrics", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("POST /nacos/v1/auth/login", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if p, ok := f.users[r.FormValue("username")]; ok && p == r.FormValue("password") {
			_, _ = io.WriteString(w, `{"accessToken":"tok-`+r.FormValue("username")+`","tokenTtl":18000,"globalAdmin":true}`)
			return
		}
		http.Error(w, "unknown user!", http.StatusForbidden)
	})
	mux.HandleFunc("GET /nacos/v1/ns/instance/list", func(w http.ResponseWriter, r *http.Request) {
		if r.FormValue("accessToken") == "" {
			http.Error(w, "no token", http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, `{"hosts":[]}`)
	})
	mux.HandleFunc("POST /rnacos/api/console/v2/login/login", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		p, _ := base64Decode(r.FormValue("password"))
		if f.users[r.FormValue("username")] != p {
			_, _ = io.WriteString(w, `{"success":false,"code":"USER_CHECK_ERROR"}`)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: "token", Value: "session", Path: "/"})
		_, _ = io.WriteString(w, `{"success":true}`)
	})
	console := func(do func(m map[string]any) bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if c, err := r.Cookie("token"); err != nil || c.Value != "session" {
				_, _ = io.WriteString(w, `{"success":false,"code":"NO_LOGIN"}`)
				return
			}
			var m map[string]any
			if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			f.mu.Lock()
			ok := do(m)
			f.mu.Unlock()
			if !ok {
				_, _ = io.WriteString(w, `{"success":false,"code":"OLD_PASSWORD_INVALID"}`)
				return
			}
			_, _ = io.WriteString(w, `{"success":true}`)
		}
	}
	mux.HandleFunc("POST /rnacos/api/console/v2/user/reset_password", console(func(m map[string]any) bool {
		if f.users["nacos"] != m["oldPassword"] {
			return false
		}
		f.users["nacos"], _ = m["newPassword"].(string)
		return true
	}))
	set := func(m map[string]any) bool {
		u, _ := m["username"].(string)
		f.users[u], _ = m["password"].(string)
		return true
	}
	mux.HandleFunc("POST /rnacos/api/console/v2/user/add", console(set))
	mux.HandleFunc("POST /rnacos/api/console/v2/user/update", console(set))
	return mux
}

func base64Decode(s string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	return string(b), err
}

// startGate runs the gate in front of a fake rnacos whose "nacos" has the password initial.
func startGate(t *testing.T, initial string) (base string, f *fakeRnacos) {
	t.Helper()
	f = &fakeRnacos{users: map[string]string{"nacos": initial}}
	up := httptest.NewServer(f.handler())
	t.Cleanup(up.Close)
	grpc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = grpc.Close() })
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "initial"), []byte(initial+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	go func() {
		_ = run(addr, up.URL, up.URL, grpc.Addr().String(), filepath.Join(dir, "initial"), filepath.Join(dir, "initialised"))
	}()
	base = "http://" + addr + "/nacos"
	deadline := time.Now().Add(5 * time.Second)
	for {
		if code, _ := call(t, http.MethodGet, base+"/v1/console/health/liveness", nil); code == http.StatusOK {
			return base, f
		}
		if time.Now().After(deadline) {
			t.Fatal("gate did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func call(t *testing.T, method, u string, form url.Values) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func login(t *testing.T, base, user, password string) (int, string) {
	t.Helper()
	code, body := call(t, http.MethodPost, base+"/v1/auth/login", url.Values{"username": {user}, "password": {password}})
	var tok struct {
		AccessToken string `json:"accessToken"`
	}
	_ = json.Unmarshal([]byte(body), &tok)
	return code, tok.AccessToken
}

func TestHealthNeedsNoToken(t *testing.T) {
	base, _ := startGate(t, "initial-pw")
	if code, body := call(t, http.MethodGet, base+"/v1/console/health/readiness", nil); code != http.StatusOK || body != "OK" {
		t.Fatalf("readiness: %d %q", code, body)
	}
	// Everything else goes to rnacos, which asks for a token.
	if code, _ := call(t, http.MethodGet, base+"/v1/ns/instance/list?serviceName=x", nil); code != http.StatusForbidden {
		t.Fatalf("instance list without token: %d, want 403 from upstream", code)
	}
}

func TestAdminInitialisedOnceThenUsersManagedByAdminOnly(t *testing.T) {
	base, f := startGate(t, "initial-pw")

	if code, _ := login(t, base, "nacos", "chosen-pw"); code != http.StatusForbidden {
		t.Fatalf("admin login before initialisation: %d, want 403", code)
	}
	code, body := call(t, http.MethodPost, base+"/v1/auth/users/admin", url.Values{"password": {"chosen-pw"}})
	if code != http.StatusOK || !strings.Contains(body, `"password":"chosen-pw"`) || !strings.Contains(body, `"username":"nacos"`) {
		t.Fatalf("admin initialisation: %d %s", code, body)
	}
	code, body = call(t, http.MethodPost, base+"/v1/auth/users/admin", url.Values{"password": {"other"}})
	if code != http.StatusConflict || !strings.Contains(body, "have admin user cannot use it") {
		t.Fatalf("second admin initialisation: %d %s, want 409", code, body)
	}
	code, adminTok := login(t, base, "nacos", "chosen-pw")
	if code != http.StatusOK || adminTok == "" {
		t.Fatalf("admin login after initialisation: %d", code)
	}

	// Without the admin's token: refused, nothing created.
	if code, _ := call(t, http.MethodPost, base+"/v1/auth/users", url.Values{"username": {"svc"}, "password": {"p1"}}); code != http.StatusForbidden {
		t.Fatalf("create user without token: %d, want 403", code)
	}
	if code, _ := call(t, http.MethodPost, base+"/v1/auth/users?accessToken=tok-svc", url.Values{"username": {"svc"}, "password": {"p1"}}); code != http.StatusForbidden {
		t.Fatalf("create user with a non-admin token: %d, want 403", code)
	}
	f.mu.Lock()
	_, exists := f.users["svc"]
	f.mu.Unlock()
	if exists {
		t.Fatal("a user was created without the admin's token")
	}

	q := "?accessToken=" + adminTok
	if code, body := call(t, http.MethodPost, base+"/v1/auth/users"+q, url.Values{"username": {"svc"}, "password": {"p1"}}); code != http.StatusOK {
		t.Fatalf("create user: %d %s", code, body)
	}
	if code, _ := login(t, base, "svc", "p1"); code != http.StatusOK {
		t.Fatalf("new user's login: %d", code)
	}
	if code, body := call(t, http.MethodPut, base+"/v1/auth/users"+q, url.Values{"username": {"svc"}, "newPassword": {"p2"}}); code != http.StatusOK {
		t.Fatalf("update user: %d %s", code, body)
	}
	if code, _ := login(t, base, "svc", "p1"); code != http.StatusForbidden {
		t.Fatalf("old password after update: %d, want 403", code)
	}
	if code, _ := login(t, base, "svc", "p2"); code != http.StatusOK {
		t.Fatalf("new password after update: %d", code)
	}
	for _, p := range []string{"/v1/auth/roles", "/v1/auth/permissions"} {
		if code, _ := call(t, http.MethodPost, base+p+q, url.Values{"role": {"svc"}, "username": {"svc"}, "resource": {":*:*"}, "action": {"rw"}}); code != http.StatusOK {
			t.Fatalf("%s with the admin's token: %d", p, code)
		}
		if code, _ := call(t, http.MethodPost, base+p, url.Values{"role": {"svc"}}); code != http.StatusForbidden {
			t.Fatalf("%s without token: %d, want 403", p, code)
		}
	}
}
