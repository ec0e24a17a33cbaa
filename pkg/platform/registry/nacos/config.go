// Package nacos is the Nacos section of the registry configuration (registry.Config.Nacos): where the
// servers are, what an instance announces, and its validation. The backend that talks to Nacos (the
// registry, the resolver and the config-center source) lives in its own module,
// github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos, so that nacos-sdk-go and what it pulls are
// linked only into the binaries that opt in (service.Spec.Backends).
package nacos

import (
	"errors"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/config/secret"
)

// DefaultGroup is the group used when Config.Group is empty.
const DefaultGroup = "DEFAULT_GROUP"

// Config is how this process reaches Nacos and what it announces there.
type Config struct {
	// Addrs are the Nacos servers' HTTP "host:port" (the SDK's gRPC port is that port + 1000).
	Addrs []string `help:"Nacos servers' HTTP host:port, comma-separated (gRPC is that port + 1000)"`
	// Namespace is the namespace id ("" = public); Group defaults to DEFAULT_GROUP.
	Namespace string `help:"Nacos namespace id (empty: public)"`
	Group     string `help:"Nacos group"`
	// Cluster is the Nacos cluster instances register in and resolvers read ("" = DEFAULT).
	Cluster string `help:"Nacos cluster instances register in and resolvers read (empty: DEFAULT)"`
	// Username and Password log the SDK in (/nacos/v1/auth/login) when Nacos authenticates its clients
	// (rnacos RNACOS_ENABLE_OPEN_API_AUTH=true); every request then carries the access token. Empty
	// Username: no login.
	Username string       `help:"Nacos user the SDK logs in as; empty: no authentication"`
	Password secret.Value `help:"the Nacos user's password; set with username"`
	// CacheDir keeps the SDK's instance and config snapshots, so a process started while Nacos is down
	// still finds its dependencies; LogDir receives the SDK's own log. Both are required: the SDK's default
	// is the working directory, which would write into the repository.
	CacheDir string `help:"directory of the Nacos SDK's instance and config snapshots (lets a start without Nacos find dependencies)"`
	LogDir   string `help:"directory of the Nacos SDK's log"`
	// LogLevel of the SDK log: debug, info, warn or error.
	LogLevel string `help:"Nacos SDK log level: debug, info, warn or error"`
	// Timeout bounds every request to Nacos.
	Timeout time.Duration `help:"bound on every request to Nacos"`
	// EmptyGrace is how long an empty instance set is doubted before clients get it: a restarted Nacos
	// reports none until the instances re-register. Scaling to zero shows after this delay.
	EmptyGrace time.Duration `help:"how long an empty instance set is doubted before clients get it"`
	// HealthInterval is how often the connection state is sampled for the registry_up gauge.
	HealthInterval time.Duration `help:"how often the Nacos connection state is sampled for the registry_up gauge"`

	// AdvertiseHost replaces an unspecified listen host (":50051", "[::]:50051") in registered addresses.
	// Empty: the first IPv4 (else IPv6) global unicast address of the first up, non-loopback interface,
	// so that each container or pod registers its own address (replicas sharing one environment too).
	AdvertiseHost string `help:"host registered in place of an unspecified listen host (empty: first non-loopback interface address)"`
	// Weight (> 0) is announced with the instance and passed to clients as an address attribute.
	Weight float64 `help:"instance weight announced to clients (> 0)"`
	// Version, Zone and AdminPort are announced as instance metadata.
	Version   string `help:"version announced in the instance metadata"`
	Zone      string `help:"zone announced in the instance metadata"`
	AdminPort int    `help:"admin port announced in the instance metadata"`
	// Metadata is announced too; the keys above win over it.
	Metadata map[string]string `help:"more instance metadata"`
}

// Default returns a config for one local server with the caches under dir.
func Default(addr, dir string) Config {
	return Config{
		Addrs:          []string{addr},
		Group:          DefaultGroup,
		CacheDir:       filepath.Join(dir, "cache"),
		LogDir:         filepath.Join(dir, "log"),
		LogLevel:       "warn",
		Timeout:        3 * time.Second,
		HealthInterval: time.Second,
		EmptyGrace:     10 * time.Second,
		Weight:         1,
	}
}

// Validate names every field that is wrong.
func (c Config) Validate() error {
	var errs []error
	if len(c.Addrs) == 0 {
		errs = append(errs, errors.New("addrs: at least one Nacos host:port is needed"))
	}
	for _, a := range c.Addrs {
		if _, _, err := splitAddr(a); err != nil {
			errs = append(errs, fmt.Errorf("addrs: %w", err))
		}
	}
	if c.Username != "" && c.Password == "" {
		errs = append(errs, errors.New("password: must be set with username"))
	}
	if c.Username == "" && c.Password != "" {
		errs = append(errs, errors.New("username: must be set with password"))
	}
	if c.CacheDir == "" {
		errs = append(errs, errors.New("cache_dir: must be set (the SDK default is the working directory)"))
	}
	if c.LogDir == "" {
		errs = append(errs, errors.New("log_dir: must be set (the SDK default is the working directory)"))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level: must be debug, info, warn or error, got %q", c.LogLevel))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("timeout: must be > 0, got %v", c.Timeout))
	}
	if c.EmptyGrace < 0 {
		errs = append(errs, fmt.Errorf("empty_grace: must be >= 0, got %v", c.EmptyGrace))
	}
	if c.HealthInterval <= 0 {
		errs = append(errs, fmt.Errorf("health_interval: must be > 0, got %v", c.HealthInterval))
	}
	if c.Weight <= 0 || math.IsNaN(c.Weight) || math.IsInf(c.Weight, 0) {
		errs = append(errs, fmt.Errorf("weight: must be a finite number > 0, got %v", c.Weight))
	}
	if c.AdminPort < 0 || c.AdminPort > 65535 {
		errs = append(errs, fmt.Errorf("admin_port: must be within 0-65535, got %d", c.AdminPort))
	}
	return errors.Join(errs...)
}

// GroupOrDefault is Group, or DefaultGroup when it is empty.
func (c Config) GroupOrDefault() string {
	if c.Group == "" {
		return DefaultGroup
	}
	return c.Group
}

// Clusters is Cluster as the list the SDK takes (nil for the default cluster).
func (c Config) Clusters() []string {
	if c.Cluster == "" {
		return nil
	}
	return []string{c.Cluster}
}

// Servers returns the servers' hosts and ports; call it on a validated Config.
func (c Config) Servers() ([]Server, error) {
	servers := make([]Server, 0, len(c.Addrs))
	for _, a := range c.Addrs {
		host, port, err := splitAddr(a)
		if err != nil {
			return nil, err
		}
		servers = append(servers, Server{Host: host, Port: port})
	}
	return servers, nil
}

// Server is one Nacos server's HTTP host and port.
type Server struct {
	Host string
	Port uint64
}

func splitAddr(a string) (string, uint64, error) {
	host, p, err := net.SplitHostPort(a)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port", a)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("%q: port must be within 1-65535", a)
	}
	return host, port, nil
}
