package nacos

import (
	"context"
	"fmt"
	"strings"

	"github.com/nacos-group/nacos-sdk-go/v2/clients"
	"github.com/nacos-group/nacos-sdk-go/v2/clients/config_client"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/shopmesh/shopmesh/pkg/platform/configcenter"
)

// ConfigSource is a configcenter.Source reading Nacos configs of one group. While Nacos is down the SDK
// answers from its snapshot in Config.CacheDir.
type ConfigSource struct {
	client config_client.IConfigClient
	group  string
}

var _ configcenter.Source = (*ConfigSource)(nil)

// NewConfigSource connects a config client; the group is cfg.Group.
func NewConfigSource(cfg Config) (*ConfigSource, error) {
	cc, servers, err := SDKConfig(cfg)
	if err != nil {
		return nil, err
	}
	client, err := clients.NewConfigClient(vo.NacosClientParam{ClientConfig: &cc, ServerConfigs: servers})
	if err != nil {
		return nil, fmt.Errorf("nacos config client: %w", err)
	}
	return &ConfigSource{client: client, group: cfg.GroupOrDefault()}, nil
}

// Close ends the connection.
func (n *ConfigSource) Close() error {
	n.client.CloseClient()
	return nil
}

// Get returns the config's content; a config that does not exist reads as "".
func (n *ConfigSource) Get(ctx context.Context, dataID string) (string, error) {
	type result struct {
		content string
		err     error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := n.client.GetConfig(vo.ConfigParam{DataId: dataID, Group: n.group})
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			if notFound(r.err) {
				return "", nil
			}
			return "", fmt.Errorf("nacos get config %s/%s: %s", n.group, dataID, r.err.Error())
		}
		return r.content, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func notFound(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "not exist") || strings.Contains(msg, "not found")
}

// Watch listens to dataID until ctx ends.
func (n *ConfigSource) Watch(ctx context.Context, dataID string, fn func(string)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates := make(chan string, 1)
	param := vo.ConfigParam{DataId: dataID, Group: n.group, OnChange: func(_, _, _, data string) {
		// Keep only the newest content; fn runs on this goroutine, never after Watch returned.
		for {
			select {
			case updates <- data:
				return
			case <-updates:
			case <-ctx.Done():
				return
			}
		}
	}}
	if err := n.client.ListenConfig(param); err != nil {
		return fmt.Errorf("nacos listen config %s/%s: %s", n.group, dataID, err.Error())
	}
	// On the way out a failed cancel only leaves a listener whose OnChange sees ctx done.
	defer func() { _ = n.client.CancelListenConfig(vo.ConfigParam{DataId: dataID, Group: n.group}) }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case data := <-updates:
			fn(data)
		}
	}
}
