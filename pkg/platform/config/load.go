package config

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Base lets Load and the service command reach the platform part of any config that embeds Config.
func (c *Config) Base() *Config { return c }

// Load returns the configuration selected by <prefix>_PROFILE from defaults(profile) with the environment
// applied through lookup (prefixed names; an `alias` tag names an unprefixed variable read when the prefixed
// one is unset), the profile recorded in Base(), then Validate. Errors start with "config: " and name the
// variable. In the prod and k8s profiles every credential must differ from the values committed in the
// repository (RefuseCommittedSecrets). There is no default profile: an unset or empty <prefix>_PROFILE is an error (fail closed; `make
// run` chooses dev explicitly), so a process started without one refuses to start rather than running with
// the dev profile's open doors (dev tokens, a built-in JWT secret, no mTLS).
//
// A service's Load is one line: config.Load[Config]("ORDER", lookup, Default), where Config embeds the
// platform's Config (and Brokers when it uses them) and has its own Validate calling the platform's.
func Load[C any, PC interface {
	*C
	Base() *Config
	Validate() error
}](prefix string, lookup Lookup, defaults func(Profile) C) (C, error) {
	var zero C
	prefix = strings.TrimSuffix(prefix, "_")
	profile, err := SelectedProfile(prefix, lookup)
	if err != nil {
		return zero, fmt.Errorf("config: %w", err)
	}
	c := defaults(profile)
	pc := PC(&c)
	if err := FromEnv(pc, prefix, lookup); err != nil {
		return zero, fmt.Errorf("config: %w", err)
	}
	pc.Base().Profile = profile
	err = pc.Validate()
	if profile.RefusesCommittedSecrets() {
		err = errors.Join(err, RefuseCommittedSecrets(pc))
	}
	if err != nil {
		return zero, &validationError{msg: "config: " + nameVariables(err, prefix, Vars(pc, prefix)), err: err}
	}
	return c, nil
}

// NoProfileError is the error of SelectedProfile (and so Load) when <prefix>_PROFILE is unset or empty.
type NoProfileError struct {
	// Variable is the variable that is not set, ORDER_PROFILE.
	Variable string
}

func (e *NoProfileError) Error() string {
	return e.Variable + " is not set: choose dev (what make run uses), test, compose, k8s or prod"
}

// SelectedProfile is the profile <prefix>_PROFILE names. Unset or empty is a *NoProfileError naming the
// variable and the choices; a name that is not a profile is an error too.
func SelectedProfile(prefix string, lookup Lookup) (Profile, error) {
	prefix = strings.TrimSuffix(prefix, "_")
	v, _ := lookup(prefix + "_PROFILE")
	p := Profile(strings.TrimSpace(v))
	switch {
	case p == "":
		return "", &NoProfileError{Variable: prefix + "_PROFILE"}
	case !p.Valid():
		return "", fmt.Errorf("%s_PROFILE: must be dev, test, compose, k8s or prod, got %q", prefix, p)
	}
	return p, nil
}

// validationError is Validate's error with each problem's variable named; it unwraps to Validate's.
type validationError struct {
	msg string
	err error
}

func (e *validationError) Error() string { return e.msg }
func (e *validationError) Unwrap() error { return e.err }

// nameVariables renders err one problem a line, each with the path of fields it was reported under
// ("client.retry: max_attempts: must be ..."), and adds the variable of the field a line names:
// "client.retry: max_attempts (SHOP_CLIENT_RETRY_MAX_ATTEMPTS): must be ...". Validate methods report
// fields in lower snake case, so a field path maps onto a variable name as FromEnv builds them.
func nameVariables(err error, prefix string, vars []Var) string {
	byName := make(map[string]Var, len(vars))
	for _, v := range vars {
		byName[v.Name] = v
	}
	var lines []string
	for _, l := range problems(err, "") {
		lines = append(lines, nameVariable(l, prefix, byName))
	}
	return strings.Join(lines, "\n")
}

// problems flattens err: every leaf error becomes its lines, each preceded by the "field: " heads of the
// errors wrapping it (fmt.Errorf("field: %w", errors.Join(a, b)) gives "field: a" and "field: b").
func problems(err error, head string) []string {
	if err == nil {
		return nil
	}
	switch u := err.(type) { //nolint:errorlint // walks the wrap tree itself, one level at a time
	case interface{ Unwrap() []error }:
		msg, children := err.Error(), u.Unwrap()
		var inner []string
		for _, c := range children {
			if c != nil {
				inner = append(inner, c.Error())
			}
		}
		if h, ok := strings.CutSuffix(msg, strings.Join(inner, "\n")); ok && !strings.Contains(h, "\n") {
			var out []string
			for _, c := range children {
				out = append(out, problems(c, head+h)...)
			}
			return out
		}
	case interface{ Unwrap() error }:
		if inner := u.Unwrap(); inner != nil {
			if h, ok := strings.CutSuffix(err.Error(), inner.Error()); ok && !strings.Contains(h, "\n") {
				return problems(inner, head+h)
			}
		}
	}
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = head + l
	}
	return lines
}

var (
	// fieldList is a segment naming one or more fields: "server.max_deadline", `targets["x"].addresses`,
	// "seed_products, seed_stock", "consecutive_failures or failure_ratio".
	fieldList = regexp.MustCompile(`^` + fieldPath + `((, | or | and )` + fieldPath + `)*$`)
	fieldSep  = regexp.MustCompile(`, | or | and `)
	fieldPart = regexp.MustCompile(`[a-z0-9_]+|\["[^"]*"\]`)
)

const fieldPath = `[a-z][a-z0-9_]*(\["[^"]*"\])?(\.[a-z][a-z0-9_]*(\["[^"]*"\])?)*`

// nameVariable adds to line the variables of the longest run of leading "field: " segments that names
// fields FromEnv reads, or returns line unchanged.
func nameVariable(line, prefix string, vars map[string]Var) string {
	segs := strings.Split(line, ": ")
	var path []string // field path parts so far, upper snake
	best, bestNames := -1, ""
	for i, seg := range segs[:len(segs)-1] {
		if !fieldList.MatchString(seg) {
			break
		}
		fields := fieldSep.Split(seg, -1)
		if len(fields) > 1 {
			// A list ends the path: "seed_products, seed_stock: must be > 0".
			var names []string
			for _, f := range fields {
				if v, ok := vars[varName(prefix, append(path[:len(path):len(path)], f))]; ok {
					names = append(names, describe(v))
				}
			}
			if len(names) > 0 {
				best, bestNames = i, strings.Join(names, ", ")
			}
			break
		}
		path = append(path, seg)
		if v, ok := vars[varName(prefix, path)]; ok {
			best, bestNames = i, describe(v)
		}
	}
	if best < 0 {
		return line
	}
	segs[best] += " (" + bestNames + ")"
	return strings.Join(segs, ": ")
}

// varName is the variable FromEnv reads for a field path such as [client.retry max_attempts] or
// [targets["inventory"].addresses].
func varName(prefix string, path []string) string {
	parts := []string{prefix}
	for _, p := range path {
		for _, m := range fieldPart.FindAllString(p, -1) {
			if k, ok := strings.CutPrefix(m, `["`); ok {
				parts = append(parts, keyName(strings.TrimSuffix(k, `"]`)))
			} else {
				parts = append(parts, strings.ToUpper(m))
			}
		}
	}
	return strings.Join(parts, "_")
}

func describe(v Var) string {
	if v.Alias != "" {
		return v.Name + " or " + v.Alias
	}
	return v.Name
}
