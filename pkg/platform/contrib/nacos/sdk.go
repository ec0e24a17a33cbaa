package nacos

import (
	"fmt"

	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"

	regnacos "github.com/shopmesh/shopmesh/pkg/platform/registry/nacos"
)

// Config is the Nacos section of the platform configuration (registry.Config.Nacos); it is defined in
// pkg/platform so that every binary validates and documents it, linked or not.
type Config = regnacos.Config

// Default returns a config for one local server with the caches under dir (registry/nacos.Default).
func Default(addr, dir string) Config { return regnacos.Default(addr, dir) }

// SDKConfig returns the SDK client and server configuration (shared by the registry, the config-center
// source and nacostest's publisher). Empty instance lists replace the cached ones (issues #420, #781:
// otherwise clients keep routing to instances that are gone), and the disk cache is loaded at start for
// starts during an outage. With a Username the SDK logs in and sends its access token with every request.
func SDKConfig(c Config) (constant.ClientConfig, []constant.ServerConfig, error) {
	if err := c.Validate(); err != nil {
		return constant.ClientConfig{}, nil, fmt.Errorf("nacos config: %w", err)
	}
	hosts, err := c.Servers()
	if err != nil {
		return constant.ClientConfig{}, nil, fmt.Errorf("nacos config: %w", err)
	}
	servers := make([]constant.ServerConfig, 0, len(hosts))
	for _, h := range hosts {
		servers = append(servers, *constant.NewServerConfig(h.Host, h.Port))
	}
	cc := *constant.NewClientConfig(
		constant.WithNamespaceId(c.Namespace),
		constant.WithTimeoutMs(uint64(c.Timeout.Milliseconds())),
		constant.WithCacheDir(c.CacheDir),
		constant.WithLogDir(c.LogDir),
		constant.WithLogLevel(c.LogLevel),
		constant.WithNotLoadCacheAtStart(false),
		constant.WithUpdateCacheWhenEmpty(true),
		constant.WithUsername(c.Username),
		constant.WithPassword(c.Password.Reveal()),
	)
	return cc, servers, nil
}
