#!/usr/bin/env bash
# kafka-acls.sh of the apache/kafka:3.9.1 stand-in (same class as the distribution's script).
set -euo pipefail
exec "$(dirname "$0")/kafka-run-class.sh" kafka.admin.AclCommand "$@"
