#!/usr/bin/env bash
# Builds the cluster DNS of the test cluster: CoreDNS from its Go module (this folder: go.mod pins
# github.com/coredns/coredns, main.go compiles in only the plugins addons/coredns.yaml's Corefile uses),
# the binary cached in ~/.cache/shopmesh/coredns-<version>/coredns, then the image
# shopmesh-k8s/coredns:<version> (Dockerfile, FROM the distroless stand-in) into the running Docker engine,
# from which deploy/k8s/cluster/cluster.sh loads it (addons/images.txt).
#
#   build.sh            build what is missing or stale; print the image tag on stdout
#   FORCE=1 build.sh    rebuild the binary and the image
#
# The binary is rebuilt when the hash of main.go, go.mod and go.sum differs from the one stored beside it;
# the image carries the label org.shopmesh.coredns.hash (binary, Dockerfile, base image id) and is skipped
# when that label matches. Cold: ~7 min of go build on 2 shared cores; warm: about a second.
# This folder is its own module, deliberately not in go.work (GOWORK=off here).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${SHOPMESH_CACHE:-$HOME/.cache/shopmesh}
LOCK=${DOCKER_BUILD_LOCK:-/tmp/docker-build.lock}
VERSION=$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" {print $3} $1 == "github.com/coredns/coredns" {print $2}' "$SCRIPT_DIR/go.mod" | head -n1)
DIR=$CACHE/coredns-$VERSION
IMAGE=shopmesh-k8s/coredns:$VERSION
BASE=$(awk 'toupper($1) == "FROM" {print $2}' "$SCRIPT_DIR/Dockerfile" | tail -n1)

log() { printf '[coredns-build] %s\n' "$*" >&2; }
die() {
	printf '[coredns-build] ERROR: %s\n' "$*" >&2
	exit 1
}

[[ -n $VERSION ]] || die "no github.com/coredns/coredns requirement in $SCRIPT_DIR/go.mod"
mkdir -p "$DIR"

src_hash=$(cd "$SCRIPT_DIR" && sha256sum main.go go.mod go.sum | sha256sum | cut -c1-16)
if [[ ${FORCE:-} == 1 || ! -x $DIR/coredns || $(cat "$DIR/coredns.src-hash" 2>/dev/null) != "$src_hash" ]]; then
	log "building CoreDNS $VERSION into $DIR (cold: several minutes)"
	started=$SECONDS
	(cd "$SCRIPT_DIR" && GOWORK=off GOFLAGS=-mod=readonly GOTOOLCHAIN=local CGO_ENABLED=0 \
		go build -trimpath -ldflags "-s -w" -o "$DIR/coredns.new" .) || die "go build failed"
	mv "$DIR/coredns.new" "$DIR/coredns"
	echo "$src_hash" >"$DIR/coredns.src-hash"
	log "binary built in $((SECONDS - started))s ($(du -h "$DIR/coredns" | cut -f1))"
fi

docker info >/dev/null 2>&1 || die "no Docker engine answers: run deploy/compose/standin/engine.sh up"
base_id=$(docker image inspect -f '{{.Id}}' "$BASE" 2>/dev/null) ||
	die "base image $BASE missing: build the stand-ins (deploy/compose/standin/build.sh distroless)"
img_hash=$(
	sha256sum "$DIR/coredns" "$SCRIPT_DIR/Dockerfile" | cut -d' ' -f1
	echo "$base_id"
)
img_hash=$(sha256sum <<<"$img_hash" | cut -c1-16)
have=$(docker image inspect -f '{{index .Config.Labels "org.shopmesh.coredns.hash"}}' "$IMAGE" 2>/dev/null || true)
if [[ ${FORCE:-} != 1 && $have == "$img_hash" ]]; then
	log "$IMAGE present (hash $img_hash)"
	echo "$IMAGE"
	exit 0
fi

ctx=$(mktemp -d "${TMPDIR:-/tmp}/coredns-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
cp "$SCRIPT_DIR/Dockerfile" "$DIR/coredns" "$ctx/"
log "building $IMAGE (log $DIR/image.build.log)"
if ! flock "$LOCK" env DOCKER_BUILDKIT=0 docker build --label "org.shopmesh.coredns.hash=$img_hash" \
	--label "org.shopmesh.coredns.version=$VERSION" -t "$IMAGE" "$ctx" >"$DIR/image.build.log" 2>&1; then
	tail -n 20 "$DIR/image.build.log" >&2
	die "docker build of $IMAGE failed: see $DIR/image.build.log"
fi
# The image this one replaced, untagged now (a container still using it keeps it).
docker image prune -f --filter label=org.shopmesh.coredns.version >/dev/null || true
log "$IMAGE built ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)"
echo "$IMAGE"
