package k6check

import (
	"errors"
	"time"

	"github.com/dop251/goja"
)

// k6Module is `k6`: check, fail, group, sleep.
func (v *vu) k6Module() map[string]any {
	return map[string]any{
		"check": func(call goja.FunctionCall) goja.Value {
			val := call.Argument(0)
			sets := call.Argument(1)
			if goja.IsUndefined(sets) || goja.IsNull(sets) {
				v.throw("check: no checks given")
			}
			obj := sets.ToObject(v.rt)
			extra := v.stringMap(call.Argument(2), "check tags")
			all := true
			for _, name := range obj.Keys() {
				c := obj.Get(name)
				ok := false
				if fn, isFn := goja.AssertFunction(c); isFn {
					res, err := fn(goja.Undefined(), val)
					if err != nil {
						panic(err)
					}
					ok = res.ToBoolean()
				} else {
					ok = c.ToBoolean()
				}
				v.run.recordCheck(name, ok)
				pass := 0.0
				if ok {
					pass = 1
				}
				v.run.reg.add("checks", pass, tagsWith(v.sampleTags(extra), map[string]string{"check": name}))
				all = all && ok
			}
			return v.rt.ToValue(all)
		},
		"fail": func(call goja.FunctionCall) goja.Value {
			msg := ""
			if len(call.Arguments) > 0 {
				msg = call.Argument(0).String()
			}
			panic(v.rt.NewGoError(errors.New(msg)))
		},
		"group": func(call goja.FunctionCall) goja.Value {
			name := call.Argument(0).String()
			fn, ok := goja.AssertFunction(call.Argument(1))
			if !ok {
				v.throw("group %q: the second argument must be a function", name)
			}
			prev := v.group
			v.group = prev + "::" + name
			defer func() { v.group = prev }()
			start := time.Now()
			res, err := fn(goja.Undefined())
			v.run.reg.add("group_duration", ms(time.Since(start)), v.sampleTags(nil))
			if err != nil {
				panic(err)
			}
			return res
		},
		"sleep": func(call goja.FunctionCall) goja.Value {
			// Think time in iterations is scaled down; setup() and teardown() sleep for real, since
			// there a sleep paces requests against a limit (lib.js tokens()).
			scale := 1.0
			if v.iterating {
				scale = v.run.opts.SleepScale
			}
			d := time.Duration(call.Argument(0).ToFloat() * scale * float64(time.Second))
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-v.ctx.Done():
			case <-t.C:
			}
			return goja.Undefined()
		},
	}
}

// sampleTags are the tags of a sample taken now: the VU's scenario tags, its group, and extra.
func (v *vu) sampleTags(extra map[string]string) map[string]string {
	t := tagsWith(v.tags, extra)
	t["group"] = v.group
	return t
}

// stringMap reads an optional object of strings (tags, headers).
func (v *vu) stringMap(val goja.Value, what string) map[string]string {
	if val == nil || goja.IsUndefined(val) || goja.IsNull(val) {
		return nil
	}
	obj, ok := val.(*goja.Object)
	if !ok {
		v.throw("%s: want an object", what)
	}
	out := map[string]string{}
	for _, k := range obj.Keys() {
		out[k] = obj.Get(k).String()
	}
	return out
}

// metricsModule is `k6/metrics`: Counter, Gauge, Rate and Trend, declared in the init context.
func (v *vu) metricsModule() map[string]any {
	ctor := func(kind Kind) func(goja.ConstructorCall) *goja.Object {
		return func(call goja.ConstructorCall) *goja.Object {
			name := call.Argument(0).String()
			if !v.init {
				v.throw("new %s(%q): metrics can only be declared in the init context", kind, name)
			}
			isTime := kind == Trend && call.Argument(1).ToBoolean()
			if err := v.run.reg.define(name, kind, isTime); err != nil {
				v.throw("%v", err)
			}
			obj := call.This
			_ = obj.Set("name", name)
			_ = obj.Set("add", func(c goja.FunctionCall) goja.Value {
				val := c.Argument(0)
				var f float64
				if kind == Rate {
					if val.ToBoolean() {
						f = 1
					}
				} else {
					f = val.ToFloat()
				}
				v.run.reg.add(name, f, v.sampleTags(v.stringMap(c.Argument(1), name+".add tags")))
				return goja.Undefined()
			})
			return nil
		}
	}
	return map[string]any{
		"Counter": ctor(Counter), "Gauge": ctor(Gauge), "Rate": ctor(Rate), "Trend": ctor(Trend),
	}
}

// dataModule is `k6/data`: SharedArray, filled once per run and handed to each VU as a copy.
func (v *vu) dataModule() map[string]any {
	return map[string]any{
		"SharedArray": func(call goja.ConstructorCall) *goja.Object {
			name := call.Argument(0).String()
			if !v.init {
				v.throw("new SharedArray(%q): only in the init context", name)
			}
			v.run.mu.Lock()
			js, ok := v.run.shared[name]
			v.run.mu.Unlock()
			if !ok {
				fn, isFn := goja.AssertFunction(call.Argument(1))
				if !isFn {
					v.throw("new SharedArray(%q): the second argument must be a function", name)
				}
				arr, err := fn(goja.Undefined())
				if err != nil {
					panic(err)
				}
				if obj, isObj := arr.(*goja.Object); !isObj || obj.ClassName() != "Array" {
					v.throw("new SharedArray(%q): the function must return an array", name)
				}
				if js, err = v.stringify(arr); err != nil {
					panic(err)
				}
				v.run.mu.Lock()
				v.run.shared[name] = js
				v.run.mu.Unlock()
			}
			val, err := v.parseData(js)
			if err != nil {
				panic(err)
			}
			return val.ToObject(v.rt)
		},
	}
}
