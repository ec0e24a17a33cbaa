#!/usr/bin/env bash
# Smoke test of the single-node test cluster (deploy/k8s/cluster/cluster.sh), reusable by CI and by the
# k8s test harness. Runs as root:
#
#   1. cluster.sh up (unless a cluster is already running: then it is used and left running)
#   2. builds the FROM scratch image of ./echo, loads it (cluster.sh load)
#   3. a Deployment of 2 echo pods behind a NodePort Service, and a client pod, in namespace k8s-smoke
#   4. checks, without cluster DNS: client pod -> Service ClusterIP (kubectl exec), host -> ClusterIP,
#      host -> NodePort on the node address, `kubectl logs` shows the requests, `kubectl port-forward
#      svc/echo` on 127.0.0.1; with cluster DNS (when kube-dns exists): client pod -> echo.k8s-smoke.svc;
#      a pod cannot reach the host's default gateway (rejected by the cluster's forward chain)
#   5. deletes the namespace; cluster.sh down (when step 1 started the cluster, unless SMOKE_KEEP=1), then
#      checks that nothing is left: no process, mount, netns, link or iptables chain of the cluster.
#
# Env: SMOKE_KEEP=1 leave the cluster running; SMOKE_PORT=18081 the host port of the port-forward.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../../.." && pwd)
CLUSTER=$SCRIPT_DIR/cluster.sh
IMAGE=shopmesh-k8s-smoke/echo:1
NS=k8s-smoke
PORT=${SMOKE_PORT:-18081}
NODE_IP=10.250.0.1
TIMEOUT=120s

log() { printf '[smoke] %s\n' "$*" >&2; }
fail() {
	printf '[smoke] FAIL: %s\n' "$*" >&2
	exit 1
}

eval "$("$CLUSTER" env)"
started_cluster=0
pf_pid=""
tmp=$(mktemp -d)

diagnose() {
	log "diagnostics:"
	kubectl get nodes -o wide >&2 || true
	kubectl -n "$NS" get all -o wide >&2 || true
	kubectl -n "$NS" describe pods >&2 2>&1 | tail -n 60 || true
	kubectl -n "$NS" get events --sort-by=.lastTimestamp >&2 || true
}

finish() {
	local rc=$?
	if [[ -n $pf_pid ]]; then kill "$pf_pid" 2>/dev/null || true; fi
	if ((rc != 0)); then diagnose; fi
	if ((started_cluster)) && [[ ${SMOKE_KEEP:-0} != 1 ]]; then
		"$CLUSTER" down || rc=1
	else
		kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
	fi
	rm -rf "$tmp"
	if ((rc == 0)); then log "PASS"; else log "FAIL (exit $rc)"; fi
	exit "$rc"
}
trap finish EXIT

# retry WHAT CMD...: CMD until it succeeds, 60 s at most (a new endpoint takes a moment to be programmed).
retry() {
	local what=$1 deadline=$((SECONDS + 60))
	shift
	until "$@" >"$tmp/out" 2>&1; do
		((SECONDS < deadline)) || fail "$what: $(tail -n 5 "$tmp/out")"
		sleep 1
	done
	log "ok: $what: $(head -n 1 "$tmp/out")"
}

if "$CLUSTER" status >/dev/null 2>&1; then
	log "using the running cluster (left running)"
else
	t=$SECONDS
	"$CLUSTER" up
	started_cluster=1
	log "cluster up in $((SECONDS - t))s"
fi

log "building $IMAGE"
mkdir -p "$tmp/ctx"
cp "$SCRIPT_DIR/echo/Dockerfile" "$tmp/ctx/"
(cd "$REPO/deploy" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$tmp/ctx/echo" ./k8s/cluster/echo)
DOCKER_BUILDKIT=0 docker build -q --network none -t "$IMAGE" "$tmp/ctx" >"$tmp/build.log" 2>&1 ||
	fail "docker build $IMAGE: $(tail -n 5 "$tmp/build.log")"
"$CLUSTER" load "$IMAGE"

kubectl create namespace "$NS" >/dev/null
# A pod is refused until the namespace's default ServiceAccount exists (made by the controller-manager).
retry "namespace $NS has its default ServiceAccount" kubectl -n "$NS" get serviceaccount default -o name
kubectl apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
  namespace: $NS
spec:
  replicas: 2
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: echo
        image: $IMAGE
        imagePullPolicy: Never
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        ports:
        - {name: http, containerPort: 8080}
        readinessProbe:
          httpGet: {path: /ready, port: http}
          periodSeconds: 2
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: $NS
spec:
  type: NodePort
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: http}
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: $NS
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: client
    image: $IMAGE
    imagePullPolicy: Never
    args: [-addr, ":9090"]
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
EOF
kubectl -n "$NS" rollout status deploy/echo --timeout="$TIMEOUT" >/dev/null || fail "echo rollout"
kubectl -n "$NS" wait --for=condition=Ready pod/client --timeout="$TIMEOUT" >/dev/null || fail "client pod"
log "ok: 2 echo pods and a client pod Ready"

cluster_ip=$(kubectl -n "$NS" get svc echo -o jsonpath='{.spec.clusterIP}')
node_port=$(kubectl -n "$NS" get svc echo -o jsonpath='{.spec.ports[0].nodePort}')
[[ -n $cluster_ip && -n $node_port ]] || fail "Service echo has no ClusterIP or NodePort"

retry "pod -> ClusterIP $cluster_ip (kubectl exec)" kubectl -n "$NS" exec client -- /echo -get "http://$cluster_ip/"
retry "host -> ClusterIP $cluster_ip" curl -fsS -m 5 "http://$cluster_ip/"
retry "host -> NodePort $NODE_IP:$node_port" curl -fsS -m 5 "http://$NODE_IP:$node_port/"
retry "kubectl logs shows the requests" bash -c "kubectl -n $NS logs -l app=echo --prefix --tail=-1 | grep 'msg=request.*path=/ '"

kubectl -n "$NS" port-forward svc/echo "$PORT:80" --address 127.0.0.1 >"$tmp/pf.log" 2>&1 &
pf_pid=$!
retry "kubectl port-forward svc/echo 127.0.0.1:$PORT" curl -fsS -m 5 "http://127.0.0.1:$PORT/"
kill "$pf_pid" 2>/dev/null || true
wait "$pf_pid" 2>/dev/null || true
pf_pid=""

if kubectl -n kube-system get svc kube-dns >/dev/null 2>&1; then
	retry "pod -> echo.$NS.svc.cluster.local (cluster DNS)" \
		kubectl -n "$NS" exec client -- /echo -get "http://echo.$NS.svc.cluster.local/"
else
	log "skipped: cluster DNS (no kube-dns Service in kube-system)"
fi

# Pods talk only on their bridge: a connection to the host's default gateway is rejected by the
# cluster's SMK8S-FORWARD chain (its counters show it), not forwarded out of the machine.
rejected() { iptables -w -L SMK8S-FORWARD -v -x -n | awk 'NR > 2 {n += $1} END {print n + 0}'; }
gw=$(ip route show default | awk '{print $3; exit}')
if [[ -n $gw ]]; then
	before=$(rejected)
	if kubectl -n "$NS" exec client -- /echo -get "http://$gw/" -timeout 3s >"$tmp/out" 2>&1; then
		fail "a pod reached $gw, outside its bridge: $(cat "$tmp/out")"
	fi
	after=$(rejected)
	((after > before)) || fail "pod -> $gw failed, but not by the SMK8S-FORWARD chain: $(tail -n 2 "$tmp/out")"
	log "ok: pod -> $gw (outside the bridge) rejected ($((after - before)) packets)"
fi

kubectl delete namespace "$NS" --timeout="$TIMEOUT" >/dev/null || fail "delete namespace $NS"
log "ok: namespace $NS deleted"

if ((started_cluster)) && [[ ${SMOKE_KEEP:-0} != 1 ]]; then
	t=$SECONDS
	"$CLUSTER" down
	started_cluster=0
	log "cluster down in $((SECONDS - t))s"
	out=$("$CLUSTER" status) && fail "status after down: $out"
	[[ $out == "nothing left" ]] || fail "status after down: $out"
	if pgrep -af 'shopmesh-k8s' >"$tmp/p"; then fail "processes left: $(cat "$tmp/p")"; fi
	if grep shopmesh-k8s /proc/mounts >"$tmp/m"; then fail "mounts left: $(cat "$tmp/m")"; fi
	if ip -o link show | grep -E ': smk8s' >"$tmp/l"; then fail "links left: $(cat "$tmp/l")"; fi
	if iptables-save | grep -E '^:(KUBE-|CNI-|SMK8S-)' >"$tmp/c"; then fail "chains left: $(head -n 3 "$tmp/c")"; fi
	log "ok: nothing left after down"
fi
