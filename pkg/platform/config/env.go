package config

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/shopmesh/shopmesh/pkg/platform/config/secret"
)

// Lookup reads one variable; main passes os.LookupEnv.
type Lookup func(key string) (string, bool)

// FromEnv overrides fields of the struct pointed to by dst with variables named PREFIX_PATH, where PATH is
// the field path in upper snake case: SHOP_LISTEN_ADDR, SHOP_SERVER_DRAIN_DELAY,
// SHOP_CLIENT_RETRY_MAX_ATTEMPTS, SHOP_TARGETS_INVENTORY_ADDRESSES (map entries that already exist, keyed by
// their upper-snake key). Strings, bools, integers, floats, durations ("250ms") and comma-separated string
// lists are supported; a field tagged `env:"-"` is skipped. A field tagged `alias:"NAME"` also reads the
// unprefixed variable NAME when its own is unset (ORDER_KAFKA_BROKERS, else KAFKA_BROKERS; see Brokers).
// Works on any struct, so services run it over their own config that embeds Config.
func FromEnv(dst any, prefix string, lookup Lookup) error {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config from env: want a pointer to a struct, got %T", dst)
	}
	return errors.Join(walk(v.Elem(), strings.TrimSuffix(prefix, "_"), "", lookup)...)
}

func walk(v reflect.Value, name, alias string, lookup Lookup) []error {
	switch v.Kind() {
	case reflect.Struct:
		var errs []error
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() || f.Tag.Get("env") == "-" {
				continue
			}
			field := join(name, snake(f.Name))
			if f.Anonymous && f.Type.Kind() == reflect.Struct {
				// An embedded struct (a service config embedding the platform's) adds no name
				// segment: ORDER_LISTEN_ADDR, not ORDER_CONFIG_LISTEN_ADDR.
				field = name
			}
			errs = append(errs, walk(v.Field(i), field, f.Tag.Get("alias"), lookup)...)
		}
		return errs
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return nil
		}
		var errs []error
		for _, k := range v.MapKeys() {
			elem := reflect.New(v.Type().Elem()).Elem()
			elem.Set(v.MapIndex(k))
			errs = append(errs, walk(elem, join(name, keyName(k.String())), "", lookup)...)
			v.SetMapIndex(k, elem)
		}
		return errs
	}
	raw, ok := lookup(name)
	if !ok && alias != "" {
		name = alias
		raw, ok = lookup(alias)
	}
	if !ok {
		return nil
	}
	if err := set(v, raw); err != nil {
		return []error{fmt.Errorf("%s: %w", name, err)}
	}
	return nil
}

func set(v reflect.Value, raw string) error {
	raw = strings.TrimSpace(raw)
	if v.Type() == reflect.TypeFor[time.Duration]() {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("%q is not a duration like 250ms or 5s", raw)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("%q is not a boolean", raw)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("%q is not an integer", raw)
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(raw, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("%q is not a non-negative integer", raw)
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(raw, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("%q is not a number", raw)
		}
		v.SetFloat(f)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return errors.New("only lists of strings can be set from the environment")
		}
		var items []string
		for _, s := range strings.Split(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		list := reflect.MakeSlice(v.Type(), len(items), len(items))
		for i, s := range items {
			list.Index(i).SetString(s)
		}
		v.Set(list)
	default:
		return fmt.Errorf("fields of kind %s cannot be set from the environment", v.Kind())
	}
	return nil
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "_" + name
}

// snake turns a Go field name into upper snake case: MaxRecvMsgSize → MAX_RECV_MSG_SIZE, RPS → RPS,
// LB → LB, ListenAddr → LISTEN_ADDR.
func snake(s string) string {
	var b strings.Builder
	r := []rune(s)
	for i, c := range r {
		if i > 0 && unicode.IsUpper(c) &&
			(unicode.IsLower(r[i-1]) || unicode.IsDigit(r[i-1]) || (i+1 < len(r) && unicode.IsLower(r[i+1]))) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(c))
	}
	return b.String()
}

// keyName turns a map key into a variable name part: "inventory" → INVENTORY, "/a.B/C" → A_B_C.
func keyName(k string) string {
	var b strings.Builder
	for _, c := range strings.Trim(k, "/") {
		if unicode.IsLetter(c) || unicode.IsDigit(c) {
			b.WriteRune(unicode.ToUpper(c))
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// Secret holds a credential. It prints, logs and marshals as "[redacted]"; only Reveal gives the value.
// It is secret.Value, so that sections config imports (registry/nacos) can hold one too.
type Secret = secret.Value

const redacted = secret.Redacted
