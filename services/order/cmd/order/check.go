package main

import (
	"context"
	"io"
	"slices"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/healthcheck"
	ordercfg "github.com/shopmesh/shopmesh/services/order/internal/config"
)

// configKeys lists every variable Load reads for the profile selected by lookup.
func configKeys(lookup config.Lookup) []string {
	profile := config.Dev
	if v, ok := lookup(ordercfg.Prefix + "_PROFILE"); ok && v != "" {
		profile = config.Profile(v)
	}
	c := ordercfg.Default(profile)
	shared := struct {
		KafkaBrokers []string
		NatsURL      string
	}{}
	keys := slices.Concat(config.Keys(&shared, ""), config.Keys(&c.Config, ordercfg.Prefix), config.Keys(&c, ordercfg.Prefix))
	slices.Sort(keys)
	return slices.Compact(keys)
}

// checkConfig is `order check-config [-keys]`, see config.CheckCommand.
func checkConfig(args []string, lookup config.Lookup, stdout io.Writer) error {
	return config.CheckCommand(args, ordercfg.Prefix, configKeys(lookup), func() error {
		_, err := ordercfg.Load(lookup)
		return err
	}, stdout)
}

// healthCheck is `order healthcheck`: exit 0 only when the running server reports SERVING.
func healthCheck(ctx context.Context, cfg ordercfg.Config) error {
	return healthcheck.Service(ctx, cfg.Config)
}
