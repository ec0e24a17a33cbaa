#!/usr/bin/env bash
# bash prepare.sh CONTEXT (run by ../build.sh): puts the Dockerfile frontend binary into CONTEXT, built
# (static) from the Go module github.com/moby/buildkit and cached in ~/.cache/shopmesh/standin.
# `go install` refuses that module (exclude directives in its go.mod): its source is copied to a
# writable folder and built there.
set -euo pipefail

ctx=$1
CACHE=${SHOPMESH_CACHE:-$HOME/.cache/shopmesh}
MODULE=github.com/moby/buildkit
VERSION=${BUILDKIT_VERSION:-v0.34.2}
dir=$CACHE/standin/dockerfile-frontend-$VERSION
bin=$dir/dockerfile-frontend

if [[ ! -x $bin ]]; then
	printf '[standin dockerfile] building the Dockerfile frontend from %s@%s (a few minutes, cached)\n' "$MODULE" "$VERSION" >&2
	mkdir -p "$dir"
	src=$(cd "$dir" && GOFLAGS=-mod=mod GOWORK=off go mod download -json "$MODULE@$VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[[ -n $src && -d $src ]] || {
		echo "go mod download $MODULE@$VERSION gave no source folder" >&2
		exit 1
	}
	rm -rf "$dir/src"
	cp -R "$src" "$dir/src"
	chmod -R u+w "$dir/src"
	(cd "$dir/src" && GOWORK=off CGO_ENABLED=0 go build -trimpath -tags "netgo static_build osusergo" \
		-ldflags "-s -w -X main.Version=$VERSION-shopmesh-standin" -o "$bin.tmp" ./frontend/dockerfile/cmd/dockerfile-frontend)
	mv "$bin.tmp" "$bin"
	rm -rf "$dir/src"
fi
cp "$bin" "$ctx/dockerfile-frontend"
