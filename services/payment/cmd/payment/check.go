package main

import (
	"context"
	"io"
	"slices"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/healthcheck"
	paycfg "github.com/shopmesh/shopmesh/services/payment/internal/config"
)

// configKeys lists every variable Load reads for the profile selected by lookup.
func configKeys(lookup config.Lookup) []string {
	profile := config.Dev
	if v, ok := lookup(paycfg.Prefix + "_PROFILE"); ok && v != "" {
		profile = config.Profile(v)
	}
	c := paycfg.Default(profile)
	keys := slices.Concat([]string{"KAFKA_BROKERS"}, config.Keys(&c.Platform, paycfg.Prefix), config.Keys(&c, paycfg.Prefix))
	slices.Sort(keys)
	return slices.Compact(keys)
}

// checkConfig is `payment check-config [-keys]`, see config.CheckCommand.
func checkConfig(args []string, lookup config.Lookup, stdout io.Writer) error {
	return config.CheckCommand(args, paycfg.Prefix, configKeys(lookup), func() error {
		_, err := paycfg.Load(lookup)
		return err
	}, stdout)
}

// healthCheck is `payment healthcheck`: exit 0 only when the running server reports SERVING.
func healthCheck(ctx context.Context, cfg paycfg.Config) error {
	return healthcheck.Service(ctx, cfg.Platform)
}
