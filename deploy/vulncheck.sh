#!/usr/bin/env bash
# make vulncheck: govulncheck on every module of go.work, against a local copy of the Go vulnerability
# database. vuln.go.dev is not reachable where shopmesh is built, but the module proxy serves
# golang.org/x/vulndb, whose data/osv holds every report as OSV JSON; its own cmd/indexdb writes them
# in the v1 database layout govulncheck reads with -db file://... (index/db.json, index/modules.json,
# ID/<id>.json, each also gzipped). The database is built once per vulndb version into
# ~/.cache/shopmesh/vulndb; bump VULNDB_VERSION to pick up newer reports.
#
#   bash deploy/vulncheck.sh                  # symbol level: vulnerabilities the code actually calls
#   VULNCHECK_ARGS='-show verbose' bash deploy/vulncheck.sh   # also those only imported or required
#
# Exit status: 0 when govulncheck found nothing at the scan level asked for, 3 when it did (its own
# code), else 1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GOVULNCHECK_VERSION=${GOVULNCHECK_VERSION:-v1.9.0}
VULNDB_VERSION=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}
CACHE=${SHOPMESH_CACHE:-$HOME/.cache/shopmesh}/vulndb
DB=$CACHE/$VULNDB_VERSION
BIN=$ROOT/bin

# govulncheck, pinned, into ./bin like the other tools.
if ! "$BIN/govulncheck" -version 2>/dev/null | grep -qx "Scanner: govulncheck@$GOVULNCHECK_VERSION"; then
	echo "== install govulncheck $GOVULNCHECK_VERSION into $BIN"
	mkdir -p "$BIN"
	GOBIN=$BIN GOWORK=off go install "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION"
fi

# The database, once per vulndb version.
if [[ ! -f $DB/index/db.json ]]; then
	echo "== build the vulnerability database from golang.org/x/vulndb@$VULNDB_VERSION into $DB"
	mkdir -p "$CACHE/tools"
	GOBIN=$CACHE/tools GOWORK=off go install "golang.org/x/vulndb/cmd/indexdb@$VULNDB_VERSION"
	src=$(cd "$CACHE" && GOWORK=off go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[[ -d $src/data/osv ]] || { echo "vulncheck: no data/osv in $src" >&2; exit 1; }
	tmp=$(mktemp -d "$CACHE/build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	"$CACHE/tools/indexdb" -vulns "$src/data/osv" -out "$tmp/db"
	# The OSV files carry no "modified" time (the vulndb server takes it from git history, which a
	# module zip lacks), so indexdb writes the zero time; the snapshot's commit time is the honest one.
	ts=${VULNDB_VERSION#v0.0.0-}
	ts=${ts%%-*}
	modified="${ts:0:4}-${ts:4:2}-${ts:6:2}T${ts:8:2}:${ts:10:2}:${ts:12:2}Z"
	printf '{"modified":"%s"}' "$modified" >"$tmp/db/index/db.json"
	gzip -n -c "$tmp/db/index/db.json" >"$tmp/db/index/db.json.gz"
	rm -rf "$DB"
	mv "$tmp/db" "$DB"
	echo "   $(find "$DB/ID" -name '*.json' | wc -l) reports, last modified $modified"
fi

# Every module of go.work in one run: they share most dependencies, so one analysis costs much less
# than one per module. govulncheck wants to start in a module; go.work resolves the other patterns.
# Each trace starts at a function named package.func (gateway.main, rpcerr.Code), which tells the module.
mapfile -t dirs < <(cd "$ROOT" && go list -m -f '{{.Dir}}')
patterns=()
for d in "${dirs[@]}"; do patterns+=("$d/..."); done
echo "== govulncheck $GOVULNCHECK_VERSION, database golang.org/x/vulndb@$VULNDB_VERSION, $(go env GOVERSION)"
echo "   modules: ${dirs[*]#"$ROOT"/}"
rc=0
out=$(mktemp)
# shellcheck disable=SC2086 # VULNCHECK_ARGS is a list of flags
(cd "${dirs[0]}" && "$BIN/govulncheck" -db "file://$DB" ${VULNCHECK_ARGS:-} "${patterns[@]}") | tee "$out" || rc=${PIPESTATUS[0]}
case $rc in
0) echo "vulncheck: no vulnerability found" ;;
3)
	echo "vulncheck: vulnerabilities found (above; the Go standard library's are fixed by a newer Go)" >&2
	# VULNCHECK_ALLOW_STDLIB=1 (CI, while the toolchain here is the newest one can install): findings in
	# the standard library alone ("Found in: net/http@go1.26.8") pass; one in a module dependency fails.
	if [[ ${VULNCHECK_ALLOW_STDLIB:-} == 1 ]] && ! grep -E '^[[:space:]]*Found in: ' "$out" | grep -vq '@go[0-9]'; then
		echo "vulncheck: only the standard library is affected; allowed by VULNCHECK_ALLOW_STDLIB=1" >&2
		rc=0
	fi
	;;
*) echo "vulncheck: govulncheck failed ($rc)" >&2; rc=1 ;;
esac
rm -f "$out"
exit "$rc"
