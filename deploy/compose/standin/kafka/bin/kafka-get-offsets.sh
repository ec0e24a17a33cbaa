#!/usr/bin/env bash
# kafka-get-offsets.sh of the apache/kafka:3.9.1 stand-in (same class as the distribution's script).
set -euo pipefail
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.GetOffsetShell "$@"
