package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"
)

// RefusesCommittedSecrets reports whether p refuses credentials committed in the repository (Load checks
// them with RefuseCommittedSecrets): prod and k8s, the profiles of real clusters. Dev, test and compose
// run the development values (make run, CI, a laptop's compose stack).
func (p Profile) RefusesCommittedSecrets() bool { return p == Prod || p == K8s }

// CommittedSecret reports whether v is a value committed anywhere in the shopmesh repository (the dev
// profile's built-in JWT secret, compose's and the k8s dev overlay's former credentials, examples in the
// docs and tests): anyone can read those, so they protect nothing. The list holds SHA-256 hashes
// (committed_secrets.go); TestCommittedSecretsAreRefused scans the repository and fails while a
// secret-looking value in it is not on the list.
func CommittedSecret(v string) bool {
	if v == "" {
		return false
	}
	sum := sha256.Sum256([]byte(v))
	_, found := slices.BinarySearch(committedSecretHashes(), hex.EncodeToString(sum[:]))
	return found
}

// RefuseCommittedSecrets reports every credential in cfg (a pointer to a config struct) that is a value
// committed in the repository, naming its field the way Validate does ("jwt_secret: …"; Load adds the
// variable). It looks at every Secret field (the whole value, a URL's password, a password=… parameter and
// the secrets of a kid:secret,kid:secret list) and at the password inside every string that is a URL or a
// key=value DSN (<P>_DSN).
func RefuseCommittedSecrets(cfg any) error {
	v := reflect.ValueOf(cfg)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	var errs []error
	committedIn(v, "", &errs)
	return errors.Join(errs...)
}

func committedIn(v reflect.Value, field string, errs *[]error) {
	switch {
	case v.Type() == reflect.TypeFor[time.Duration]():
		return
	case v.Type() == reflect.TypeFor[Secret]():
		if slices.ContainsFunc(SecretParts(v.String(), true), CommittedSecret) {
			*errs = append(*errs, committedError(field))
		}
		return
	}
	switch v.Kind() {
	case reflect.String:
		if slices.ContainsFunc(SecretParts(v.String(), false), CommittedSecret) {
			*errs = append(*errs, committedError(field))
		}
	case reflect.Slice:
		for i := range v.Len() {
			committedIn(v.Index(i), field, errs)
		}
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return
		}
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		for _, k := range keys {
			committedIn(v.MapIndex(k), fmt.Sprintf("%s[%q]", field, k.String()), errs)
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() || f.Tag.Get("env") == "-" {
				continue
			}
			name := field
			if !f.Anonymous || f.Type.Kind() != reflect.Struct {
				name = strings.ToLower(snake(f.Name))
				if field != "" {
					name = field + "." + name
				}
			}
			committedIn(v.Field(i), name, errs)
		}
	}
}

func committedError(field string) error {
	return fmt.Errorf("%s: a value committed in the shopmesh repository; generate one (make secrets)", field)
}

// dsnPassword is the password parameter of a key=value DSN ("host=db user=u password=p").
var dsnPassword = regexp.MustCompile(`(?i)(?:^|[\s&;?])password=('[^']*'|[^\s&;]+)`)

// kidList is a kid:secret,kid:secret key list (GATEWAY_JWT_KEYS).
var kidList = regexp.MustCompile(`^[A-Za-z0-9._-]+:[^,]+(,[A-Za-z0-9._-]+:[^,]+)*$`)

// SecretParts returns the credentials inside v: the password of a URL (scheme://user:pass@host) and of
// a password=… parameter; when whole is set (a Secret field) also v itself and, for a kid:secret list,
// each secret. The repository scan and RefuseCommittedSecrets both use it, so a value found in a
// committed DSN is refused inside any DSN.
func SecretParts(v string, whole bool) []string {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil
	}
	var parts []string
	if whole {
		parts = append(parts, v)
		if kidList.MatchString(v) && !strings.Contains(v, "://") {
			for item := range strings.SplitSeq(v, ",") {
				_, s, _ := strings.Cut(item, ":")
				parts = append(parts, s)
			}
		}
	}
	if u, err := url.Parse(v); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			parts = append(parts, p)
		}
	}
	for _, m := range dsnPassword.FindAllStringSubmatch(v, -1) {
		if p := strings.Trim(m[1], "'"); p != "" {
			parts = append(parts, p)
		}
	}
	return parts
}
