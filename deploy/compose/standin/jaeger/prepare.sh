#!/usr/bin/env bash
# prepare.sh [CONTEXT]: puts what the Dockerfile COPYs but git does not hold into CONTEXT/.bin/ (build.sh
# runs it on its scratch copy of this folder, the build context; default: this folder): the Jaeger v2.13.0 binary — Go module github.com/jaegertracing/jaeger v1.76.0 (Jaeger
# tags each release twice: v1.76.0 / v2.13.0, CHANGELOG.md), pinned by deploy/infra/jaeger/go.mod —
# static (CGO_ENABLED=0), cached under ~/.cache/shopmesh/standin/ (first build 5-25 min), and the
# module's sampling-strategies.json that the official image ships.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEST=${1:-$HERE}/.bin
MOD_DIR=$(cd "$HERE/../../../infra/jaeger" && pwd)
CACHE=${SHOPMESH_CACHE:-$HOME/.cache/shopmesh}/standin
VERSION=v2.13.0
BIN=$CACHE/jaeger-$VERSION-static

export GOWORK=off GOFLAGS=-buildvcs=false
# One build at a time: build.sh may run from several shells (helpers, the harness) at once.
mkdir -p "$CACHE"
exec 9>"$CACHE/jaeger.lock"
flock 9
if [[ ! -x $BIN ]]; then
	echo "[jaeger] building jaeger $VERSION (static, once: 5-25 min depending on load)" >&2
	mkdir -p "$CACHE"
	(cd "$MOD_DIR" && CGO_ENABLED=0 go build -trimpath \
		-ldflags="-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$VERSION" \
		-o "$BIN.tmp" github.com/jaegertracing/jaeger/cmd/jaeger)
	mv -f "$BIN.tmp" "$BIN"
fi
src=$(cd "$MOD_DIR" && go list -m -f '{{.Dir}}' github.com/jaegertracing/jaeger)
mkdir -p "$DEST"
cmp -s "$BIN" "$DEST/jaeger" || cp -f "$BIN" "$DEST/jaeger"
cmp -s "$src/cmd/jaeger/sampling-strategies.json" "$DEST/sampling-strategies.json" ||
	install -m 0644 "$src/cmd/jaeger/sampling-strategies.json" "$DEST/sampling-strategies.json"
