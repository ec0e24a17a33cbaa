package main

import (
	"context"
	"io"
	"slices"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/healthcheck"
	gatewaycfg "github.com/shopmesh/shopmesh/services/gateway/internal/config"
)

// configKeys lists every variable Load reads for the profile selected by lookup.
func configKeys(lookup config.Lookup) []string {
	profile := config.Dev
	if v, ok := lookup(gatewaycfg.Prefix + "_PROFILE"); ok && v != "" {
		profile = config.Profile(v)
	}
	c := gatewaycfg.Default(profile)
	keys := slices.Concat(config.Keys(&c.Config, gatewaycfg.Prefix), config.Keys(&c, gatewaycfg.Prefix))
	slices.Sort(keys)
	return slices.Compact(keys)
}

// checkConfig is `gateway check-config [-keys]`, see config.CheckCommand.
func checkConfig(args []string, lookup config.Lookup, stdout io.Writer) error {
	return config.CheckCommand(args, gatewaycfg.Prefix, configKeys(lookup), func() error {
		_, err := gatewaycfg.Load(lookup)
		return err
	}, stdout)
}

// healthCheck is `gateway healthcheck`: GET /healthz on the HTTP port (the gateway runs no gRPC server).
func healthCheck(ctx context.Context, cfg gatewaycfg.Config) error {
	return healthcheck.Gateway(ctx, cfg.HTTPAddr)
}
