package k6check

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/dop251/goja"
	"github.com/evanw/esbuild/pkg/api"
)

// programs compiles each script file once for every VU: esbuild turns the ES module into CommonJS
// (goja has no ES modules; k6 itself transforms with esbuild for TypeScript), goja compiles the result
// wrapped in a function of (exports, require, module), and the compiled program is shared by the VUs'
// runtimes.
type programs struct {
	mu    sync.Mutex
	cache map[string]*goja.Program
}

func (p *programs) get(path string) (*goja.Program, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if prg, ok := p.cache[path]; ok {
		return prg, nil
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	res := api.Transform(string(src), api.TransformOptions{
		Loader:     api.LoaderJS,
		Format:     api.FormatCommonJS,
		Target:     api.ES2017,
		Sourcefile: path,
	})
	if len(res.Errors) > 0 {
		msgs := make([]string, 0, len(res.Errors))
		for _, m := range res.Errors {
			line := 0
			if m.Location != nil {
				line = m.Location.Line
			}
			msgs = append(msgs, fmt.Sprintf("%s:%d: %s", path, line, m.Text))
		}
		return nil, fmt.Errorf("%s", strings.Join(msgs, "; "))
	}
	wrapped := "(function (exports, require, module, __filename, __dirname) {" + string(res.Code) + "\n})"
	prg, err := goja.Compile(path, wrapped, false)
	if err != nil {
		return nil, err
	}
	if p.cache == nil {
		p.cache = map[string]*goja.Program{}
	}
	p.cache[path] = prg
	return prg, nil
}

// builtinModules are the k6 modules the shim provides; any other import fails the check, so a script
// that starts using one is noticed here rather than by a user with k6.
var builtinModules = []string{"k6", "k6/http", "k6/metrics", "k6/data"}

// require loads a module for a VU: a k6 built-in from the shim, or a local file relative to the
// importing file (remote modules are not fetched).
func (v *vu) require(fromDir, spec string) (*goja.Object, error) {
	if mod, ok := v.modules[spec]; ok {
		return mod, nil
	}
	switch spec {
	case "k6":
		return v.cacheModule(spec, v.k6Module())
	case "k6/http":
		return v.cacheModule(spec, v.httpModule())
	case "k6/metrics":
		return v.cacheModule(spec, v.metricsModule())
	case "k6/data":
		return v.cacheModule(spec, v.dataModule())
	}
	if !strings.HasPrefix(spec, "./") && !strings.HasPrefix(spec, "../") && !filepath.IsAbs(spec) {
		return nil, fmt.Errorf("module %q is not supported by k6check (k6 built-ins: %s; local files by relative path)",
			spec, strings.Join(builtinModules, ", "))
	}
	path := spec
	if !filepath.IsAbs(path) {
		path = filepath.Join(fromDir, spec)
	}
	if mod, ok := v.modules[path]; ok {
		return mod, nil
	}
	prg, err := v.run.programs.get(path)
	if err != nil {
		return nil, err
	}
	fnVal, err := v.rt.RunProgram(prg)
	if err != nil {
		return nil, err
	}
	fn, ok := goja.AssertFunction(fnVal)
	if !ok {
		return nil, fmt.Errorf("%s: module wrapper is not a function", path)
	}
	module := v.rt.NewObject()
	exports := v.rt.NewObject()
	if err := module.Set("exports", exports); err != nil {
		return nil, err
	}
	v.modules[path] = exports // a cycle sees the partial exports, as in CommonJS
	dir := filepath.Dir(path)
	req := func(call goja.FunctionCall) goja.Value {
		mod, err := v.require(dir, call.Argument(0).String())
		if err != nil {
			panic(v.rt.NewGoError(err))
		}
		return mod
	}
	if _, err := fn(goja.Undefined(), exports, v.rt.ToValue(req), module, v.rt.ToValue(path), v.rt.ToValue(dir)); err != nil {
		return nil, err
	}
	out := module.Get("exports").ToObject(v.rt)
	v.modules[path] = out
	return out, nil
}

// cacheModule marks a built-in as an ES module (esbuild's __toESM then keeps its default export) and
// keeps it for the VU's later imports.
func (v *vu) cacheModule(spec string, named map[string]any) (*goja.Object, error) {
	mod := v.rt.NewObject()
	def := v.rt.NewObject()
	for k, val := range named {
		if err := mod.Set(k, val); err != nil {
			return nil, err
		}
		if err := def.Set(k, val); err != nil {
			return nil, err
		}
	}
	if err := mod.Set("default", def); err != nil {
		return nil, err
	}
	if err := mod.Set("__esModule", true); err != nil {
		return nil, err
	}
	v.modules[spec] = mod
	return mod, nil
}
