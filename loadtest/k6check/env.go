package k6check

import (
	"slices"

	"github.com/dop251/goja"
)

// envObject is a VU's __ENV: the run's variables, noting which ones the script reads, so that a header
// passing -e NAME=... to a script that never reads NAME is caught. Scripts may change their copy, as
// in k6.
type envObject struct {
	rt   *goja.Runtime
	run  *run
	vals map[string]string
}

var _ goja.DynamicObject = (*envObject)(nil)

func (e *envObject) Get(key string) goja.Value {
	e.run.noteEnvRead(key)
	v, ok := e.vals[key]
	if !ok {
		return nil
	}
	return e.rt.ToValue(v)
}

func (e *envObject) Set(key string, val goja.Value) bool {
	e.vals[key] = val.String()
	return true
}

func (e *envObject) Has(key string) bool {
	e.run.noteEnvRead(key)
	_, ok := e.vals[key]
	return ok
}

func (e *envObject) Delete(key string) bool {
	delete(e.vals, key)
	return true
}

// Keys lists the variables; a script that enumerates them reads them all.
func (e *envObject) Keys() []string {
	keys := make([]string, 0, len(e.vals))
	for k := range e.vals {
		e.run.noteEnvRead(k)
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (r *run) noteEnvRead(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.envRead[key] = true
}
