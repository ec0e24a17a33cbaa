#!/usr/bin/env bash
# A single-node Kubernetes cluster on this machine, for tests (issue 21): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, a PRIVATE containerd, kubelet and kube-proxy as plain processes
# (no systemd), built by deploy/k8s/cluster/build.sh. Runs as root. See deploy/k8s/cluster/README.md.
#
#   cluster.sh up              start the cluster (builds the binaries and the pause image when missing,
#                              cleans what a crashed run left first), wait for the node to be Ready,
#                              offer local PersistentVolumes (default StorageClass "local"), load the images of addons/images.txt and apply addons/*.yaml. Idempotent:
#                              a running, healthy cluster is left as it is (addons re-applied); when
#                              only some components run, the others are started (state and pods kept);
#                              when none runs, what a crashed run left is removed and it starts empty.
#   cluster.sh down [--purge]  remove every pod and container, stop every process it started, unmount
#                              everything under its folders, delete the network namespaces, links and
#                              iptables chains it (or kube-proxy, the kubelet, CNI) created; then check
#                              that nothing is left (exit 1 and the list otherwise). Cluster state
#                              (etcd, kubelet) goes; certificates, tokens, kubeconfig and the imported
#                              images stay for the next `up`. --purge removes those too.
#   cluster.sh status [-v]     what runs and what is left (processes, mounts, netns, links, chains,
#                              cgroups; -v lists each); exit 0 when the cluster is up, 3 when nothing
#                              is left ("nothing left"), 1 otherwise
#   cluster.sh load IMAGE...   copy images from the Docker engine into the node's containerd
#                              (docker save | ctr import); an image whose id is already there is skipped
#   cluster.sh env             `export KUBECONFIG=… PATH=…` for this cluster (eval "$(cluster.sh env)")
#   cluster.sh kubectl ARGS…   kubectl against this cluster
#
# Layout (README.md): state, logs, certificates and the kubeconfig under
# $SHOPMESH_K8S_DIR (default <repo>/.run/k8s; kubeconfig <dir>/kubeconfig); node data under
# /var/lib/shopmesh-k8s, runtime under /run/shopmesh-k8s (containerd socket
# /run/shopmesh-k8s/containerd/containerd.sock). Node shopmesh-node, address 10.250.0.1/32 on the
# port-less bridge smk8s-node; pods 10.244.0.0/24 on bridge smk8s0; Services 10.96.0.0/16, cluster DNS
# 10.96.0.10 (kube-dns, from the addons), domain cluster.local. etcd 127.0.0.1:12379/12380; apiserver
# https://10.250.0.1:16443; kubelet 10.250.0.1:10250.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../../.." && pwd)
K8S_VERSION=${K8S_VERSION:-v1.37.2}
CACHE=${SHOPMESH_CACHE:-$HOME/.cache/shopmesh}
BIN=${SHOPMESH_K8S_BIN:-$CACHE/k8s-$K8S_VERSION/bin}
STATE=${SHOPMESH_K8S_DIR:-$REPO/.run/k8s}
CONFIG_DIR=$SCRIPT_DIR/config
ADDONS_DIR=$SCRIPT_DIR/addons
NODE_DIR=/var/lib/shopmesh-k8s
RUN_DIR=/run/shopmesh-k8s
SOCK=$RUN_DIR/containerd/containerd.sock
PKI=$STATE/pki
LOGS=$STATE/logs
PIDS=$STATE/pids
KUBECONFIG_FILE=$STATE/kubeconfig

NODE_NAME=shopmesh-node
NODE_IF=smk8s-node
NODE_IP=10.250.0.1
BRIDGE=smk8s0
POD_CIDR=10.244.0.0/24
POD_GW=10.244.0.1
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_IP=10.96.0.10
DOMAIN=cluster.local
ETCD_PORT=12379
ETCD_PEER_PORT=12380
API_PORT=16443
API_URL=https://$NODE_IP:$API_PORT
CNI_NET=shopmesh-k8s
PAUSE_IMAGE=${PAUSE_IMAGE:-registry.k8s.io/pause:3.6}
FILTER_CHAIN=SMK8S-FORWARD # pods talk only on their bridge
READY_TIMEOUT=${READY_TIMEOUT:-120} # seconds, per step
PV_COUNT=${PV_COUNT:-12}            # local PersistentVolumes offered by the default StorageClass
STORAGE_CLASS=local
LOCK=/run/shopmesh-k8s.lock

# Start order; down stops them in reverse.
COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

log() { printf '[k8s] %3ds %s\n' "$SECONDS" "$*" >&2; }
die() {
	printf '[k8s] ERROR: %s\n' "$*" >&2
	exit 1
}

# ---------------------------------------------------------------------------------------------------
# processes

exe_of() {
	case "$1" in
	containerd) command -v containerd ;;
	*) echo "$BIN/$1" ;;
	esac
}

# pid_of NAME: the pid of the running component NAME started by this script (pidfile + same executable).
pid_of() {
	local name=$1 pid exe
	[[ -f $PIDS/$name.pid ]] || return 1
	pid=$(<"$PIDS/$name.pid")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	[[ ${exe% (deleted)} == "$(exe_of "$name")" ]] || return 1
	echo "$pid"
}

# our_pids: every process of ours, pidfile or not (a crashed run may have lost its pidfiles): the
# components by executable (containerd by its config path), and the shims of our containerd.
our_pids() {
	local dir exe name args
	while IFS=$'\t' read -r dir exe; do
		exe=${exe% (deleted)}
		case "$exe" in
		"$BIN"/kubectl) continue ;;
		"$BIN"/*)
			name=${exe##*/}
			[[ " ${COMPONENTS[*]} " == *" $name "* ]] || continue
			;;
		*/containerd | */containerd-shim-runc-v2)
			mapfile -d '' args <"$dir/cmdline" 2>/dev/null || continue
			[[ " ${args[*]} " == *"$RUN_DIR/"* || " ${args[*]} " == *"$STATE/containerd.toml"* ]] || continue
			;;
		*) continue ;;
		esac
		echo "${dir#/proc/}"
	done < <(find /proc -mindepth 2 -maxdepth 2 -name exe -printf '%h\t%l\n' 2>/dev/null)
}

our_shims() {
	local pid
	for pid in $(our_pids); do
		[[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */containerd-shim-runc-v2 ]] && echo "$pid"
	done
	return 0
}

describe_pid() {
	local pid=$1
	printf '%s %s\n' "$pid" "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-160)"
}

start() {
	local name=$1
	shift
	mkdir -p "$LOGS" "$PIDS"
	# setsid: the cluster outlives this script and the shell or make that ran it.
	# 9>&-: the daemons must not inherit the lock of this script (see main).
	setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
	echo $! >"$PIDS/$name.pid"
	log "started $name (pid $!, log $LOGS/$name.log)"
}

# stop_pid PID [TIMEOUT]: TERM, wait, then KILL.
stop_pid() {
	local pid=$1 timeout=${2:-20} deadline
	kill -TERM "$pid" 2>/dev/null || return 0
	deadline=$((SECONDS + timeout))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.2
			return 0
		fi
		sleep 0.1
	done
}

# stop_components NAME...: TERM them all at once, wait for each (KILL after 20 s).
stop_components() {
	local name pid pids=() names=()
	for name in "$@"; do
		if pid=$(pid_of "$name"); then
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
			names+=("$name")
		fi
	done
	((${#pids[@]} == 0)) || log "stopping ${names[*]}"
	for pid in "${pids[@]}"; do stop_pid "$pid" 20; done
	for name in "$@"; do rm -f "$PIDS/$name.pid"; done
}

# wait_for WHAT CMD...: poll CMD until it succeeds, READY_TIMEOUT at most.
wait_for() {
	local what=$1 deadline=$((SECONDS + READY_TIMEOUT))
	shift
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "$what not ready within ${READY_TIMEOUT}s (logs in $LOGS)"
		sleep 0.5
	done
}

# ---------------------------------------------------------------------------------------------------
# prerequisites, certificates, tokens, kubeconfigs

need_root() { [[ $(id -u) == 0 ]] || die "the cluster needs root (network, mounts, containerd)"; }

ensure_host_tools() {
	local missing=() c
	for c in containerd ctr runc containerd-shim-runc-v2 iptables ip openssl docker jq conntrack; do
		command -v "$c" >/dev/null 2>&1 || missing+=("$c")
	done
	[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/portmap && -x /usr/lib/cni/loopback ]] ||
		missing+=(containernetworking-plugins)
	((${#missing[@]} == 0)) && return 0
	log "installing Debian packages for: ${missing[*]}"
	local pkgs=(containernetworking-plugins conntrack jq)
	command -v containerd >/dev/null 2>&1 || pkgs+=(docker.io)
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" >"$STATE/apt.log" 2>&1; then
		DEBIAN_FRONTEND=noninteractive apt-get update >>"$STATE/apt.log" 2>&1 || true
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" >>"$STATE/apt.log" 2>&1 ||
			die "apt-get install ${pkgs[*]} failed: see $STATE/apt.log"
	fi
}

ensure_binaries() {
	local b
	for b in "${COMPONENTS[@]:1}" kubectl; do
		[[ -x $BIN/$b ]] && continue
		log "binaries missing in $BIN: running build.sh (cold: ~7 min)"
		K8S_VERSION=$K8S_VERSION "$SCRIPT_DIR/build.sh"
		return 0
	done
}

# cert NAME CN ORG SAN EKU: an ECDSA P-256 key pair signed by the cluster CA (kept once made).
cert() {
	local name=$1 cn=$2 org=$3 san=$4 eku=$5 subj ext
	[[ -s $PKI/$name.crt && -s $PKI/$name.key ]] && return 0
	subj="/CN=$cn"
	[[ -n $org ]] && subj="/O=$org$subj"
	ext=$PKI/$name.ext
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=$eku"
		[[ -n $san ]] && echo "subjectAltName=$san"
	} >"$ext"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$name.key" 2>/dev/null
	openssl req -new -key "$PKI/$name.key" -subj "$subj" 2>/dev/null |
		openssl x509 -req -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 3650 -sha256 \
			-extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
	rm -f "$ext"
}

ensure_pki() {
	mkdir -p "$PKI"
	chmod 0700 "$PKI"
	umask 077
	if [[ ! -s $PKI/ca.crt || ! -s $PKI/ca.key ]]; then
		log "making the cluster CA, certificates, service-account key and tokens in $PKI"
		rm -f "$PKI"/*.crt "$PKI"/*.key
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/ca.key" 2>/dev/null
		openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=shopmesh-k8s-ca" -days 3650 -sha256 \
			-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
			-out "$PKI/ca.crt" 2>/dev/null
	fi
	cert apiserver kube-apiserver "" \
		"IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$DOMAIN" \
		serverAuth
	cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters "" clientAuth
	cert kubelet "$NODE_NAME" "" "IP:$NODE_IP,DNS:$NODE_NAME" serverAuth
	# The aggregation layer (an APIService such as metrics-server) authenticates the apiserver by this one.
	cert front-proxy-client front-proxy-client "" "" clientAuth
	[[ -s $PKI/sa.key ]] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
	[[ -s $PKI/sa.pub ]] || openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
	if [[ ! -s $PKI/tokens.csv ]]; then
		local tmp=$PKI/tokens.csv.tmp
		# token,user,uid,"groups": the identities the default RBAC policy and the Node authorizer know.
		{
			printf '%s,admin,admin,"system:masters"\n' "$(openssl rand -hex 32)"
			printf '%s,system:node:%s,kubelet,"system:nodes"\n' "$(openssl rand -hex 32)" "$NODE_NAME"
			printf '%s,system:kube-proxy,kube-proxy\n' "$(openssl rand -hex 32)"
			printf '%s,system:kube-controller-manager,kube-controller-manager\n' "$(openssl rand -hex 32)"
			printf '%s,system:kube-scheduler,kube-scheduler\n' "$(openssl rand -hex 32)"
		} >"$tmp"
		mv "$tmp" "$PKI/tokens.csv"
		rm -f "$KUBECONFIG_FILE" "$STATE"/kubeconfigs/*.kubeconfig
	fi
	umask 022
}

token_of() { awk -F, -v u="$1" '$2 == u {print $1}' "$PKI/tokens.csv"; }

# kubeconfig FILE USER: a kubeconfig for USER's token (0600).
kubeconfig() {
	local file=$1 user=$2 token ca
	[[ -s $file ]] && grep -q "server: $API_URL\$" "$file" && return 0
	token=$(token_of "$user")
	[[ -n $token ]] || die "no token for $user in $PKI/tokens.csv"
	ca=$(base64 -w0 <"$PKI/ca.crt")
	mkdir -p "$(dirname "$file")"
	(
		umask 077
		cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: shopmesh-k8s
  cluster:
    server: $API_URL
    certificate-authority-data: $ca
users:
- name: $user
  user:
    token: $token
contexts:
- name: shopmesh-k8s
  context:
    cluster: shopmesh-k8s
    user: $user
current-context: shopmesh-k8s
EOF
	)
	mv "$file.tmp" "$file"
}

ensure_kubeconfigs() {
	kubeconfig "$KUBECONFIG_FILE" admin
	kubeconfig "$STATE/kubeconfigs/kubelet.kubeconfig" "system:node:$NODE_NAME"
	kubeconfig "$STATE/kubeconfigs/kube-proxy.kubeconfig" system:kube-proxy
	kubeconfig "$STATE/kubeconfigs/kube-controller-manager.kubeconfig" system:kube-controller-manager
	kubeconfig "$STATE/kubeconfigs/kube-scheduler.kubeconfig" system:kube-scheduler
}

# render TEMPLATE OUT: the @VARS@ of a config template filled in.
render() {
	sed -e "s#@NODE_DIR@#$NODE_DIR#g" -e "s#@RUN_DIR@#$RUN_DIR#g" -e "s#@SOCK@#$SOCK#g" \
		-e "s#@STATE@#$STATE#g" -e "s#@PKI@#$PKI#g" -e "s#@PAUSE_IMAGE@#$PAUSE_IMAGE#g" \
		-e "s#@CNI_NET@#$CNI_NET#g" -e "s#@BRIDGE@#$BRIDGE#g" -e "s#@POD_CIDR@#$POD_CIDR#g" \
		-e "s#@POD_GW@#$POD_GW#g" -e "s#@NODE_IP@#$NODE_IP#g" -e "s#@NODE_IF@#$NODE_IF#g" \
		-e "s#@NODE_NAME@#$NODE_NAME#g" -e "s#@DNS_IP@#$DNS_IP#g" -e "s#@DOMAIN@#$DOMAIN#g" \
		"$1" >"$2.tmp"
	if grep -q '@[A-Z_]*@' "$2.tmp"; then
		die "unrendered placeholder in $2: $(grep -o '@[A-Z_]*@' "$2.tmp" | sort -u | tr '\n' ' ')"
	fi
	mv "$2.tmp" "$2"
}

kctl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=30s "$@"; }

# ---------------------------------------------------------------------------------------------------
# network

ensure_network() {
	if ! ip link show "$NODE_IF" >/dev/null 2>&1; then
		# A bridge with no ports stands in for a dummy interface (this kernel has no dummy driver): the
		# node's address, reachable from this machine and its pods, routed nowhere else.
		ip link add "$NODE_IF" type bridge
	fi
	ip addr replace "$NODE_IP/32" dev "$NODE_IF"
	ip link set "$NODE_IF" up
	if [[ $(cat /proc/sys/net/ipv4/ip_forward) != 1 ]]; then
		log "setting net.ipv4.ip_forward=1 (Services need it)"
		echo 1 >/proc/sys/net/ipv4/ip_forward
	fi
	if [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables && $(cat /proc/sys/net/bridge/bridge-nf-call-iptables) != 1 ]]; then
		log "setting net.bridge.bridge-nf-call-iptables=1 (pod-to-Service on one bridge needs it)"
		echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
	fi
	# Pods talk only on their bridge: nothing forwarded between smk8s0 and any other interface (the node
	# address and Services are local to this machine, so they are not forwarding).
	iptables -w -N "$FILTER_CHAIN" 2>/dev/null || iptables -w -F "$FILTER_CHAIN"
	iptables -w -A "$FILTER_CHAIN" -i "$BRIDGE" ! -o "$BRIDGE" -j REJECT
	iptables -w -A "$FILTER_CHAIN" ! -i "$BRIDGE" -o "$BRIDGE" -j REJECT
	iptables -w -C FORWARD -j "$FILTER_CHAIN" 2>/dev/null || iptables -w -I FORWARD 1 -j "$FILTER_CHAIN"
}

OUR_CHAINS='^(KUBE-|CNI-|SMK8S-)'

# our_chains: "FAMILY TABLE COUNT" for each table holding chains the cluster made (kube-proxy, the kubelet,
# CNI plugins, this script), from one iptables-save per family.
our_chains() {
	local cmd
	for cmd in iptables ip6tables; do
		command -v "$cmd-save" >/dev/null 2>&1 || continue
		"$cmd-save" 2>/dev/null | awk -v fam="$cmd" -v re="$OUR_CHAINS" '
			/^\*/ { table = substr($0, 2) }
			/^:/ { if (substr($1, 2) ~ re) n[table]++ }
			END { for (t in n) print fam, t, n[t] }'
	done
}

# cleanup_iptables: one iptables-restore --noflush per family deletes the rules of built-in (or foreign)
# chains that jump to ours, then flushes and deletes ours. Docker's chains are never touched.
cleanup_iptables() {
	local cmd script
	for cmd in iptables ip6tables; do
		command -v "$cmd-save" >/dev/null 2>&1 || continue
		script=$("$cmd-save" 2>/dev/null | awk -v re="$OUR_CHAINS" '
			/^\*/ { table = $0; nd = 0; nc = 0; next }
			/^:/ { c = substr($1, 2); if (c ~ re) chains[++nc] = c; next }
			/^-A / {
				if ($2 ~ re) next
				for (i = 3; i < NF; i++) if ($i == "-j" && $(i + 1) ~ re) { sub(/^-A /, "-D "); dels[++nd] = $0; break }
				next
			}
			/^COMMIT/ {
				if (nd + nc == 0) next
				print table
				for (i = 1; i <= nd; i++) print dels[i]
				for (i = 1; i <= nc; i++) print "-F " chains[i]
				for (i = 1; i <= nc; i++) print "-X " chains[i]
				print "COMMIT"
			}')
		[[ -n $script ]] || continue
		"$cmd-restore" -w --noflush <<<"$script" || log "WARNING: $cmd-restore of the cleanup failed"
	done
	if command -v conntrack >/dev/null 2>&1; then
		conntrack -D -s "$POD_CIDR" >/dev/null 2>&1 || true
		conntrack -D -d "$POD_CIDR" >/dev/null 2>&1 || true
		conntrack -D -d "$SERVICE_CIDR" >/dev/null 2>&1 || true
	fi
}

# our_veths: the host ends of the pods' veth pairs (attached to our bridge).
our_veths() { ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//'; }

cleanup_network() {
	local v
	for v in $(our_veths); do ip link del "$v" 2>/dev/null || true; done
	ip link del "$BRIDGE" 2>/dev/null || true
	ip link del "$NODE_IF" 2>/dev/null || true
	cleanup_iptables
	rm -f /var/lib/cni/results/"$CNI_NET"-* 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------------
# mounts, cgroups, files

our_mounts() {
	awk -v a="$NODE_DIR" -v b="$RUN_DIR" '
		{ gsub(/\\040/, " ", $2) }
		$2 == a || index($2, a "/") == 1 || $2 == b || index($2, b "/") == 1 { print $2 }' /proc/mounts |
		awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-
}

cleanup_mounts() {
	local m
	for _ in 1 2 3; do
		while IFS= read -r m; do
			[[ -n $m ]] || continue
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
		done < <(our_mounts)
		[[ -z $(our_mounts) ]] && return 0
		sleep 0.3
	done
}

# our_netns: network namespaces containerd made (bind-mounted files under its state, see containerd.toml).
our_netns() {
	local d=$RUN_DIR/containerd/io.containerd.grpc.v1.cri/netns
	[[ -d $d ]] && find "$d" -mindepth 1 -maxdepth 1 2>/dev/null
	return 0
}

# our_cgroups: the cgroups runc made for the pods (cgroup v1 here: one tree per controller).
our_cgroups() {
	local d
	for d in /sys/fs/cgroup/*/k8s.io /sys/fs/cgroup/k8s.io; do
		[[ -d $d ]] && echo "$d"
	done
	return 0
}

# our_container_pids: processes in the pods' cgroups (a container whose shim was killed lives on there).
our_container_pids() {
	local d
	for d in $(our_cgroups); do
		find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
	done | sort -un
}

kill_container_pids() {
	local pids deadline=$((SECONDS + 10))
	pids=$(our_container_pids)
	[[ -n $pids ]] || return 0
	log "killing $(wc -w <<<"$pids") container processes left in the pods' cgroups"
	# shellcheck disable=SC2086 # one pid per word
	kill -KILL $pids 2>/dev/null || true
	while [[ -n $(our_container_pids) ]] && ((SECONDS < deadline)); do sleep 0.2; done
}

cleanup_cgroups() {
	local d
	for _ in 1 2 3 4 5; do
		for d in $(our_cgroups); do
			find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
		done
		[[ -z $(our_cgroups) ]] && return 0
		sleep 0.5 # a killed process leaves its cgroup a moment later
	done
}

cleanup_files() {
	local l
	# Never rm -rf through a mount (a pod's subPath bind-mounts a host folder under the kubelet root).
	[[ -z $(our_mounts) ]] || die "still mounted, not deleting: $(our_mounts | tr '\n' ' ')"
	for l in /var/log/containers/*.log; do
		[[ -L $l && $(readlink "$l") == "$NODE_DIR"/* ]] && rm -f "$l"
	done
	# The kubelet's device-plugin socket and checkpoint have a fixed folder, whatever its root dir.
	rm -f /var/lib/kubelet/device-plugins/kubelet.sock /var/lib/kubelet/device-plugins/kubelet_internal_checkpoint
	rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
	rm -rf "$RUN_DIR" "$NODE_DIR/kubelet" "$NODE_DIR/pod-logs" "$NODE_DIR/cni" "$NODE_DIR/volume-plugins" "$NODE_DIR/volumes" \
		"$STATE/etcd" "$PIDS"
}

# ---------------------------------------------------------------------------------------------------
# containerd

ctr_() { ctr -a "$SOCK" -n k8s.io "$@"; }

containerd_answers() { ctr -a "$SOCK" version >/dev/null 2>&1; }

start_containerd() {
	pid_of containerd >/dev/null && containerd_answers && return 0
	mkdir -p "$RUN_DIR/containerd" "$RUN_DIR/cni/net.d" "$RUN_DIR/runc" "$NODE_DIR/containerd" "$NODE_DIR/cni/networks"
	render "$CONFIG_DIR/containerd.toml.in" "$STATE/containerd.toml"
	render "$CONFIG_DIR/cni.conflist.in" "$RUN_DIR/cni/net.d/10-$CNI_NET.conflist"
	start containerd containerd --config "$STATE/containerd.toml"
	wait_for containerd containerd_answers
}

# remove_containers: kill and delete every container of the k8s.io namespace (pods and sandboxes).
remove_containers() {
	local ids id
	ids=$(ctr_ containers ls -q 2>/dev/null) || return 0
	[[ -n $ids ]] || return 0
	log "removing $(wc -w <<<"$ids") containers"
	for id in $ids; do ctr_ tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true; done
	for id in $ids; do
		ctr_ tasks rm -f "$id" >/dev/null 2>&1 || true
		ctr_ containers rm "$id" >/dev/null 2>&1 || true
		# libcni's cache of the sandbox's networks (the pod's and containerd's loopback)
		rm -f /var/lib/cni/results/*-"$id"-* 2>/dev/null || true
	done
}

# ---------------------------------------------------------------------------------------------------
# images

# image_loaded IMAGE ID: containerd has IMAGE with config (docker image id) ID.
image_loaded() {
	local image=$1 id=$2 ref digest doc cfg
	ref=$(docker_ref "$image")
	digest=$(ctr_ images ls "name==$ref" 2>/dev/null | awk 'NR == 2 {print $3}')
	[[ -n $digest ]] || return 1
	doc=$(ctr_ content get "$digest" 2>/dev/null) || return 1
	cfg=$(jq -r '.config.digest // empty' <<<"$doc" 2>/dev/null) || return 1
	if [[ -z $cfg ]]; then # an index: its first manifest
		digest=$(jq -r '.manifests[0].digest // empty' <<<"$doc" 2>/dev/null) || return 1
		[[ -n $digest ]] || return 1
		cfg=$(ctr_ content get "$digest" 2>/dev/null | jq -r '.config.digest // empty' 2>/dev/null) || return 1
	fi
	[[ $cfg == "$id" ]]
}

# docker_ref IMAGE: the fully qualified name containerd stores (nats:2 -> docker.io/library/nats:2).
docker_ref() {
	local ref=$1 first=${1%%/*}
	if [[ $ref != */* ]]; then
		ref=docker.io/library/$ref
	elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then
		ref=docker.io/$ref
	fi
	[[ ${ref##*/} == *:* || $ref == *@* ]] || ref=$ref:latest
	echo "$ref"
}

load_images() {
	local image id started
	for image in "$@"; do
		id=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null) || die "image $image is not in the Docker engine (build it first)"
		if image_loaded "$image" "$id"; then
			log "image $image already loaded"
			continue
		fi
		started=$SECONDS
		docker save "$image" | ctr_ images import - >/dev/null ||
			die "importing $image into the node's containerd failed"
		image_loaded "$image" "$id" || die "$image imported but not found as $(docker_ref "$image") with id $id"
		log "image $image loaded ($((SECONDS - started))s)"
	done
}

# ensure_pause_image: the sandbox image, built from ./pause when the engine lacks it or it is stale.
ensure_pause_image() {
	local hash ctx
	if ! docker info >/dev/null 2>&1 && [[ -n $(ctr_ images ls -q "name==$PAUSE_IMAGE" 2>/dev/null) ]]; then
		log "no Docker engine: using the pause image containerd already has"
		return 0
	fi
	hash=$(cat "$SCRIPT_DIR/pause/main.go" "$SCRIPT_DIR/pause/Dockerfile" | sha256sum | cut -c1-16)
	if [[ $(docker image inspect -f '{{index .Config.Labels "org.shopmesh.pause.hash"}}' "$PAUSE_IMAGE" 2>/dev/null) != "$hash" ]]; then
		log "building the pause image $PAUSE_IMAGE"
		ctx=$(mktemp -d)
		cp "$SCRIPT_DIR/pause/Dockerfile" "$ctx/"
		(cd "$REPO/deploy" && CGO_ENABLED=0 GOFLAGS=-trimpath go build -ldflags '-s -w' -o "$ctx/pause" ./k8s/cluster/pause)
		DOCKER_BUILDKIT=0 docker build -q --network none --label "org.shopmesh.pause.hash=$hash" -t "$PAUSE_IMAGE" "$ctx" >"$ctx/build.log" 2>&1 ||
			die "docker build of the pause image failed: $(tail -n 5 "$ctx/build.log")"
		rm -rf "$ctx"
	fi
	load_images "$PAUSE_IMAGE"
}

addon_images() {
	[[ -f $ADDONS_DIR/images.txt ]] || return 0
	sed -e 's/#.*//' -e 's/[[:space:]]//g' "$ADDONS_DIR/images.txt" | grep -v '^$' || true
}

apply_addons() {
	local images=() f
	mapfile -t images < <(addon_images)
	((${#images[@]} == 0)) || load_images "${images[@]}"
	for f in "$ADDONS_DIR"/*.yaml; do
		[[ -f $f ]] || continue
		log "applying addon ${f#"$REPO"/}"
		kctl apply --server-side --force-conflicts -f "$f" >/dev/null
	done
}

# ---------------------------------------------------------------------------------------------------
# control plane and node

api_ready() {
	[[ -s $PKI/tokens.csv ]] || return 1
	[[ $(curl -sS -m 5 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(token_of admin)" "$API_URL/readyz" 2>/dev/null) == ok ]]
}
etcd_ready() { [[ $(curl -fsS -m 2 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null) == *'"health":"true"'* ]]; }
node_ready() {
	[[ $(kctl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}
# The controller-manager works: the default namespace has its ServiceAccount (pods are refused before).
controllers_ready() { kctl -n default get serviceaccount default >/dev/null 2>&1; }
kubelet_healthy() { curl -fsS -m 2 http://127.0.0.1:10248/healthz >/dev/null 2>&1; }

start_etcd() {
	pid_of etcd >/dev/null && return 0
	mkdir -p "$STATE/etcd"
	chmod 0700 "$STATE/etcd"
	# --unsafe-no-fsync: a throw-away test cluster on a shared disk; etcd is not what is under test.
	start etcd "$BIN/etcd" --name shopmesh-k8s --data-dir "$STATE/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "shopmesh-k8s=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
		--unsafe-no-fsync --log-level warn
	wait_for etcd etcd_ready
}

start_apiserver() {
	pid_of kube-apiserver >/dev/null && return 0
	start kube-apiserver "$BIN/kube-apiserver" \
		--etcd-servers "http://127.0.0.1:$ETCD_PORT" \
		--bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$API_PORT" \
		--tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
		--client-ca-file "$PKI/ca.crt" --token-auth-file "$PKI/tokens.csv" \
		--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
		--service-cluster-ip-range "$SERVICE_CIDR" \
		--service-account-issuer "https://kubernetes.default.svc.$DOMAIN" \
		--service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
		--kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
		--kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
		--kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
		--requestheader-client-ca-file "$PKI/ca.crt" --requestheader-allowed-names front-proxy-client \
		--requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
		--requestheader-extra-headers-prefix X-Remote-Extra- \
		--proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key" \
		--enable-aggregator-routing=true \
		--allow-privileged=true --profiling=false --v=1
	wait_for kube-apiserver api_ready
}

start_controllers() {
	pid_of kube-controller-manager >/dev/null ||
		start kube-controller-manager "$BIN/kube-controller-manager" \
			--kubeconfig "$STATE/kubeconfigs/kube-controller-manager.kubeconfig" \
			--authentication-kubeconfig "$STATE/kubeconfigs/kube-controller-manager.kubeconfig" \
			--authorization-kubeconfig "$STATE/kubeconfigs/kube-controller-manager.kubeconfig" \
			--bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials \
			--service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
			--cluster-cidr "$POD_CIDR" --allocate-node-cidrs --node-cidr-mask-size 24 \
			--service-cluster-ip-range "$SERVICE_CIDR" --profiling=false --v=1
	pid_of kube-scheduler >/dev/null ||
		start kube-scheduler "$BIN/kube-scheduler" \
			--kubeconfig "$STATE/kubeconfigs/kube-scheduler.kubeconfig" \
			--authentication-kubeconfig "$STATE/kubeconfigs/kube-scheduler.kubeconfig" \
			--authorization-kubeconfig "$STATE/kubeconfigs/kube-scheduler.kubeconfig" \
			--bind-address 127.0.0.1 --leader-elect=false --profiling=false --v=1
}

start_node() {
	mkdir -p "$NODE_DIR/kubelet" "$NODE_DIR/pod-logs" "$NODE_DIR/volume-plugins"
	render "$CONFIG_DIR/kubelet.yaml.in" "$STATE/kubelet.yaml"
	render "$CONFIG_DIR/kube-proxy.yaml.in" "$STATE/kube-proxy.yaml"
	pid_of kubelet >/dev/null ||
		start kubelet "$BIN/kubelet" --config "$STATE/kubelet.yaml" \
			--kubeconfig "$STATE/kubeconfigs/kubelet.kubeconfig" --root-dir "$NODE_DIR/kubelet" \
			--hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1
	pid_of kube-proxy >/dev/null ||
		start kube-proxy "$BIN/kube-proxy" --config "$STATE/kube-proxy.yaml" --v=1
	wait_for kubelet kubelet_healthy
	wait_for "node $NODE_NAME Ready" node_ready
	wait_for "kube-controller-manager (ServiceAccount default/default)" controllers_ready
}

# ensure_storage: the default StorageClass "local" (no provisioner, WaitForFirstConsumer) and PV_COUNT
# local PersistentVolumes on folders under $NODE_DIR/volumes (a local volume takes the pod's fsGroup, which
# the dev overlay's non-root StatefulSets need). A volume whose claim was deleted (Released) or that
# failed is wiped and offered again.
ensure_storage() {
	local name i dir
	for name in $(kctl get pv -l shopmesh-k8s/volume=local \
		-o jsonpath='{range .items[?(@.status.phase=="Released")]}{.metadata.name}{"\n"}{end}{range .items[?(@.status.phase=="Failed")]}{.metadata.name}{"\n"}{end}'); do
		# Released: the claim is gone, and the claim outlives every pod that used it (pvc-protection).
		dir=$NODE_DIR/volumes/$name
		log "recycling volume $name (its claim is gone)"
		kctl delete pv "$name" --wait=true >/dev/null
		rm -rf "${dir:?}"
	done
	{
		cat <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $STORAGE_CLASS
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
EOF
		for i in $(seq -w 1 "$PV_COUNT"); do
			dir=$NODE_DIR/volumes/local-$i
			mkdir -p "$dir"
			cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: local-$i
  labels:
    shopmesh-k8s/volume: local
spec:
  capacity:
    storage: 20Gi
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: $STORAGE_CLASS
  local:
    path: $dir
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}
EOF
		done
	} | kctl apply --server-side --force-conflicts -f - >/dev/null
}

all_running() {
	local c
	for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
	api_ready
}

# leftovers: anything of ours on the machine (processes, mounts, netns, links, chains, cgroups).
leftovers() {
	[[ -n $(our_pids) || -n $(our_container_pids) || -n $(our_mounts) || -n $(our_netns) || -n $(our_veths) || -n $(our_cgroups) ]] && return 0
	[[ -S /var/lib/kubelet/device-plugins/kubelet.sock ]] && return 0
	ip link show "$BRIDGE" >/dev/null 2>&1 && return 0
	ip link show "$NODE_IF" >/dev/null 2>&1 && return 0
	[[ -n $(our_chains) ]]
}

cmd_up() {
	need_root
	local started=$SECONDS
	mkdir -p "$STATE"
	ensure_host_tools
	ensure_binaries
	if all_running; then
		log "cluster already running"
		node_ready || wait_for "node $NODE_NAME Ready" node_ready
		ensure_storage
		apply_addons
		log "up (already running): export KUBECONFIG=$KUBECONFIG_FILE"
		return 0
	fi
	local c fresh=1
	for c in "${COMPONENTS[@]}"; do
		if pid_of "$c" >/dev/null; then fresh=0; fi
	done
	if ((fresh)); then
		# Nothing of ours runs: whatever a crashed run left goes, and the cluster starts empty.
		if leftovers; then
			log "cleaning what an earlier run left"
			teardown
		fi
		if [[ -d $LOGS ]]; then
			rm -rf "$LOGS.prev"
			mv "$LOGS" "$LOGS.prev"
		fi
	else
		# Some components run: start the others, keeping the cluster's state and its pods.
		log "repairing: starting the components that are not running"
	fi
	mkdir -p "$LOGS" "$PIDS"
	ensure_pki
	ensure_kubeconfigs
	ensure_network
	start_containerd
	if ((fresh)); then remove_containers; fi # stale records of a crashed run
	ensure_pause_image
	start_etcd
	start_apiserver
	start_controllers
	start_node
	ensure_storage
	apply_addons
	log "up in $((SECONDS - started))s: export KUBECONFIG=$KUBECONFIG_FILE (or eval \"\$($0 env)\")"
}

# teardown: everything but certificates, tokens, kubeconfigs and images.
teardown() {
	local pid
	# The control loops first (nothing recreates pods), then the node agents (nothing restarts containers).
	stop_components kube-controller-manager kube-scheduler kubelet kube-proxy
	# containerd reattaches to the shims a crashed run left, so it can remove their containers; without
	# shims, stale container records are removed by the next `up` before the kubelet starts.
	if ! containerd_answers && [[ -n $(our_shims) ]]; then
		(start_containerd) || true
	fi
	if containerd_answers; then remove_containers; fi
	stop_components kube-apiserver containerd
	stop_components etcd
	for pid in $(our_pids); do
		log "stopping leftover process $(describe_pid "$pid")"
		stop_pid "$pid" 10
	done
	kill_container_pids
	cleanup_mounts
	cleanup_network
	cleanup_cgroups
	cleanup_files
}

cmd_down() {
	need_root
	local purge=0 started=$SECONDS
	[[ ${1:-} == --purge ]] && purge=1
	teardown
	if ((purge)); then
		log "purging images, certificates, tokens and kubeconfigs"
		rm -rf "$NODE_DIR" "$STATE"
	fi
	if leftovers; then
		cmd_status >&2 || true
		die "down: something is left (above)"
	fi
	log "down in $((SECONDS - started))s: nothing left"
}

# cmd_status [-v]: one line per kind of thing of ours that exists (-v: every mount, netns, veth, cgroup).
cmd_status() {
	local verbose=0 found=0 pid c n table cmd
	[[ ${1:-} == -v ]] && verbose=1
	for c in "${COMPONENTS[@]}"; do
		if pid=$(pid_of "$c"); then
			echo "process $c pid $pid"
			found=1
		fi
	done
	for pid in $(our_pids); do
		for c in "${COMPONENTS[@]}"; do
			if [[ $(pid_of "$c" 2>/dev/null) == "$pid" ]]; then continue 2; fi
		done
		if [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */containerd-shim-runc-v2 ]]; then
			echo "process containerd-shim pid $pid (a pod's)"
		else
			echo "process (no pidfile) $(describe_pid "$pid")"
		fi
		found=1
	done
	# status_items KIND ITEMS: "KIND: N" (every item with -v).
	status_items() {
		[[ -n $2 ]] || return 0
		found=1
		if ((verbose)); then
			local item
			while IFS= read -r item; do echo "$1 $item"; done <<<"$2"
		else
			echo "$1: $(wc -l <<<"$2")"
		fi
	}
	status_items "container processes" "$(our_container_pids)"
	status_items mounts "$(our_mounts)"
	status_items netns "$(our_netns)"
	status_items veths "$(our_veths)"
	status_items cgroups "$(our_cgroups)"
	status_items "CNI cache files" "$(find /var/lib/cni/results -name "$CNI_NET-*" 2>/dev/null)"
	if [[ -S /var/lib/kubelet/device-plugins/kubelet.sock ]]; then
		echo "file /var/lib/kubelet/device-plugins/kubelet.sock"
		found=1
	fi
	for n in "$NODE_IF" "$BRIDGE"; do
		if ip link show "$n" >/dev/null 2>&1; then
			echo "link $n"
			found=1
		fi
	done
	while read -r cmd table n; do
		echo "$cmd $table: $n chains (KUBE-*/CNI-*/SMK8S-*)"
		found=1
	done < <(our_chains)
	if ((found == 0)); then
		echo "nothing left"
		return 3
	fi
	if all_running; then
		echo "apiserver $API_URL ready; node $NODE_NAME $(node_ready && echo Ready || echo NotReady); KUBECONFIG=$KUBECONFIG_FILE"
		return 0
	fi
	return 1
}

cmd_env() {
	echo "export KUBECONFIG=$KUBECONFIG_FILE"
	echo "export PATH=$BIN:\$PATH"
}

main() {
	local cmd=${1:-}
	[[ $# -gt 0 ]] && shift
	case "$cmd" in
	up | down | load)
		need_root
		mkdir -p "$(dirname "$LOCK")"
		# One cluster on the machine: up, down and load never run at the same time.
		exec 9>"$LOCK"
		flock -w 600 9 || die "another cluster.sh holds $LOCK"
		case "$cmd" in
		up) cmd_up ;;
		down) cmd_down "$@" ;;
		load)
			(($# > 0)) || die "usage: $0 load IMAGE..."
			containerd_answers || die "the node's containerd is not running (cluster.sh up)"
			load_images "$@"
			;;
		esac
		;;
	status) cmd_status "$@" ;;
	env) cmd_env ;;
	kubectl) kctl "$@" ;;
	*)
		echo "usage: $0 up|down [--purge]|status [-v]|load IMAGE...|env|kubectl ARGS..." >&2
		exit 2
		;;
	esac
}

main "$@"
