package nacos_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/registry/nacos"
)

// A user without a password (or the reverse) is refused naming the field; the password never prints.
func TestCredentials(t *testing.T) {
	base := nacos.Default("127.0.0.1:8848", t.TempDir())
	for _, c := range []struct {
		user, password, want string
	}{
		{"", "", ""},
		{"admin", "s3cret-value", ""},
		{"admin", "", "password: must be set with username"},
		{"", "s3cret-value", "username: must be set with password"},
	} {
		cfg := base
		cfg.Username, cfg.Password = c.user, config.Secret(c.password)
		err := cfg.Validate()
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("user %q password %q: Validate = %v, want %q", c.user, c.password, err, c.want)
		}
		for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg)} {
			if c.password != "" && strings.Contains(s, c.password) {
				t.Errorf("the password prints: %s", s)
			}
		}
	}
	var cfg struct{ Registry struct{ Nacos nacos.Config } }
	cfg.Registry.Nacos = base
	cfg.Registry.Nacos.Username, cfg.Registry.Nacos.Password = "admin", "s3cret-value"
	seen := 0
	for _, v := range config.Vars(&cfg, "ORDER") {
		if v.Name == "ORDER_REGISTRY_NACOS_PASSWORD" || v.Name == "ORDER_REGISTRY_NACOS_USERNAME" {
			seen++
		}
		if strings.Contains(v.Default, "s3cret-value") {
			t.Errorf("%s shows the password", v.Name)
		}
	}
	if seen != 2 {
		t.Errorf("ORDER_REGISTRY_NACOS_USERNAME/_PASSWORD listed %d times, want 2", seen)
	}
}
