#!/usr/bin/env bash
# The security suite's private set of authenticated servers (INFRA_AUTH=1): PostgreSQL, Kafka (SASL/SCRAM + ACLs),
# NATS (users) and Nacos (auth), on ports of their own so that it runs beside the shared set of
# `make infra-up` (55432/19092/14222/18848/4317...) and the fault campaign's (56432/29092/...).
#
#   authinfra.sh up [component...]   start them (default: postgres kafka nats nacos); writes the env file
#   authinfra.sh down                stop them
#   authinfra.sh env                 print the env file's path (for make security-test SECURITY_INFRA_ENV=...)
#
# SECURITY_INFRA_DIR (default <repo>/.run/secinfra) holds the servers' data, their secrets and infra.env.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIR=${SECURITY_INFRA_DIR:-$REPO/.run/secinfra}
export SHOPMESH_INFRA_DIR=$DIR/run SHOPMESH_INFRA_ENV=$DIR/infra.env
# Below 32768, outside Linux's ephemeral port range, so that no outgoing connection holds one.
export PG_PORT=${SEC_PG_PORT:-31432} KAFKA_PORT=${SEC_KAFKA_PORT:-31092} KAFKA_CONTROLLER_PORT=${SEC_KAFKA_CONTROLLER_PORT:-31093}
export NATS_PORT=${SEC_NATS_PORT:-31222} NATS_MONITOR_PORT=${SEC_NATS_MONITOR_PORT:-31822}
# Nacos also listens on NACOS_PORT+1000 (gRPC): 31448.
export NACOS_PORT=${SEC_NACOS_PORT:-30448} NACOS_CONSOLE_PORT=${SEC_NACOS_CONSOLE_PORT:-32448}
export JAEGER_OTLP_GRPC_PORT=31317 JAEGER_OTLP_HTTP_PORT=31318 JAEGER_UI_PORT=31686 JAEGER_QUERY_GRPC_PORT=31685 JAEGER_HEALTH_PORT=31133

cmd=${1:-}
[[ $cmd ]] && shift
case $cmd in
up)
	(($#)) || set -- postgres kafka nats nacos
	# infra.sh's start_nacos starts rnacos once more on a fresh data dir when it panics on its first start.
	INFRA_AUTH=1 exec bash "$REPO/deploy/infra/infra.sh" up "$@"
	;;
down) bash "$REPO/deploy/infra/infra.sh" down ;;
env) echo "$SHOPMESH_INFRA_ENV" ;;
*)
	sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
