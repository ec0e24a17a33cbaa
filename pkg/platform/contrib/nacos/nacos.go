// Package nacos announces instances in Nacos 2.x and resolves "nacos:///<service>" gRPC targets from it,
// through nacos-sdk-go/v2. Instances are ephemeral and bound to the SDK's gRPC connection: when a process
// dies its instances disappear with the connection; a clean shutdown deregisters first. Resolvers follow
// the healthy instance set, including its shrinking to zero, and start from the SDK's disk cache when
// Nacos is unreachable.
//
// It is a module of its own (as Kratos keeps its registries in contrib modules): nacos-sdk-go brings
// ~21 Alibaba Cloud modules and more into the build, so only binaries that opt in link it. A service
// opts in with `Backends: []platform.Backend{nacos.Backend()}` in its service.Spec; then
// <P>_REGISTRY_BACKEND=nacos and <P>_CONFIG_CENTER_BACKEND=nacos work. The configuration section
// (Config) stays in pkg/platform/registry/nacos, so every binary validates and documents it.
package nacos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/clients"
	"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shopmesh/shopmesh/pkg/platform/discovery"
)

// Metadata keys announced with every instance.
const (
	MetaVersion   = "version"
	MetaZone      = "zone"
	MetaWeight    = "weight"
	MetaGRPCPort  = "grpc_port"
	MetaAdminPort = "admin_port"
)

// Client is one connection to Nacos, serving as both the Registry and the Resolver of a process.
// Register keeps one instance per service: the SDK re-registers only the last one after a reconnect.
type Client struct {
	cfg    Config
	logger *slog.Logger
	naming naming_client.INamingClient
	up     prometheus.Gauge
	// afterFunc schedules the application of an empty instance set (time.AfterFunc; tests replace it).
	afterFunc func(d time.Duration, f func()) timer
	// interfaces lists the host's network interfaces for the advertised address (systemInterfaces;
	// tests replace it).
	interfaces func() ([]iface, error)

	hostMu sync.Mutex
	host   string // the interface address chosen for unspecified listen hosts, once

	mu      sync.Mutex
	watches map[string]*watch
	closed  bool

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// timer is the part of *time.Timer the grace period needs.
type timer interface{ Stop() bool }

func afterFunc(d time.Duration, f func()) timer { return time.AfterFunc(d, f) }

var (
	_ discovery.Registry = (*Client)(nil)
	_ discovery.Resolver = (*Client)(nil)
)

// New connects to Nacos. It does not fail when Nacos is down: the SDK keeps reconnecting, registrations
// and subscriptions are redone on reconnect, and resolvers start from the disk cache meanwhile. reg
// receives shopmesh_registry_up{backend="nacos"}; it may be nil.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Client, error) {
	if logger == nil {
		return nil, errors.New("nacos: logger is nil")
	}
	cc, servers, err := SDKConfig(cfg)
	if err != nil {
		return nil, err
	}
	up := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "shopmesh_registry_up",
		Help:        "1 while the service registry backend is reachable, 0 otherwise.",
		ConstLabels: prometheus.Labels{"backend": "nacos"},
	})
	if reg != nil {
		if err := reg.Register(up); err != nil {
			return nil, fmt.Errorf("nacos: register metric: %w", err)
		}
	}
	naming, err := clients.NewNamingClient(vo.NacosClientParam{ClientConfig: &cc, ServerConfigs: servers})
	if err != nil {
		if reg != nil {
			reg.Unregister(up)
		}
		return nil, fmt.Errorf("nacos: naming client: %w", err)
	}
	c := &Client{
		cfg:        cfg,
		logger:     logger.With("registry", "nacos"),
		naming:     naming,
		up:         up,
		afterFunc:  afterFunc,
		interfaces: systemInterfaces,
		watches:    map[string]*watch{},
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	go c.watchHealth()
	return c, nil
}

// Close ends the connection to Nacos without deregistering: instances registered through it vanish with
// the connection, as if the process died. Call Deregister first for a clean shutdown.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		ws := make([]*watch, 0, len(c.watches))
		for _, w := range c.watches {
			ws = append(ws, w)
		}
		c.mu.Unlock()
		for _, w := range ws {
			w.close()
		}
		close(c.stop)
		<-c.done
		c.naming.CloseClient()
	})
	return nil
}

// Healthy reports whether the SDK currently has a working connection to Nacos.
func (c *Client) Healthy() bool { return c.naming.ServerHealthy() }

func (c *Client) watchHealth() {
	defer close(c.done)
	t := time.NewTicker(c.cfg.HealthInterval)
	defer t.Stop()
	state := -1
	for {
		up := 0
		if c.naming.ServerHealthy() {
			up = 1
		}
		c.up.Set(float64(up))
		if up != state {
			switch {
			case up == 1:
				c.logger.Info("registry reachable")
			case state == 1:
				c.logger.Warn("registry unreachable; keeping the last known instances")
			default:
				c.logger.Warn("registry unreachable at start; resolvers use the disk cache")
			}
			state = up
		}
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
	}
}

// Register announces in as an ephemeral, healthy instance with the configured metadata.
func (c *Client) Register(ctx context.Context, in discovery.Instance) error {
	host, port, err := c.advertised(in.Addr)
	if err != nil {
		return err
	}
	md := maps.Clone(c.cfg.Metadata)
	if md == nil {
		md = map[string]string{}
	}
	maps.Copy(md, in.Metadata)
	md[MetaWeight] = strconv.FormatFloat(c.cfg.Weight, 'f', -1, 64)
	md[MetaGRPCPort] = strconv.FormatUint(port, 10)
	if c.cfg.Version != "" {
		md[MetaVersion] = c.cfg.Version
	}
	if c.cfg.Zone != "" {
		md[MetaZone] = c.cfg.Zone
	}
	if c.cfg.AdminPort > 0 {
		md[MetaAdminPort] = strconv.Itoa(c.cfg.AdminPort)
	}
	p := vo.RegisterInstanceParam{
		Ip: host, Port: port, Weight: c.cfg.Weight, Enable: true, Healthy: true, Ephemeral: true,
		Metadata: md, ClusterName: c.cfg.Cluster, ServiceName: in.Service, GroupName: c.cfg.GroupOrDefault(),
	}
	err = c.call(ctx, func() (bool, error) { return c.naming.RegisterInstance(p) })
	if err != nil {
		return fmt.Errorf("nacos register %s %s:%d: %w", in.Service, host, port, err)
	}
	c.logger.Info("registered", "nacos_service", in.Service, "addr", net.JoinHostPort(host, strconv.FormatUint(port, 10)),
		"group", c.cfg.GroupOrDefault(), "namespace", c.cfg.Namespace)
	return nil
}

// Deregister withdraws in; clients subscribed to its service get the smaller set pushed.
func (c *Client) Deregister(ctx context.Context, in discovery.Instance) error {
	host, port, err := c.advertised(in.Addr)
	if err != nil {
		return err
	}
	p := vo.DeregisterInstanceParam{
		Ip: host, Port: port, Cluster: c.cfg.Cluster, ServiceName: in.Service, GroupName: c.cfg.GroupOrDefault(), Ephemeral: true,
	}
	if err := c.call(ctx, func() (bool, error) { return c.naming.DeregisterInstance(p) }); err != nil {
		return fmt.Errorf("nacos deregister %s %s:%d: %w", in.Service, host, port, err)
	}
	c.logger.Info("deregistered", "nacos_service", in.Service, "addr", net.JoinHostPort(host, strconv.FormatUint(port, 10)))
	return nil
}

// call runs an SDK request, which takes no context (its own bound is Config.Timeout), within ctx.
func (c *Client) call(ctx context.Context, f func() (bool, error)) error {
	type result struct {
		ok  bool
		err error
	}
	ch := make(chan result, 1)
	go func() {
		ok, err := f()
		ch <- result{ok, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return r.err
		}
		if !r.ok {
			return errors.New("refused by the server")
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
