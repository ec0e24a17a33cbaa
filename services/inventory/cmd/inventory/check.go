package main

import (
	"context"
	"io"
	"slices"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/healthcheck"
	invcfg "github.com/shopmesh/shopmesh/services/inventory/internal/config"
)

// configKeys lists every variable Load reads for the profile selected by lookup.
func configKeys(lookup config.Lookup) []string {
	profile := config.Dev
	if v, ok := lookup(invcfg.Prefix + "_PROFILE"); ok && v != "" {
		profile = config.Profile(v)
	}
	c := invcfg.Default(profile)
	keys := slices.Concat([]string{"KAFKA_BROKERS", "NATS_URL"}, config.Keys(&c, invcfg.Prefix))
	slices.Sort(keys)
	return slices.Compact(keys)
}

// checkConfig is `inventory check-config [-keys]`, see config.CheckCommand.
func checkConfig(args []string, lookup config.Lookup, stdout io.Writer) error {
	return config.CheckCommand(args, invcfg.Prefix, configKeys(lookup), func() error {
		_, err := invcfg.Load(lookup)
		return err
	}, stdout)
}

// healthCheck is `inventory healthcheck`: exit 0 only when the running server reports SERVING.
func healthCheck(ctx context.Context, cfg invcfg.Config) error {
	return healthcheck.Service(ctx, cfg.Config)
}
