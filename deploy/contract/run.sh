#!/usr/bin/env bash
# make api-contract (CI phase "contract"): the gateway's OpenAPI document checked by schemathesis against
# the running suite. Installs schemathesis 4.32 into a cached virtualenv, starts `make run`'s stack
# (embedded NATS + Kafka, SQLite; no infra needed) on free ports in a scratch directory, waits for the
# gateway, mints a dev token (admin, customer cust-0001 of the dev seed) for the Authorization header, runs
# every operation with every check (coverage, fuzzing and stateful phases; OpenAPI links) and stops the
# stack. Any failure fails the run. Reports (JUnit, and the cases of any failure) go to CONTRACT_REPORT_DIR.
#
# Settings (environment): CONTRACT_MAX_EXAMPLES (cases per operation and phase, default 100),
# CONTRACT_TIMEOUT (seconds for the schemathesis run, default 300), CONTRACT_SEED (default: random; the
# seed is printed so a failure can be replayed), CONTRACT_REPORT_DIR (default .run/contract), KEEP=1 keeps
# the scratch directory (stack logs).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

ST_SPEC='schemathesis==4.32.*'
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/shopmesh
VENV=$CACHE/schemathesis-4.32
MAX_EXAMPLES=${CONTRACT_MAX_EXAMPLES:-100}
TIMEOUT=${CONTRACT_TIMEOUT:-300}
REPORT_DIR=${CONTRACT_REPORT_DIR:-$ROOT/.run/contract}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shopmesh-contract.XXXXXX")
STACK_PID=

cleanup() {
	if [[ -n $STACK_PID ]] && kill -0 "$STACK_PID" 2>/dev/null; then
		kill -TERM "$STACK_PID" 2>/dev/null || true
		wait "$STACK_PID" 2>/dev/null || true
	fi
	if [[ -z ${KEEP:-} ]]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

# 1. schemathesis, pinned, in a virtualenv kept between runs (pip's own cache is ~/.cache/pip).
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q 'version 4\.32\.'; then
	echo "== installing $ST_SPEC into $VENV"
	rm -rf "$VENV"
	mkdir -p "$CACHE"
	python3 -m venv "$VENV"
	"$VENV/bin/pip" install --quiet "$ST_SPEC"
fi
"$VENV/bin/schemathesis" --version

# 2. The stack of `make run`, on free ports, with its data, logs and binaries in the scratch directory.
echo "== starting the stack (logs in $WORK/run/logs)"
(cd deploy && go build -o "$WORK/shopmesh-dev" ./cmd/shopmesh-dev)
# The per-client rate limit is raised for this run: schemathesis sends hundreds of bad tokens from one
# address, which the gateway's bad-token throttle would rightly answer with 429 (tested in Go:
# TestBadTokensAreRateLimited) where the invalid-auth checks want to see the 401.
GATEWAY_RATE_LIMIT_RPS=100000 GATEWAY_RATE_LIMIT_BURST=100000 \
	"$WORK/shopmesh-dev" -root "$ROOT" -data "$WORK/data" -run-dir "$WORK/run" -bin "$WORK/bin" -quiet \
	-order-port 0 -inventory-port 0 -payment-port 0 -gateway-addr 127.0.0.1:0 \
	-nats-addr 127.0.0.1:0 -kafka-addr 127.0.0.1:0 >"$WORK/stack.log" 2>&1 &
STACK_PID=$!

URL=
for _ in $(seq 300); do
	if ! kill -0 "$STACK_PID" 2>/dev/null; then
		echo "the stack exited:"; tail -n 40 "$WORK/stack.log"; exit 1
	fi
	if [[ -z $URL && -s $WORK/run/stack.json ]]; then
		URL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("gateway_url", ""))' "$WORK/run/stack.json" 2>/dev/null || true)
	fi
	if [[ -n $URL ]] && curl -sf -o /dev/null "$URL/readyz"; then break; fi
	sleep 1
done
if [[ -z $URL ]] || ! curl -sf -o /dev/null "$URL/readyz"; then
	echo "the gateway did not become ready:"; tail -n 40 "$WORK/stack.log"; exit 1
fi
echo "gateway at $URL"

# 3. A dev token for the operations that need one (admin, so the stock import is reached too).
TOKEN=$(curl -sf -X POST "$URL/v1/dev/token" -H 'Content-Type: application/json' \
	-d '{"customer_id":"cust-0001","scopes":["admin"]}' |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

# 4. schemathesis: all operations, all checks; hooks.py teaches it the NDJSON body and x-unique-by.
mkdir -p "$REPORT_DIR"
seed=()
[[ -z ${CONTRACT_SEED:-} ]] || seed=(--seed "$CONTRACT_SEED")
echo "== schemathesis against $URL/openapi.json (max $MAX_EXAMPLES examples, timeout ${TIMEOUT}s)"
# From the report folder: schemathesis keeps its example database (.schemathesis/) in the working directory.
cd "$REPORT_DIR"
SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$ROOT/deploy/contract" \
	timeout "$TIMEOUT" "$VENV/bin/schemathesis" --no-color run "$URL/openapi.json" \
	--checks all -H "Authorization: Bearer $TOKEN" --max-examples "$MAX_EXAMPLES" "${seed[@]}" \
	--report junit --report-dir "$REPORT_DIR" --wait-for-schema 30
