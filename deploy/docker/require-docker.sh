#!/usr/bin/env bash
# Used by the Makefile's Docker targets (images, compose-up, compose-down): exits 1 with a clear message
# when something they need is missing, instead of a confusing docker error halfway through.
#
#   require-docker.sh TARGET [buildx] [compose]
#
# Always checked: the docker CLI and a reachable engine. buildx: BuildKit, which deploy/docker/Dockerfile
# needs (RUN --mount cache mounts; the legacy builder rejects them). compose: the Compose v2 plugin.
set -u
target="$1"
shift
fail() {
	echo "make $target: $*" >&2
	exit 1
}
command -v docker >/dev/null 2>&1 ||
	fail "the 'docker' command is not installed or not on PATH; install Docker Engine with the buildx and compose plugins (https://docs.docker.com/engine/install/)"
for need in "$@"; do
	case "$need" in
	buildx) docker buildx version >/dev/null 2>&1 ||
		fail "docker buildx is missing: deploy/docker/Dockerfile needs BuildKit (RUN --mount); install the docker-buildx-plugin package" ;;
	compose) docker compose version >/dev/null 2>&1 ||
		fail "'docker compose' (the Compose v2 plugin) is missing; install the docker-compose-plugin package" ;;
	*) fail "require-docker.sh: unknown requirement $need" ;;
	esac
done
docker info >/dev/null 2>&1 ||
	fail "cannot reach the Docker engine ('docker info' failed): start it, or point DOCKER_HOST at one"
