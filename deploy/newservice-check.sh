#!/usr/bin/env bash
# make new-service-check (CI): `make new-service NAME=demo` in a throwaway copy of the repository (the
# files git tracks plus new, not ignored ones; bin/ linked), then in that copy: build, lint
# (golangci-lint with the repository's .golangci.yml: go vet, staticcheck, gofmt, ...) and test the new module, `make gen-check` (the deploy files are up to date with the service list),
# the compose and k8s checks (deploy/manifests), and a `make run` smoke: the whole suite started as
# `make run` does, the new service SERVING and its authorization policy enforced
# (deploy/cmd/newservice/smoke_test.go). The copy is removed at the end (KEEP=1 keeps it).
#
#   NAME=demo KEEP=1 bash deploy/newservice-check.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=${NAME:-demo}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/newservice-check.XXXXXX")
if [[ -z "${KEEP:-}" ]]; then trap 'rm -rf "$WORK"' EXIT; else echo "keeping the copy in $WORK"; fi

step() { echo; echo "== $*"; }

step "copy the repository to $WORK"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
	tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$WORK"
ln -s "$ROOT/bin" "$WORK/bin"

step "make new-service NAME=$NAME"
make -C "$WORK" --no-print-directory new-service NAME="$NAME"

step "build, golangci-lint and test services/$NAME"
(cd "$WORK/services/$NAME" && go build ./... && "$WORK/bin/golangci-lint" run -c "$WORK/.golangci.yml" ./... &&
	go test -count=1 ./...)

step "make gen-check"
make -C "$WORK" --no-print-directory gen-check

step "compose and k8s checks (deploy/manifests)"
(cd "$WORK/deploy" && go test -count=1 ./manifests/)

step "make run smoke: $NAME ready in the whole suite, its policy enforced"
LOG="$WORK/smoke.log"
if ! (cd "$WORK/deploy" && NEWSERVICE_ROOT="$WORK" NEWSERVICE_NAME="$NAME" \
	go test -count=1 -tags newservicecheck -run '^TestMakeRunSmoke$' -v ./cmd/newservice/ >"$LOG" 2>&1); then
	tail -n 150 "$LOG"
	exit 1
fi
grep -E '^(--- |ok)|smoke_test.go' "$LOG"

echo
echo "new-service-check: ok (make new-service NAME=$NAME builds, passes lint and its tests, is in every deploy file and starts ready in make run)"
