#!/bin/sh
# The official nats image's entrypoint: arguments that start with "-" are nats-server flags
# (compose: command ["-c", "/etc/nats/nats.conf"]); anything else runs as given.
set -e
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
	set -- nats-server "$@"
fi
exec "$@"
