package config

import (
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Var is one environment variable a config reads.
type Var struct{ Name, Alias, Default, Help string }

// Vars lists every variable FromEnv(dst, prefix) reads (dst holds the defaults), sorted by name, with the
// default rendered as it would be written in the environment ("" when empty; durations as 250ms; lists comma-joined).
// Alias and Help come from the field's `alias` and `help` tags (a map entry's leaf value takes the map
// field's); a Secret with a value shows as [redacted].
func Vars(dst any, prefix string) []Var {
	v := reflect.ValueOf(dst)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return nil
	}
	var vars []Var
	varsOf(v, strings.TrimSuffix(prefix, "_"), "", &vars)
	slices.SortStableFunc(vars, func(a, b Var) int { return strings.Compare(a.Name, b.Name) })
	return slices.CompactFunc(vars, func(a, b Var) bool { return a.Name == b.Name })
}

// varsOf walks v the way FromEnv's walk does: same names, same fields skipped.
func varsOf(v reflect.Value, name string, tag reflect.StructTag, vars *[]Var) {
	switch {
	case v.Type() == reflect.TypeFor[time.Duration]():
	case v.Kind() == reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() || f.Tag.Get("env") == "-" {
				continue
			}
			field := join(name, snake(f.Name))
			if f.Anonymous && f.Type.Kind() == reflect.Struct {
				field = name
			}
			varsOf(v.Field(i), field, f.Tag, vars)
		}
		return
	case v.Kind() == reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return
		}
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		// An entry's own leaf (a map of strings) takes the map field's help; FromEnv gives entries no alias.
		entry := reflect.StructTag(fmt.Sprintf("help:%q", tag.Get("help")))
		for _, k := range keys {
			varsOf(v.MapIndex(k), join(name, keyName(k.String())), entry, vars)
		}
		return
	}
	*vars = append(*vars, Var{Name: name, Alias: tag.Get("alias"), Default: render(v), Help: tag.Get("help")})
}

// render writes a value the way FromEnv parses it.
func render(v reflect.Value) string {
	if v.Type() == reflect.TypeFor[Secret]() {
		if v.String() != "" {
			return redacted
		}
		return ""
	}
	if v.Type() == reflect.TypeFor[time.Duration]() {
		return formatDuration(time.Duration(v.Int()))
	}
	switch v.Kind() {
	case reflect.String:
		return v.String()
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10)
	case reflect.Float32, reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, v.Type().Bits())
	case reflect.Slice:
		items := make([]string, v.Len())
		for i := range items {
			items[i] = render(v.Index(i))
		}
		return strings.Join(items, ",")
	}
	if !v.CanInterface() {
		return ""
	}
	return fmt.Sprint(v.Interface())
}

// formatDuration is time.Duration.String without the trailing zero units: 5m, 1h, 1m30s, 250ms.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// WriteVars prints vars as an aligned table: NAME (alias) default — help.
// An empty default shows as "".
func WriteVars(w io.Writer, vars []Var) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, v := range vars {
		name := v.Name
		if v.Alias != "" {
			name += " (" + v.Alias + ")"
		}
		def := v.Default
		if def == "" {
			def = `""`
		}
		if _, err := fmt.Fprintf(tw, "%s\t%s\t— %s\n", name, def, v.Help); err != nil {
			return err
		}
	}
	return tw.Flush()
}
