#!/usr/bin/env bash
# prepare.sh [CONTEXT]: puts what the Dockerfile COPYs but git does not hold into CONTEXT/.bin/ (build.sh
# runs it on its scratch copy of this folder, the build context; default: this folder): nats-server v2.12.3 built from its Go module, static (CGO_ENABLED=0), cached under
# ~/.cache/shopmesh/standin/ so only the first run compiles (~1 min).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEST=${1:-$HERE}/.bin
CACHE=${SHOPMESH_CACHE:-$HOME/.cache/shopmesh}/standin
VERSION=v2.12.3
BIN=$CACHE/nats-server-$VERSION-static

# One build at a time: build.sh may run from several shells (helpers, the harness) at once.
mkdir -p "$CACHE"
exec 9>"$CACHE/nats.lock"
flock 9
if [[ ! -x $BIN ]]; then
	echo "[nats] building nats-server $VERSION (static, once)" >&2
	mkdir -p "$CACHE"
	tmp=$(mktemp -d "$CACHE/tmp-nats.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN=$tmp \
		go install -trimpath -ldflags='-s -w' "github.com/nats-io/nats-server/v2@$VERSION")
	mv -f "$tmp/nats-server" "$BIN"
fi
mkdir -p "$DEST"
cmp -s "$BIN" "$DEST/nats-server" || cp -f "$BIN" "$DEST/nats-server"
