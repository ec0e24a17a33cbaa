package composetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Container is one line of `docker compose ps -a --format json`.
type Container struct {
	Name     string `json:"Name"`
	Service  string `json:"Service"`
	State    string `json:"State"`
	Health   string `json:"Health"`
	ExitCode int    `json:"ExitCode"`
}

// ParsePS reads `docker compose ps --format json`: one JSON object per line (Compose 2.21 and newer)
// or one JSON array (older).
func ParsePS(data []byte) ([]Container, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, nil
	}
	if data[0] == '[' {
		var cs []Container
		if err := json.Unmarshal(data, &cs); err != nil {
			return nil, fmt.Errorf("docker compose ps: %w", err)
		}
		return cs, nil
	}
	var cs []Container
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var c Container
		if err := json.Unmarshal(line, &c); err != nil {
			return nil, fmt.Errorf("docker compose ps: %w", err)
		}
		cs = append(cs, c)
	}
	return cs, sc.Err()
}

// Unready lists the containers that are not where a started stack has them: a one-shot job (a service
// in jobs: restart "no") must have exited 0, every other container must be running and, if it has a
// healthcheck, healthy.
func Unready(cs []Container, jobs map[string]bool) []string {
	var bad []string
	for _, c := range cs {
		if jobs[c.Service] {
			if c.State != "exited" || c.ExitCode != 0 {
				bad = append(bad, fmt.Sprintf("%s: %s (exit %d), want exited 0", c.Name, c.State, c.ExitCode))
			}
			continue
		}
		if c.State != "running" || (c.Health != "" && c.Health != "healthy") {
			bad = append(bad, fmt.Sprintf("%s: %s %s", c.Name, c.State, c.Health))
		}
	}
	return bad
}

// OneShots returns the services of a `docker compose config --format json` document that are one-shot
// jobs (restart "no": the *-migrate and *-setup services).
func OneShots(config []byte) (map[string]bool, error) {
	var doc struct {
		Services map[string]struct {
			Restart string `json:"restart"`
		} `json:"services"`
	}
	if err := json.Unmarshal(config, &doc); err != nil {
		return nil, fmt.Errorf("docker compose config: %w", err)
	}
	jobs := map[string]bool{}
	for name, s := range doc.Services {
		if s.Restart == "no" {
			jobs[name] = true
		}
	}
	return jobs, nil
}

// Runner runs commands from the repository root with a deadline each, logging to Log.
type Runner struct {
	Root string
	// ComposeFile is relative to Root (deploy/compose/compose.yaml).
	ComposeFile string
	Log         func(format string, args ...any)
}

// Run runs name args in Root within timeout and returns its combined output.
func (r *Runner) Run(ctx context.Context, timeout time.Duration, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = r.Root
	cmd.Env = os.Environ()
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (after %v)", ctx.Err(), timeout)
		}
		return out, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(out, 60))
	}
	return out, nil
}

// Stream runs name args like Run but copies its output to Log line by line (long builds).
func (r *Runner) Stream(ctx context.Context, timeout time.Duration, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = r.Root
	cmd.Env = os.Environ()
	cmd.WaitDelay = 10 * time.Second
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		_ = pr.Close()
		_ = pw.Close()
		return fmt.Errorf("%s: %w", name, err)
	}
	_ = pw.Close()
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		r.Log("  | %s", sc.Text())
	}
	_ = pr.Close()
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (after %v)", ctx.Err(), timeout)
		}
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

// Compose runs `docker compose -f <ComposeFile> args...` (what the Makefile's COMPOSE runs).
func (r *Runner) Compose(ctx context.Context, timeout time.Duration, args ...string) ([]byte, error) {
	return r.Run(ctx, timeout, "docker", append([]string{"compose", "-f", r.ComposeFile}, args...)...)
}

// PS lists the project's containers, stopped ones included.
func (r *Runner) PS(ctx context.Context) ([]Container, error) {
	out, err := r.Compose(ctx, 30*time.Second, "ps", "-a", "--format", "json")
	if err != nil {
		return nil, err
	}
	return ParsePS(out)
}

// Leftovers lists the containers, networks and volumes labelled with the compose project.
func (r *Runner) Leftovers(ctx context.Context, project string) ([]string, error) {
	filter := "label=com.docker.compose.project=" + project
	var left []string
	for _, q := range [][]string{
		{"ps", "-a", "--filter", filter, "--format", "container {{.Names}}"},
		{"network", "ls", "--filter", filter, "--format", "network {{.Name}}"},
		{"volume", "ls", "--filter", filter, "--format", "volume {{.Name}}"},
	} {
		out, err := r.Run(ctx, 30*time.Second, "docker", q...)
		if err != nil {
			return nil, err
		}
		for l := range strings.Lines(string(out)) {
			if l = strings.TrimSpace(l); l != "" {
				left = append(left, l)
			}
		}
	}
	return left, nil
}

// Jobs returns the project's one-shot services (OneShots of `docker compose config`).
func (r *Runner) Jobs(ctx context.Context) (map[string]bool, error) {
	out, err := r.Compose(ctx, time.Minute, "config", "--format", "json")
	if err != nil {
		return nil, err
	}
	return OneShots(out)
}

// Healthy polls the project's containers until Unready lists none and want (service → count of
// running containers) holds, or timeout; it returns the last problems.
func (r *Runner) Healthy(ctx context.Context, timeout time.Duration, want map[string]int, jobs map[string]bool) ([]Container, error) {
	deadline := time.Now().Add(timeout)
	for {
		cs, err := r.PS(ctx)
		var problems []string
		if err != nil {
			problems = []string{err.Error()}
		} else {
			problems = Unready(cs, jobs)
			count := map[string]int{}
			for _, c := range cs {
				if c.State == "running" {
					count[c.Service]++
				}
			}
			for svc, n := range want {
				if count[svc] != n {
					problems = append(problems, fmt.Sprintf("%s: %d running, want %d", svc, count[svc], n))
				}
			}
		}
		if len(problems) == 0 {
			return cs, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return cs, fmt.Errorf("not healthy after %v: %s", timeout, strings.Join(problems, "; "))
		}
		time.Sleep(2 * time.Second)
	}
}

// FreePort returns want if nothing listens on 127.0.0.1:want, otherwise a free port the kernel picks.
func FreePort(want int) (int, error) {
	if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(want)); err == nil {
		_ = l.Close()
		return want, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ReadDotEnv reads KEY=VALUE lines of a compose .env file (comments and blank lines skipped).
func ReadDotEnv(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for l := range strings.Lines(string(data)) {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if k, v, ok := strings.Cut(l, "="); ok {
			env[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return env, nil
}

func tail(out []byte, lines int) string {
	ls := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
