#!/usr/bin/env bash
# Entrypoint of the nacos/nacos-server:v2.4.3 stand-in: the official image's environment mapped to rnacos.
#   MODE                 standalone only (the official default "cluster" needs NACOS_SERVERS: refused)
#   NACOS_SERVER_PORT    HTTP open API and /nacos/v1/console/health/* (8848); gRPC on port+1000 (9848)
#   NACOS_AUTH_ENABLE    true: every open-API and SDK request needs the accessToken of a logged-in user
#   NACOS_AUTH_TOKEN     required with auth (Base64, >= 32 bytes decoded, as Nacos 2.4 requires); rnacos
#                        signs its tokens itself, so the value is checked, not used
#   NACOS_AUTH_IDENTITY_KEY/_VALUE  required with auth (as Nacos 2.4); rnacos's cluster token (unused
#                        by a single node)
#   NACOS_AUTH_TOKEN_EXPIRE_SECONDS token lifetime (18000)
#   SPRING_DATASOURCE_PLATFORM=mysql  refused: embedded storage only (/home/nacos/data)
# The admin user is "nacos", usable once initialised with POST /nacos/v1/auth/users/admin (as Nacos 2.4).
# The gate (gate/main.go) listens on NACOS_SERVER_PORT in front of rnacos's HTTP port (port+10000) for
# that and for the health endpoints; gRPC (port+1000) is rnacos's own. See README.md.
# rnacos sometimes panics on its very first start in an empty data dir (raftapply.rs): it is started again
# on a fresh one (below).
set -euo pipefail

fail() {
	echo "nacos stand-in: $*" >&2
	exit 1
}

[[ ${MODE:-cluster} == standalone ]] ||
	fail "MODE=${MODE:-cluster} is not supported by this stand-in (rnacos); set MODE=standalone"
[[ ${SPRING_DATASOURCE_PLATFORM:-} == "" || ${SPRING_DATASOURCE_PLATFORM:-} == embedded ]] ||
	fail "SPRING_DATASOURCE_PLATFORM=$SPRING_DATASOURCE_PLATFORM is not supported by this stand-in: embedded storage only"

port=${NACOS_SERVER_PORT:-8848}
auth=false
if [[ ${NACOS_AUTH_ENABLE:-false} == true ]]; then
	auth=true
	[[ -n ${NACOS_AUTH_TOKEN:-} ]] || fail "NACOS_AUTH_TOKEN must be set when NACOS_AUTH_ENABLE=true"
	n=$(base64 -d <<<"$NACOS_AUTH_TOKEN" 2>/dev/null | wc -c) ||
		fail "NACOS_AUTH_TOKEN must be Base64 (the secret key must be encoded by base64)"
	((n >= 32)) || fail "the length of secret key (NACOS_AUTH_TOKEN decoded) must be at least 32 bytes"
	[[ -n ${NACOS_AUTH_IDENTITY_KEY:-} && -n ${NACOS_AUTH_IDENTITY_VALUE:-} ]] ||
		fail "NACOS_AUTH_IDENTITY_KEY and NACOS_AUTH_IDENTITY_VALUE must be set when NACOS_AUTH_ENABLE=true"
fi

data=/home/nacos/data
mkdir -p "$data" /home/nacos/logs
# rnacos gives "nacos" this password in an empty data dir; only the gate reads it (to set the real one).
if [[ ! -s $data/.standin-admin-password ]]; then
	(umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$data/.standin-admin-password")
fi

http=$((port + 10000))
export RNACOS_HTTP_PORT=$http
export RNACOS_GRPC_PORT=$((port + 1000))
export RNACOS_HTTP_CONSOLE_PORT=10848
export RNACOS_CONSOLE_HOST=127.0.0.1
export RNACOS_CONSOLE_ENABLE_CAPTCHA=false
export RNACOS_DATA_DIR=$data
export RNACOS_RAFT_NODE_ID=1
export RNACOS_RAFT_NODE_ADDR=127.0.0.1:$RNACOS_GRPC_PORT
export RNACOS_RAFT_AUTO_INIT=true
export RNACOS_ENABLE_OPEN_API_AUTH=$auth
export RNACOS_API_LOGIN_TIMEOUT=${NACOS_AUTH_TOKEN_EXPIRE_SECONDS:-18000}
export RNACOS_INIT_ADMIN_USERNAME=nacos
RNACOS_INIT_ADMIN_PASSWORD=$(cat "$data/.standin-admin-password")
export RNACOS_INIT_ADMIN_PASSWORD
if [[ $auth == true ]]; then
	export RNACOS_CLUSTER_TOKEN="$NACOS_AUTH_IDENTITY_KEY:$NACOS_AUTH_IDENTITY_VALUE"
fi
export RNACOS_RUN_IN_DOCKER=true
export RUST_LOG=${RUST_LOG:-info}
# rnacos reads ./.env unless given a file: give it an empty one, the settings are in the environment.
: >/home/nacos/conf/rnacos.env
unset NACOS_AUTH_TOKEN NACOS_AUTH_IDENTITY_VALUE

pids=()
# shellcheck disable=SC2317 # called by the trap
stop() {
	kill -TERM "${pids[@]}" 2>/dev/null || true
	wait
	exit 143
}
trap stop TERM INT

/home/nacos/bin/gate -listen ":$port" -upstream "http://127.0.0.1:$http" -grpc "127.0.0.1:$RNACOS_GRPC_PORT" &
gate=$!
pids+=("$gate")

# rnacos's output goes to the container's log and, for the first-start check below, to a file.
out=/home/nacos/logs/rnacos.out
start_rnacos() {
	: >"$out"
	/home/nacos/bin/rnacos -e /home/nacos/conf/rnacos.env > >(tee -a "$out") 2>&1 &
	rnacos=$!
	pids+=("$rnacos")
}
start_rnacos

# First start in an empty data dir: rnacos 0.8.8 sometimes panics applying its first raft entry
# (raftapply.rs:421, Option::unwrap on None: an actor gets a request before its managers are set).
# Then it either exits or keeps running, ready on HTTP and gRPC, with the admin user never created —
# every login 403 (seen in the Kubernetes test). The data dir holds nothing of value yet: kill it and
# start again on a fresh one, at most twice more (deploy/infra/infra.sh does the same for the plain
# process).
panicked() { grep -qs 'panicked at' "$out"; }
if [[ ! -e $data/.standin-started ]]; then
	tries=1
	for _ in $(seq 1 240); do
		if panicked || ! kill -0 "$rnacos" 2>/dev/null; then
			((tries < 3)) || break
			echo "nacos stand-in: rnacos failed its first start in an empty data dir (an rnacos race); starting it again on a fresh data dir" >&2
			kill -KILL "$rnacos" 2>/dev/null || true
			wait "$rnacos" 2>/dev/null || true
			find "$data" -mindepth 1 -maxdepth 1 ! -name .standin-admin-password -exec rm -rf {} +
			start_rnacos
			tries=$((tries + 1))
			continue
		fi
		if curl -fsS -o /dev/null "http://127.0.0.1:$port/nacos/v1/console/health/readiness" 2>/dev/null; then
			sleep 1 # the panic is printed within milliseconds of the start; give it a moment after ready
			panicked || break
			continue
		fi
		sleep 0.5
	done
	touch "$data/.standin-started"
fi

# Run until either process ends; then stop the other and exit with its status.
rc=0
wait -n "$gate" "$rnacos" || rc=$?
echo "nacos stand-in: $( (kill -0 "$gate" 2>/dev/null && echo rnacos) || echo gate) exited ($rc)" >&2
kill -TERM "$gate" "$rnacos" 2>/dev/null || true
wait || true
exit "$rc"
