package localstack

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
)

// InfraInfo is the real-server part of stack.json.
type InfraInfo struct {
	NacosAddr      string `json:"nacos_addr"`
	NacosNamespace string `json:"nacos_namespace,omitempty"`
	// Databases maps a service to its DSN.
	Databases map[string]string `json:"databases"`
}

// Fault control: the chaos campaign (loadtest/chaos) crashes, stops and restarts single instances while
// the rest of the stack serves. An instance ended by Kill or Stop is not reported as crashed.

// Kill sends SIGKILL to instance ("payment-2") and waits until it has exited.
func (s *Stack) Kill(instance string) error {
	c, err := s.child(instance)
	if err != nil {
		return err
	}
	c.markStopping()
	c.signal(syscall.SIGKILL)
	<-c.done
	s.cfg.Logger.Info("killed", "instance", instance, "pid", c.inst.PID)
	return nil
}

// StopInstance sends SIGTERM to instance (it deregisters, drains and exits) and waits up to StopTimeout, then
// SIGKILLs it. It reports whether the instance had to be killed.
func (s *Stack) StopInstance(instance string) (killed bool, err error) {
	c, err := s.child(instance)
	if err != nil {
		return false, err
	}
	k := stopChildren([]*child{c}, s.cfg.StopTimeout)
	s.cfg.Logger.Info("stopped", "instance", instance, "pid", c.inst.PID, "killed", len(k) > 0)
	return len(k) > 0, nil
}

// SetEnv adds "KEY=VALUE" entries to instance's environment from its next Start on (they win over
// everything else); no entries clears them.
func (s *Stack) SetEnv(instance string, kv ...string) error {
	if _, err := s.child(instance); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.extraEnv[instance] = slices.Clone(kv)
	return nil
}

// StartInstance starts instance again, after Kill or StopInstance (or a crash), with the same
// addresses and environment (plus SetEnv's), waits until it is ready and rewrites stack.json with
// its new pid.
func (s *Stack) StartInstance(ctx context.Context, instance string) error {
	old, err := s.child(instance)
	if err != nil {
		return err
	}
	if !old.exited() {
		return fmt.Errorf("%s: still running (pid %d)", instance, old.inst.PID)
	}
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped {
		return fmt.Errorf("%s: the stack is stopped", instance)
	}
	in := old.inst
	c, err := s.startInstance(in.Service, in.Index)
	if err != nil {
		return err
	}
	s.mu.Lock()
	for _, t := range s.tiers {
		for i := range t {
			if t[i] == old {
				t[i] = c
			}
		}
	}
	for i := range s.info.Instances {
		if s.info.Instances[i].Name() == instance {
			s.info.Instances[i] = c.inst
		}
	}
	info := s.info
	info.Instances = slices.Clone(s.info.Instances)
	s.mu.Unlock()
	s.monitor(c)
	if err := s.waitReady(ctx, c); err != nil {
		return err
	}
	return writeJSON(s.StackFile(), info)
}

// Running reports whether instance's process is alive.
func (s *Stack) Running(instance string) bool {
	c, err := s.child(instance)
	return err == nil && !c.exited()
}

func (s *Stack) child(instance string) (*child, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.children[instance]
	if !ok {
		var names []string
		for n := range s.children {
			names = append(names, n)
		}
		slices.Sort(names)
		return nil, fmt.Errorf("no instance %q (have %s)", instance, strings.Join(names, ", "))
	}
	return c, nil
}

// redact hides the password of a URL-shaped DSN for logs.
func redact(dsn string) string {
	if i := strings.Index(dsn, "://"); i >= 0 {
		if j := strings.Index(dsn[i+3:], "@"); j >= 0 {
			if k := strings.Index(dsn[i+3:i+3+j], ":"); k >= 0 {
				return dsn[:i+3+k+1] + "***" + dsn[i+3+j:]
			}
		}
	}
	return dsn
}
