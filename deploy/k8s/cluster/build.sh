#!/usr/bin/env bash
# Builds the Kubernetes binaries the single-node test cluster runs (deploy/k8s/cluster/cluster.sh) from the
# Go modules the package registry serves, cached in ~/.cache/shopmesh/k8s-<version>/bin:
#   kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd
#
# The k8s.io/kubernetes module zip leaves out staging/, so the module source is copied to a writable folder,
# its go.work removed, and every `k8s.io/* => ./staging/src/k8s.io/*` replace pointed at the published
# v0.<minor>.<patch> module instead. etcd is a three-line main calling etcdmain.Main.
# Cold: ~7 min on 2 cores; warm: nothing to do (a binary present is kept; FORCE=1 rebuilds).
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.7.3}
CACHE=${SHOPMESH_CACHE:-$HOME/.cache/shopmesh}
DIR=$CACHE/k8s-$K8S_VERSION
BIN=$DIR/bin
STAGING_VERSION=v0.${K8S_VERSION#v1.}
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

log() { printf '[k8s-build] %s\n' "$*" >&2; }

missing=()
for b in "${BINARIES[@]}" etcd; do
	if [[ ${FORCE:-} == 1 || ! -x $BIN/$b ]]; then missing+=("$b"); fi
done
if ((${#missing[@]} == 0)); then
	log "all binaries present in $BIN"
	exit 0
fi
mkdir -p "$BIN"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

build_kube() {
	local src=$DIR/src want=() b
	for b in "${missing[@]}"; do [[ $b == etcd ]] || want+=("./cmd/$b"); done
	((${#want[@]})) || return 0
	if [[ ! -f $src/.prepared ]]; then
		log "copying k8s.io/kubernetes@$K8S_VERSION to $src"
		local mod
		mod=$(cd "$(mktemp -d)" && go mod init tmp >/dev/null 2>&1 &&
			go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		[[ -d $mod ]] || {
			log "go mod download k8s.io/kubernetes@$K8S_VERSION failed"
			exit 1
		}
		rm -rf "$src"
		cp -r "$mod" "$src"
		chmod -R u+w "$src"
		rm -f "$src/go.work" "$src/go.work.sum"
		sed -i -E "s#^([[:space:]]*)(k8s\.io/[a-z0-9-]+) => \./staging/src/k8s\.io/[a-z0-9-]+#\1\2 => \2 $STAGING_VERSION#" "$src/go.mod"
		(cd "$src" && go mod tidy >"$DIR/tidy.log" 2>&1) || {
			log "go mod tidy failed: see $DIR/tidy.log"
			exit 1
		}
		touch "$src/.prepared"
	fi
	log "building ${want[*]} (cold: several minutes)"
	(cd "$src" && go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${K8S_VERSION#v1.}" -o "$BIN/" "${want[@]}")
}

build_etcd() {
	[[ " ${missing[*]} " == *" etcd "* ]] || return 0
	local src=$DIR/etcd-src
	mkdir -p "$src"
	cat >"$src/main.go" <<'GO'
// Command etcd is etcd's own main, built from its module for the test cluster.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
	if [[ ! -f $src/go.mod ]]; then
		(cd "$src" && go mod init shopmesh.local/etcd >/dev/null 2>&1 && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >"$DIR/etcd-get.log" 2>&1 && go mod tidy >>"$DIR/etcd-get.log" 2>&1) || {
			log "etcd module setup failed: see $DIR/etcd-get.log"
			exit 1
		}
	fi
	log "building etcd $ETCD_VERSION"
	(cd "$src" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" .)
}

build_etcd
build_kube
log "done: $BIN"
