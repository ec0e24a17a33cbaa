#!/usr/bin/env bash
# bash prepare.sh CONTEXT (run by ../build.sh): puts into CONTEXT
#   go/       this machine's Go toolchain (GOROOT), which must be the GO_VERSION of deploy/compose/.env
#   goproxy/  a file:// module proxy with exactly what `go build` of the workspace's services needs
#             (go list -deps with an empty module cache, fed from this machine's module cache), cached in
#             ~/.cache/shopmesh/standin/goproxy/<hash of go.work, go.work.sum and every go.mod/go.sum>
# and fills in the Go version in CONTEXT/Dockerfile.
set -euo pipefail

ctx=$1
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../../../.." && pwd)
CACHE=${SHOPMESH_CACHE:-$HOME/.cache/shopmesh}

die() {
	printf '[standin golang] ERROR: %s\n' "$*" >&2
	exit 1
}

want=$(sed -n 's/^GO_VERSION=//p' "$REPO/deploy/compose/.env" | tail -n1)
have=$(GOTOOLCHAIN=local go env GOVERSION)
[[ $have == "go$want" ]] || die "deploy/compose/.env pins GO_VERSION=$want but this machine's Go is $have"
goroot=$(GOTOOLCHAIN=local go env GOROOT)
sed -i "s/@GO_VERSION@/$want/g" "$ctx/Dockerfile"

# Hard links when the toolchain is on the same file system (no copy of ~270 MB), a copy otherwise.
cp -al "$goroot" "$ctx/go" 2>/dev/null || {
	rm -rf "$ctx/go"
	cp -a "$goroot" "$ctx/go"
}
rm -rf "$ctx/go/pkg/obj"

# The workspace's module files decide what the proxy must hold.
mapfile -t modfiles < <(cd "$REPO" && {
	echo go.work
	echo go.work.sum
	find . -path ./.run -prune -o \( -name go.mod -o -name go.sum \) -print | sed 's|^\./||'
} | LC_ALL=C sort)
key=$(cd "$REPO" && { echo "$have"; sha256sum "${modfiles[@]}"; } | sha256sum | cut -c1-16)
proxy=$CACHE/standin/goproxy/$key
if [[ ! -d $proxy ]]; then
	mapfile -t services < <(cd "$REPO/services" && for f in */service.yaml; do echo "${f%%/*}"; done)
	((${#services[@]})) || die "no services/*/service.yaml"
	pkgs=()
	for s in "${services[@]}"; do pkgs+=("./services/$s/cmd/$s"); done
	mkdir -p "$CACHE/standin/goproxy"
	tmp=$(mktemp -d "$CACHE/standin/goproxy-tmp.XXXXXX")
	trap 'GOMODCACHE="$tmp/mod" go clean -modcache 2>/dev/null; rm -rf "$tmp"' EXIT
	# As deploy/docker/Dockerfile builds: static linux/amd64 binaries, go.work, -mod=readonly. The host's
	# module cache first; its configured proxy for anything missing there.
	(cd "$REPO" && GOWORK="$REPO/go.work" GOMODCACHE="$tmp/mod" GOFLAGS=-mod=readonly GOTOOLCHAIN=local \
		CGO_ENABLED=0 GOOS=linux GOARCH=amd64 GONOSUMDB='*' GOSUMDB=off \
		GOPROXY="file://$(go env GOMODCACHE)/cache/download,$(go env GOPROXY)" \
		go list -deps "${pkgs[@]}" >/dev/null 2>"$tmp/list.log") || {
		cat "$tmp/list.log" >&2
		die "go list of the services with an empty module cache failed"
	}
	find "$tmp/mod/cache/download" \( -name '*.lock' -o -name '*.partial' -o -name '*.tmp' \) -delete
	rm -rf "$tmp/mod/cache/download/sumdb"
	cp -a "$tmp/mod/cache/download" "$proxy.tmp"
	mv "$proxy.tmp" "$proxy"
fi
cp -al "$proxy" "$ctx/goproxy" 2>/dev/null || {
	rm -rf "$ctx/goproxy"
	cp -a "$proxy" "$ctx/goproxy"
}
