package k6check

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

var (
	headerLine    = regexp.MustCompile(`(?m)^//\s+(k6 run\s.*)$`)
	defaultExport = regexp.MustCompile(`(?m)^export\s+default\s`)
)

// Header is the command a script's header comment documents (`//   k6 run -e K=V ... path`).
type Header struct {
	Command string
	// Env holds the -e KEY=VALUE pairs in order of appearance; Path is the script argument.
	Env  map[string]string
	Path string
}

// ReadHeader finds the k6 run command in the script's leading comment and checks it is one k6check
// can follow: only -e/--env options and the script's own path relative to root (the commands are run
// from the repository root).
func ReadHeader(root, script string) (Header, error) {
	src, err := os.ReadFile(script)
	if err != nil {
		return Header{}, err
	}
	m := headerLine.FindSubmatch(src)
	if m == nil {
		return Header{}, fmt.Errorf("%s: no `k6 run ...` command in its header comment", script)
	}
	h := Header{Command: strings.TrimSpace(string(m[1])), Env: map[string]string{}}
	args := strings.Fields(h.Command)[2:]
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-e" || a == "--env":
			if i+1 >= len(args) {
				return h, fmt.Errorf("%s: header %q: %s without KEY=VALUE", script, h.Command, a)
			}
			i++
			k, val, ok := strings.Cut(args[i], "=")
			if !ok || k == "" {
				return h, fmt.Errorf("%s: header %q: %q is not KEY=VALUE", script, h.Command, args[i])
			}
			h.Env[k] = val
		case strings.HasPrefix(a, "-"):
			return h, fmt.Errorf("%s: header %q: option %s is not followed by k6check (only -e KEY=VALUE)", script, h.Command, a)
		case h.Path != "":
			return h, fmt.Errorf("%s: header %q: more than one script argument", script, h.Command)
		default:
			h.Path = a
		}
	}
	rel, err := filepath.Rel(root, script)
	if err != nil {
		return h, err
	}
	if h.Path != filepath.ToSlash(rel) {
		return h, fmt.Errorf("%s: header %q runs %q, want %q (run from the repository root)", script, h.Command, h.Path, filepath.ToSlash(rel))
	}
	return h, nil
}

// Scripts lists the runnable scripts of dir: the .js files with a default export (lib.js and other
// modules have none).
func Scripts(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.js"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if defaultExport.Match(src) {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no k6 script (a .js file with export default)", dir)
	}
	return out, nil
}
