#!/usr/bin/env bash
# kafka-console-producer.sh of the apache/kafka:3.9.1 stand-in (same class as the distribution's script).
set -euo pipefail
export KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx512M}
exec "$(dirname "$0")/kafka-run-class.sh" kafka.tools.ConsoleProducer "$@"
