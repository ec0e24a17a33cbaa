// Command coredns is CoreDNS built from its Go module with only the plugins the test cluster's Corefile
// (deploy/k8s/cluster/addons/coredns.yaml) uses: the cluster DNS of the single-node cluster built on this
// machine, where no upstream resolver is reachable. A Corefile naming any other plugin is refused at start
// ("unknown directive"), so the image cannot drift into forwarding or plugins nobody reviewed.
package main

import (
	"fmt"
	"os"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// The plugins of directives(), and nothing else (coredns's core/plugin imports every plugin).
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"
)

// directives are the plugins compiled in, in the execution order of coredns's plugin.cfg (a plugin sees
// only the ones after it). No forward and no loop: nothing to forward to here, so no loop to detect; the
// Corefile answers every name outside the cluster's zones NXDOMAIN at once with template.
func directives() []string {
	return []string{"reload", "bind", "ready", "health", "prometheus", "errors", "cache", "template", "kubernetes"}
}

func main() {
	if err := dnsserver.SetDirectives(directives()); err != nil {
		fmt.Fprintln(os.Stderr, "coredns:", err)
		os.Exit(1)
	}
	coremain.Run()
}
