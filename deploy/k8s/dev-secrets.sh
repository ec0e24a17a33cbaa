#!/usr/bin/env bash
# Creates (or updates) the <service>-tls Secrets of the dev overlay from the files `make certs` wrote,
# in the layout the Deployments mount at /certs: ca.crt, tls.crt, tls.key.
#
#   make certs && deploy/k8s/dev-secrets.sh [namespace]     # default namespace: shopmesh-dev
set -euo pipefail
ns="${1:-shopmesh-dev}"
dir="$(cd "$(dirname "$0")/../.." && pwd)/.run/certs"
kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"
for svc in order inventory payment gateway; do
	kubectl -n "$ns" create secret generic "$svc-tls" \
		--from-file=ca.crt="$dir/ca.pem" \
		--from-file=tls.crt="$dir/$svc.pem" \
		--from-file=tls.key="$dir/$svc-key.pem" \
		--dry-run=client -o yaml | kubectl apply -f -
done
