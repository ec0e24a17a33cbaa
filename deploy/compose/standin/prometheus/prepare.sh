#!/usr/bin/env bash
# prepare.sh [CONTEXT]: puts what the Dockerfile COPYs but git does not hold into CONTEXT/.bin/ (build.sh
# runs it on its scratch copy of this folder, the build context; default: this folder): prometheus and promtool v3.5.0 — Go module github.com/prometheus/prometheus v0.305.0
# (Prometheus 3.x.y is module v0.3xx.y) — built static (CGO_ENABLED=0, tag netgo, the official build's
# version ldflags) from a writable copy of the module source, cached under ~/.cache/shopmesh/standin/
# (first build 5-25 min), and the module's example prometheus.yml that the official image ships.
# Without the `builtinassets` tag: the React UI needs npm-generated assets that the Go module does not
# hold, so the stand-in serves the HTTP API, /-/ready, /-/healthy, /metrics and /-/reload but no UI.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEST=${1:-$HERE}/.bin
CACHE=${SHOPMESH_CACHE:-$HOME/.cache/shopmesh}/standin
VERSION=3.5.0
MODULE=github.com/prometheus/prometheus
MODVER=v0.305.0
OUT=$CACHE/prometheus-v$VERSION-static
SRC=$CACHE/src/prometheus-$MODVER

export GOWORK=off GOFLAGS=-buildvcs=false
# One build at a time: build.sh may run from several shells (helpers, the harness) at once.
mkdir -p "$CACHE"
exec 9>"$CACHE/prometheus.lock"
flock 9
if [[ ! -x $OUT/prometheus || ! -x $OUT/promtool ]]; then
	echo "[prometheus] building prometheus $VERSION (module $MODVER, static, once: 5-25 min depending on load)" >&2
	if [[ ! -f $SRC/go.mod ]]; then
		dir=$(go mod download -json "$MODULE@$MODVER" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		[[ -n $dir && -f $dir/go.mod ]] || {
			echo "[prometheus] go mod download $MODULE@$MODVER failed" >&2
			exit 1
		}
		mkdir -p "$SRC.tmp"
		cp -R "$dir/." "$SRC.tmp/"
		chmod -R u+w "$SRC.tmp"
		rm -rf "$SRC"
		mv "$SRC.tmp" "$SRC"
	fi
	v=github.com/prometheus/common/version
	mkdir -p "$OUT.tmp"
	(cd "$SRC" && CGO_ENABLED=0 go build -trimpath -tags netgo \
		-ldflags="-s -w -X $v.Version=$VERSION -X $v.Revision=$MODVER -X $v.Branch=HEAD -X $v.BuildUser=shopmesh-standin" \
		-o "$OUT.tmp/" ./cmd/prometheus ./cmd/promtool)
	rm -rf "$OUT"
	mv "$OUT.tmp" "$OUT"
fi
mkdir -p "$DEST"
for f in prometheus promtool; do
	cmp -s "$OUT/$f" "$DEST/$f" || cp -f "$OUT/$f" "$DEST/$f"
done
cmp -s "$SRC/documentation/examples/prometheus.yml" "$DEST/prometheus.yml" ||
	install -m 0644 "$SRC/documentation/examples/prometheus.yml" "$DEST/prometheus.yml"
