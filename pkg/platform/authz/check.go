package authz

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/grpc"
)

// CheckRules reports whether rules decide every method of the given services, for a service's own test
// (its generated *_ServiceDesc): each method needs its own key with at least one caller, so a new RPC
// fails the test until someone decides who may call it. Wildcard keys ("/pkg.Service/*") are refused for
// the same reason, and so are keys naming no method of services and rules NewPolicy refuses. Every
// problem is reported.
func CheckRules(rules Rules, services ...grpc.ServiceDesc) error {
	var errs []error
	if _, err := NewPolicy(rules, "edge-check"); err != nil {
		errs = append(errs, err)
	}
	methods := map[string]bool{}
	for _, sd := range services {
		for _, m := range sd.Methods {
			methods["/"+sd.ServiceName+"/"+m.MethodName] = true
		}
		for _, s := range sd.Streams {
			methods["/"+sd.ServiceName+"/"+s.StreamName] = true
		}
	}
	for _, m := range slices.Sorted(maps.Keys(methods)) {
		callers, ok := rules[m]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("authz rules: %s has no rule: decide who may call it", m))
		case len(callers) == 0:
			errs = append(errs, fmt.Errorf("authz rules: %s: nobody may call it", m))
		}
	}
	for _, key := range slices.Sorted(maps.Keys(rules)) {
		if !methods[key] {
			errs = append(errs, fmt.Errorf("authz rules: %s is no method of the service (wildcards are refused: name each method)", key))
		}
	}
	return errors.Join(errs...)
}
