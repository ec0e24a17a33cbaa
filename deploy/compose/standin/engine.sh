#!/usr/bin/env bash
# The Docker engine and the compose and buildx CLI plugins for the compose stand-in test fixture (issue
# 19). Runs as root on a machine without systemd and without a reachable container registry. The docker
# CLI on PATH may be newer than Debian's engine (20.10, API 1.41): it negotiates the API version down.
#
#   engine.sh up       install Debian's docker.io if dockerd is missing, start `dockerd --iptables=false`
#                      (unless an engine already answers), wait for `docker info`, then make sure the
#                      CLI plugins are installed (`engine.sh plugins`)
#   engine.sh down     stop the dockerd this script started (its containers stop with it)
#   engine.sh status   engine and plugin versions, or "not running"
#   engine.sh plugins  build the compose and buildx plugins from their Go modules (cached in
#                      ~/.cache/shopmesh) into ~/.docker/cli-plugins: `docker compose` builds through
#                      `docker buildx bake` (BuildKit, which deploy/docker/Dockerfile needs for its
#                      RUN --mount cache mounts; without buildx compose falls back to the legacy builder)
#
# Not for production: this is the engine the stand-in images (deploy/compose/standin) run on. With
# --iptables=false, containers on a bridge network reach each other and published ports go through the
# userland proxy, but a bridge network has no way out: builds that need the network use --network host.
set -euo pipefail

CACHE=${SHOPMESH_CACHE:-$HOME/.cache/shopmesh}
STATE=${SHOPMESH_ENGINE_DIR:-$CACHE/engine}
DATA_ROOT=${DOCKER_DATA_ROOT:-/var/lib/docker}
SOCK=${DOCKER_SOCK:-/var/run/docker.sock}
PIDFILE=$STATE/dockerd.pid
LOGFILE=$STATE/dockerd.log
READY_TIMEOUT=${READY_TIMEOUT:-60} # seconds

COMPOSE_MODULE=github.com/docker/compose/v5
COMPOSE_VERSION=${COMPOSE_VERSION:-v5.6.0}
BUILDX_MODULE=github.com/docker/buildx
BUILDX_VERSION=${BUILDX_VERSION:-v0.38.2}
PLUGIN_DIR=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins

log() { printf '[engine] %s\n' "$*" >&2; }
die() {
	printf '[engine] ERROR: %s\n' "$*" >&2
	exit 1
}

engine_answers() { docker info >/dev/null 2>&1; }

our_pid() {
	local pid
	[[ -f $PIDFILE ]] || return 1
	pid=$(<"$PIDFILE")
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && printf '%s\n' "$pid"
}

install_engine() {
	command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 && return 0
	[[ $(id -u) == 0 ]] || die "dockerd is missing and installing it needs root"
	log "installing Debian's docker.io (dockerd, containerd, runc)"
	# policy-rc.d, when present, keeps the package from trying to start the service (no systemd here).
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io >"$STATE/apt.log" 2>&1; then
		DEBIAN_FRONTEND=noninteractive apt-get update >>"$STATE/apt.log" 2>&1 || true
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io >>"$STATE/apt.log" 2>&1 ||
			die "apt-get install docker.io failed: see $STATE/apt.log"
	fi
}

cmd_up() {
	mkdir -p "$STATE"
	command -v docker >/dev/null 2>&1 || install_engine
	if engine_answers; then
		log "engine already running ($(docker version -f '{{.Server.Version}}' 2>/dev/null))"
	else
		[[ $(id -u) == 0 ]] || die "starting dockerd needs root"
		install_engine
		if pid=$(our_pid); then
			log "dockerd (pid $pid) is running but does not answer yet"
		else
			log "starting dockerd --iptables=false (data $DATA_ROOT, log $LOGFILE)"
			# setsid: the engine outlives this script and the shell or make that ran it.
			setsid dockerd --iptables=false --ip-masq=false --data-root "$DATA_ROOT" --pidfile "$PIDFILE" \
				-H "unix://$SOCK" >>"$LOGFILE" 2>&1 </dev/null &
		fi
		local deadline=$((SECONDS + READY_TIMEOUT))
		until engine_answers; do
			((SECONDS < deadline)) || die "dockerd did not answer within ${READY_TIMEOUT}s: see $LOGFILE"
			sleep 0.5
		done
		log "engine up: $(docker version -f 'server {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}}')"
	fi
	# dockerd --iptables=false adds no FORWARD rules: a DROP policy with bridge netfilter on would cut the
	# containers of a compose network off from each other.
	if [[ $(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null) == 1 ]] &&
		iptables -S FORWARD 2>/dev/null | grep -qx -- '-P FORWARD DROP'; then
		log "WARNING: iptables FORWARD policy is DROP and bridge-nf-call-iptables=1: containers on a bridge network cannot reach each other"
	fi
	cmd_plugins
}

cmd_down() {
	local pid
	if ! pid=$(our_pid); then
		if engine_answers; then
			log "an engine answers but this script did not start it (no live $PIDFILE): left alone"
		else
			log "not running"
		fi
		return 0
	fi
	log "stopping dockerd (pid $pid)"
	kill -TERM "$pid"
	local deadline=$((SECONDS + READY_TIMEOUT))
	while kill -0 "$pid" 2>/dev/null; do
		((SECONDS < deadline)) || die "dockerd (pid $pid) did not stop within ${READY_TIMEOUT}s"
		sleep 0.5
	done
	rm -f "$PIDFILE"
	log "stopped"
}

cmd_status() {
	local pid=""
	pid=$(our_pid) || true
	if engine_answers; then
		echo "engine: running, $(docker version -f 'server {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}}')${pid:+, pid $pid}"
	else
		echo "engine: not running${pid:+ (pid $pid starting)}"
	fi
	local p
	for p in compose buildx; do
		if [[ -x $PLUGIN_DIR/docker-$p ]]; then
			echo "$p: $(docker "$p" version 2>&1 | head -n1)"
		else
			echo "$p: not installed ($PLUGIN_DIR/docker-$p)"
		fi
	done
}

# build_plugin NAME MODULE VERSION PACKAGE LDFLAGS: the CLI plugin docker-NAME built from the Go module's
# PACKAGE, cached in ~/.cache/shopmesh/NAME-VERSION. `go install` refuses some of these modules (exclude
# directives in compose's go.mod), so the module source is copied to a writable folder and built there.
build_plugin() {
	local name=$1 module=$2 version=$3 pkg=$4 ldflags=$5
	local dir=$CACHE/$name-$version bin src started=$SECONDS
	bin=$dir/docker-$name
	if [[ ! -x $bin ]]; then
		command -v go >/dev/null 2>&1 || die "go is needed to build the $name plugin"
		log "building the $name plugin $version from $module (a few minutes, cached in $dir)"
		mkdir -p "$dir"
		src=$(cd "$dir" && GOFLAGS=-mod=mod GOWORK=off go mod download -json "$module@$version" |
			sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		[[ -n $src && -d $src ]] || die "go mod download $module@$version gave no source folder"
		rm -rf "$dir/src"
		cp -R "$src" "$dir/src"
		chmod -R u+w "$dir/src"
		(cd "$dir/src" && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" "$pkg")
		mv "$bin.tmp" "$bin"
		rm -rf "$dir/src"
		log "$name plugin built in $((SECONDS - started))s"
	fi
	mkdir -p "$PLUGIN_DIR"
	cmp -s "$bin" "$PLUGIN_DIR/docker-$name" || install -m 0755 "$bin" "$PLUGIN_DIR/docker-$name"
}

cmd_plugins() {
	build_plugin compose "$COMPOSE_MODULE" "$COMPOSE_VERSION" ./cmd \
		"-w -X $COMPOSE_MODULE/internal.Version=$COMPOSE_VERSION"
	build_plugin buildx "$BUILDX_MODULE" "$BUILDX_VERSION" ./cmd/buildx \
		"-s -w -X $BUILDX_MODULE/version.Version=$BUILDX_VERSION -X $BUILDX_MODULE/version.Package=$BUILDX_MODULE"
	log "$(docker compose version); $(docker buildx version)"
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
plugins) cmd_plugins ;;
*)
	echo "usage: $0 up|down|status|plugins" >&2
	exit 2
	;;
esac
