#!/usr/bin/env bash
# prepare.sh [CONTEXT]: stages the nacos/nacos-server:v2.4.3 stand-in's programs into CONTEXT/stage/
# (gitignored) before `docker build` (build.sh calls it):
# the rnacos 0.8.8 binary that deploy/infra/infra.sh builds with cargo into ~/.cache/shopmesh/rnacos-0.8.8
# (`deploy/infra/infra.sh up nacos` once, several minutes, when it is missing) and the gate built from
# gate/main.go. Each replaced only when it differs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# build.sh passes the build context (a scratch copy of this folder); by hand, this folder is the context.
ctx=${1:-$here}
bin=${SHOPMESH_CACHE:-$HOME/.cache/shopmesh}/rnacos-0.8.8/bin/rnacos
if [[ ! -x $bin ]]; then
	echo "nacos/prepare.sh: $bin is missing: run deploy/infra/infra.sh up nacos once (cargo install rnacos 0.8.8)" >&2
	exit 1
fi
mkdir -p "$ctx/stage"
# Without its symbol table (90 MB -> about a third); strip is deterministic, so the build hash is stable.
cp -p "$bin" "$ctx/stage/rnacos.tmp"
if command -v strip >/dev/null; then strip "$ctx/stage/rnacos.tmp"; fi
if cmp -s "$ctx/stage/rnacos.tmp" "$ctx/stage/rnacos"; then
	rm -f "$ctx/stage/rnacos.tmp"
else
	mv "$ctx/stage/rnacos.tmp" "$ctx/stage/rnacos"
fi

# The gate (gate/main.go, in the deploy module): a static binary, replaced only when it changed.
repo=$(cd "$here/../../../.." && pwd)
(cd "$repo/deploy" && CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$ctx/stage/gate.tmp" ./compose/standin/nacos/gate)
if cmp -s "$ctx/stage/gate.tmp" "$ctx/stage/gate"; then
	rm -f "$ctx/stage/gate.tmp"
else
	mv "$ctx/stage/gate.tmp" "$ctx/stage/gate"
fi
