package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
)

// component is what InfraCtl knows of a server infra.sh runs: the endpoint the stack uses and the
// port variable (and default) infra.sh serves it on.
type component struct {
	endpoint, portVar, defaultPort string
}

func components(e localstack.InfraEndpoints) map[string]component {
	return map[string]component{
		"postgres": {e.DatabaseURL, "PG_PORT", "55432"},
		"kafka":    {strings.Join(e.KafkaBrokers, ","), "KAFKA_PORT", "19092"},
		"nats":     {e.NATSURL, "NATS_PORT", "14222"},
		"nacos":    {e.NacosAddr, "NACOS_PORT", "18848"},
	}
}

// InfraCtl returns the function that kills and starts servers for the scenarios: `bash infra.sh
// <verb> <component>` with this process's environment. It refuses (before anything runs, so call
// Check first) when infra.sh would act on other servers than the ones in envFile: the port variables
// infra.sh reads (PG_PORT, KAFKA_PORT, ...) and SHOPMESH_INFRA_ENV / SHOPMESH_INFRA_DIR must describe
// the same set. While a server is down it holds the exclusive lock infratest's Shared/Exclusive use,
// so tests using the same server wait instead of failing.
type InfraCtl struct {
	Root    string
	EnvFile string
	Infra   localstack.InfraEndpoints

	mu    sync.Mutex
	locks map[string]*os.File
}

// Check reports why InfraCtl would refuse to act on comp.
func (c *InfraCtl) Check(comp string) error {
	want := os.Getenv("SHOPMESH_INFRA_ENV")
	if want == "" { // infra.sh's default: next to its data dir
		dir := os.Getenv("SHOPMESH_INFRA_DIR")
		if dir == "" {
			dir = filepath.Join(c.Root, ".run", "infra")
		}
		want = filepath.Join(filepath.Dir(dir), "infra.env")
	}
	a, _ := filepath.Abs(want)
	b, _ := filepath.Abs(c.EnvFile)
	if a != b {
		return fmt.Errorf("infra.sh writes %s but the campaign reads %s: export SHOPMESH_INFRA_ENV (and the ports, SHOPMESH_INFRA_DIR) of that set", a, b)
	}
	s, ok := components(c.Infra)[comp]
	if !ok {
		return fmt.Errorf("unknown component %q", comp)
	}
	addr, err := infratest.HostPort(s.endpoint)
	if err != nil {
		return fmt.Errorf("%s endpoint %q: %w", comp, s.endpoint, err)
	}
	_, port, _ := net.SplitHostPort(addr)
	p := os.Getenv(s.portVar)
	if p == "" {
		p = s.defaultPort
	}
	if port != p {
		return fmt.Errorf("%s is on port %s but infra.sh would act on port %s (export %s)", comp, port, p, s.portVar)
	}
	if port != s.defaultPort && os.Getenv("SHOPMESH_INFRA_DIR") == "" {
		return fmt.Errorf("%s on a non-default port needs its SHOPMESH_INFRA_DIR exported", comp)
	}
	return nil
}

// Do runs infra.sh verb comp ("kill", "stop", "start").
func (c *InfraCtl) Do(ctx context.Context, verb, comp string) error {
	if err := c.Check(comp); err != nil {
		return fmt.Errorf("infra.sh %s %s refused: %w", verb, comp, err)
	}
	if verb != "start" {
		if err := c.lock(ctx, comp); err != nil {
			return err
		}
	}
	out, err := exec.CommandContext(ctx, "bash", filepath.Join(c.Root, "deploy", "infra", "infra.sh"), verb, comp).CombinedOutput()
	if verb == "start" && err == nil {
		c.unlock(comp)
	}
	if err != nil {
		return fmt.Errorf("infra.sh %s %s: %w\n%s", verb, comp, err, out)
	}
	return nil
}

// Release drops every lock still held (the campaign ends).
func (c *InfraCtl) Release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, f := range c.locks {
		_ = f.Close()
		delete(c.locks, k)
	}
}

// lock takes the exclusive lock of pkg/platform/infratest on comp's server, waiting up to 5 minutes
// for the tests using it to finish.
func (c *InfraCtl) lock(ctx context.Context, comp string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.locks == nil {
		c.locks = map[string]*os.File{}
	}
	if _, ok := c.locks[comp]; ok {
		return nil
	}
	f, err := os.OpenFile(infratest.LockFile(comp, components(c.Infra)[comp].endpoint), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			c.locks[comp] = f
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) || ctx.Err() != nil {
			_ = f.Close()
			return fmt.Errorf("lock %s (tests are using it): %w", comp, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (c *InfraCtl) unlock(comp string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.locks[comp]; ok {
		_ = f.Close()
		delete(c.locks, comp)
	}
}
