#!/usr/bin/env bash
# kafka-server-start.sh of the apache/kafka:3.9.1 stand-in: the broker (kafka.Kafka) with the
# distribution's defaults (1 GiB heap, config/log4j.properties, GC log) unless the variables are set.
set -euo pipefail
if [[ $# -lt 1 ]]; then
	echo "USAGE: $0 [-daemon] server.properties [--override property=value]*" >&2
	exit 1
fi
base_dir=$(dirname "$0")
export KAFKA_LOG4J_OPTS=${KAFKA_LOG4J_OPTS:--Dlog4j.configuration=file:$base_dir/../config/log4j.properties}
export KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G}
extra=(-name kafkaServer -loggc)
if [[ $1 == -daemon ]]; then
	extra=(-daemon "${extra[@]}")
	shift
fi
exec "$base_dir/kafka-run-class.sh" "${extra[@]}" kafka.Kafka "$@"
