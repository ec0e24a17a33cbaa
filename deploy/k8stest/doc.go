// Package k8stest is `make k8s-test` (issue 21): the dev overlay of deploy/k8s applied to a single-node
// Kubernetes cluster built on this machine (deploy/k8s/cluster), exactly as deploy/k8s/README.md tells
// users, driven through the gateway's HTTP API on 127.0.0.1, faulted under an order load, audited, and
// taken down with the cluster.
//
// TestK8s runs only with K8S_TEST=1 (the Makefile target sets it after starting the Docker engine);
// without it the package runs its unit tests only, and with it a missing engine or cluster fails the
// test. It reuses deploy/composetest's client (API, Retry, SignToken), tally and summary. Its steps,
// each timed and listed in a summary at the end:
//
//  1. preflight: the Docker engine, ip, iptables-save, containerd, ctr;
//  2. deploy/k8s/cluster/build.sh (the Kubernetes binaries), the build.sh of each folder of
//     deploy/k8s/cluster (CoreDNS's image, which cluster.sh up loads) and deploy/compose/standin/build.sh
//     (the infrastructure stand-in images), all cached;
//  3. cluster.sh up; the node Ready and kube-system's Deployments (CoreDNS) available;
//  4. make secrets; the overlay rendered (the namespace, workloads, Jobs, images and volume claims the
//     harness reads from it); make images IMAGE_TAG=<the base's tag>; cluster.sh load of every image the
//     overlay names;
//  5. what an earlier run left deleted (the namespace, the harness's volumes); hostPath
//     PersistentVolumes pre-bound to the StatefulSets' claims when the cluster has no default
//     StorageClass (the test cluster has no provisioner);
//  6. deploy/k8s/dev-secrets.sh, kubectl apply --server-side -k deploy/k8s/overlays/dev; every Deployment
//     and StatefulSet ready with all its replicas, the Jobs complete;
//  7. kubectl port-forward svc/gateway on 127.0.0.1; /readyz, then /v1/products 200 (the gateway finds
//     inventory at its next DNS lookup); 10 orders CONFIRMED;
//  8. under a closed-loop order load (ClosedLoop: 4 clients, at most 10 orders/s): one inventory pod
//     deleted (a replacement Ready and serving ReserveStock, no failed order); kubectl rollout restart
//     deployment/payment (no failed order, the new pods serve AuthorizePayment); the eviction API asked
//     to evict both inventory pods at once (the PodDisruptionBudget admits one, 201, and refuses the
//     other, 429; no failed order); the HPA of order without a metrics server (ScalingActive False: it
//     cannot scale on CPU) restoring minReplicas after order is scaled below it (no failed order);
//  9. audit: every accepted order settled through the API, and in PostgreSQL (kubectl exec psql) exactly
//     one row per accepted order with the id the API answered, terminal, with exactly one terminal event
//     in the outbox;
//  10. kubectl delete -k (the namespace gone), the volumes deleted; cluster.sh down, then cluster.sh
//     status says nothing is left and the harness finds no process, mount, link, network namespace or
//     iptables chain of the cluster.
//
// A failed order is what loadtest's clients count as one: an order whose final answer, after retrying
// 503/429 and connection errors with the same Idempotency-Key, is not 201/200 with an id.
//
// K8S_TEST_CLUSTER=keep uses the running cluster and leaves it up (the overlay is still deleted);
// K8S_TEST_KEEP=1 leaves everything up after a failure (make k8s-down). On failure the namespace's
// objects, events and pod logs go to .run/k8stest/. K8S_TEST_MODE=up (make k8s-up) stops after the 10
// orders and leaves everything up; K8S_TEST_MODE=down (make k8s-down) deletes the overlay and stops the
// cluster, with the same checks.
package k8stest
