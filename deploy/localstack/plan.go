package localstack

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/shopmesh/shopmesh/deploy/servicelist"
)

// group is one service of the list that the stack runs, with its instances' listen addresses.
type group struct {
	svc   servicelist.Service
	addrs []string
}

// plan is what Start runs: the services of the list minus Skip, in tiers. A tier holds the services
// whose callees are all in earlier tiers (the first: the services that call nobody); a tier's services
// start together once the tier before is ready, and Stop walks the tiers backwards.
type plan struct {
	tiers [][]*group
	// byName indexes the groups; the addresses are the ones the children get (free ports resolved).
	byName map[string]*group
}

// newPlan checks cfg's service settings against the list (in start order, as servicelist.Load returns
// it) and places every running service in its tier.
func newPlan(cfg Config, list []servicelist.Service) (*plan, error) {
	var errs []error
	known := func(field, name string) bool {
		if _, ok := servicelist.Find(list, name); ok {
			return true
		}
		errs = append(errs, fmt.Errorf("%s: unknown service %q (the services are %s)", field, name,
			strings.Join(servicelist.Names(list), ", ")))
		return false
	}
	for name, addrs := range cfg.Instances {
		if known("instances", name) && len(addrs) == 0 {
			errs = append(errs, fmt.Errorf("instances: %s: no address (to leave a service out, use Skip)", name))
		}
	}
	for _, name := range cfg.Skip {
		known("skip", name)
	}
	for name := range cfg.ServiceEnv {
		known("service_env", name)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	p := &plan{byName: map[string]*group{}}
	depth := map[string]int{}
	for _, s := range list {
		if slices.Contains(cfg.Skip, s.Name) {
			continue
		}
		d := 0
		for _, c := range s.Calls {
			if slices.Contains(cfg.Skip, c) {
				errs = append(errs, fmt.Errorf("skip: %s is left out, but %s calls it", c, s.Name))
				continue
			}
			// The list is in start order: every callee already has its depth.
			d = max(d, depth[c]+1)
		}
		depth[s.Name] = d
		addrs := slices.Clone(cfg.Instances[s.Name])
		if addrs == nil {
			port := s.DevPort
			if cfg.FreePorts {
				port = 0
			}
			addrs = Addrs("127.0.0.1", port, max(1, s.DevInstances))
		}
		g := &group{svc: s, addrs: addrs}
		for len(p.tiers) <= d {
			p.tiers = append(p.tiers, nil)
		}
		p.tiers[d] = append(p.tiers[d], g)
		p.byName[s.Name] = g
	}
	if len(p.byName) == 0 {
		errs = append(errs, errors.New("skip: every service is left out"))
	}
	return p, errors.Join(errs...)
}

// groups returns every running service in start order.
func (p *plan) groups() []*group {
	var out []*group
	for _, t := range p.tiers {
		out = append(out, t...)
	}
	return out
}

// withDatabase names the running services that have a database of their own, in start order.
func (p *plan) withDatabase() []string {
	var out []string
	for _, g := range p.groups() {
		if g.svc.Database {
			out = append(out, g.svc.Name)
		}
	}
	return out
}

// instances counts the processes of the services.
func (p *plan) instances() int {
	n := 0
	for _, g := range p.byName {
		n += len(g.addrs)
	}
	return n
}
