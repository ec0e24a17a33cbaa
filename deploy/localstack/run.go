package localstack

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Run starts the stack, prints where everything is and how to try it, serves until ctx ends, then
// stops everything in order.
func Run(ctx context.Context, cfg Config, stdout io.Writer) error {
	s, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Stop()
	PrintSummary(stdout, s.Info(), s.StackFile())
	<-ctx.Done()
	return nil
}

// PrintSummary writes the instances, the brokers and copy-paste commands to try the stack.
func PrintSummary(w io.Writer, info Info, stackFile string) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nshopmesh is up (%s)\n", stackFile)
	for _, i := range info.Instances {
		addr := i.GRPCAddr
		if i.HTTPAddr != "" {
			addr = "http://" + i.HTTPAddr
		}
		fmt.Fprintf(&b, "  %-12s pid %-7d %-24s metrics http://%s/metrics  log %s\n", i.Name(), i.PID, addr, i.AdminAddr, i.Log)
	}
	if inf := info.Infra; inf != nil {
		nacos := "not running: static discovery, no config center"
		if inf.NacosAddr != "" {
			nacos = fmt.Sprintf("%s (namespace %q: registration, discovery, config center)", inf.NacosAddr, inf.NacosNamespace)
		}
		fmt.Fprintf(&b, "  real servers (infra.sh): nats %s, kafka %s, nacos %s\n", info.NATSURL, strings.Join(info.KafkaBrokers, ","), nacos)
		for _, svc := range slices.Sorted(maps.Keys(inf.Databases)) {
			fmt.Fprintf(&b, "  %-9s database %s\n", svc, redact(inf.Databases[svc]))
		}
	} else {
		mem := ""
		if info.KafkaInMemory {
			mem = " (kfake, in memory: topics start empty after a restart)"
		}
		fmt.Fprintf(&b, "  nats  %s (JetStream under %s/nats)\n  kafka %s%s\n  data  %s\n",
			info.NATSURL, info.DataDir, strings.Join(info.KafkaBrokers, ","), mem, info.DataDir)
	}
	if info.CertsDir != "" {
		fmt.Fprintf(&b, "  mtls  on: every gRPC port needs a client certificate from %s (ca.pem, <service>.pem)\n", info.CertsDir)
	} else {
		fmt.Fprintf(&b, "  mtls  OFF (-plaintext): the authorization policy is not enforced\n")
	}
	if info.OTLPEndpoint != "" {
		fmt.Fprintf(&b, "  otlp  %s: every request is traced (Jaeger UI usually on :16686)\n", info.OTLPEndpoint)
	}
	if info.GatewayURL != "" {
		u := info.GatewayURL
		fmt.Fprintf(&b, "\nGateway: %s\n\n", u)
		fmt.Fprintf(&b, "  TOKEN=$(curl -s -X POST %s/v1/dev/token -H 'Content-Type: application/json' -d '{\"customer_id\":\"cust-0001\"}' | sed -E 's/.*\"token\" *: *\"([^\"]+)\".*/\\1/')\n", u)
		fmt.Fprintf(&b, "  curl -s %s/v1/products -H \"Authorization: Bearer $TOKEN\"\n", u)
		fmt.Fprintf(&b, "  curl -s -X POST %s/v1/orders -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -H 'Idempotency-Key: try-1' -d '{\"items\":[{\"sku\":\"SKU-0001\",\"quantity\":1}]}'\n", u)
	} else if order := firstGRPC(info, Order); order != "" {
		fmt.Fprintf(&b, "\nNo gateway in this stack; try the order service over gRPC (reflection is on in dev):\n\n")
		conn := "-plaintext"
		if info.CertsDir != "" { // as the gateway, the identity the policy lets call the order service
			conn = fmt.Sprintf("-cacert %[1]s/ca.pem -cert %[1]s/gateway.pem -key %[1]s/gateway-key.pem -servername order", info.CertsDir)
		}
		fmt.Fprintf(&b, "  grpcurl %s -d '{\"customer_id\":\"cust-0001\",\"idempotency_key\":\"try-1\",\"items\":[{\"sku\":\"SKU-0001\",\"quantity\":1}]}' %s shopmesh.order.v1.OrderService/CreateOrder\n", conn, order)
	}
	fmt.Fprintf(&b, "\nCtrl-C stops everything in reverse start order (callers before the services they call), then the brokers.\n\n")
	_, _ = io.WriteString(w, b.String())
}

// firstGRPC is the gRPC address of service's first instance ("" when it does not run).
func firstGRPC(info Info, service string) string {
	for _, i := range info.Instances {
		if i.Service == service && i.GRPCAddr != "" {
			return i.GRPCAddr
		}
	}
	return ""
}
