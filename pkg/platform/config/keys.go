package config

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Keys lists every variable FromEnv(dst, prefix, ...) reads, with the same naming: fields in upper
// snake case under prefix, embedded structs without a segment, `env:"-"` fields skipped, and map
// entries that exist in dst (so call it on the defaults a service starts from). The list is sorted.
// An `alias` is not listed: it is unprefixed, so Unknown never reports it. Vars gives the same
// names with defaults, aliases and help.
func Keys(dst any, prefix string) []string {
	vars := Vars(dst, prefix)
	if vars == nil {
		return nil
	}
	keys := make([]string, len(vars))
	for i, v := range vars {
		keys[i] = v.Name
	}
	return keys
}

// Unknown returns the names in environ (NAME or NAME=value entries, as os.Environ gives) that start
// with prefix + "_" but are not in known: most likely typos, which FromEnv would silently ignore.
func Unknown(environ []string, prefix string, known []string) []string {
	p := strings.TrimSuffix(prefix, "_") + "_"
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, p) && !slices.Contains(known, name) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// CheckUnknown is Unknown as an error naming every unknown variable, or nil.
func CheckUnknown(environ []string, prefix string, known []string) error {
	unknown := Unknown(environ, prefix, known)
	if len(unknown) == 0 {
		return nil
	}
	errs := make([]error, len(unknown))
	for i, name := range unknown {
		errs[i] = fmt.Errorf("%s: unknown variable (a typo? this service reads none of that name)", name)
	}
	return errors.Join(errs...)
}

// CheckCommand implements a service's `check-config` subcommand. args are what follows the word:
// "-keys" prints keys (every variable the service reads), one per line; otherwise args are the
// process environment (NAME=value entries; main appends os.Environ()) and the command fails when
// load (the service's Load, which validates) fails or when a variable starting with prefix + "_" is
// not in keys. Every problem is reported, each naming its field or variable.
func CheckCommand(args []string, prefix string, keys []string, load func() error, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "-keys" {
		_, err := fmt.Fprintln(stdout, strings.Join(keys, "\n"))
		return err
	}
	if err := errors.Join(load(), CheckUnknown(args, prefix, keys)); err != nil {
		return fmt.Errorf("check-config: %w", err)
	}
	_, err := fmt.Fprintf(stdout, "config ok (%d %s_* variables known)\n", len(keys), strings.TrimSuffix(prefix, "_"))
	return err
}
