#!/usr/bin/env bash
# prepare.sh [CONTEXT]: puts what the Dockerfile COPYs but git does not hold into CONTEXT/.bin/ (build.sh
# runs it on its scratch copy of this folder, the build context; default: this folder): the Grafana
# stand-in server, built static from this folder (a package of the deploy module: main.go,
# handler.go), cached under ~/.cache/shopmesh/standin/ by the hash of its sources and deploy/go.sum.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEST=${1:-$HERE}/.bin
CACHE=${SHOPMESH_CACHE:-$HOME/.cache/shopmesh}/standin
sum=$(cat "$HERE"/*.go "$HERE/../../../go.mod" "$HERE/../../../go.sum" | sha256sum | cut -c1-16)
BIN=$CACHE/grafana-standin-$sum

if [[ ! -x $BIN ]]; then
	mkdir -p "$CACHE"
	(cd "$HERE" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$BIN.tmp" .)
	mv -f "$BIN.tmp" "$BIN"
fi
mkdir -p "$DEST"
cmp -s "$BIN" "$DEST/grafana-standin" || cp -f "$BIN" "$DEST/grafana-standin"
