// Package manifests holds the tests of the deployment files, run by `make test` without Docker or a
// cluster:
//
//   - deploy/docker/Dockerfile: its build stage's COPY lines are replayed from the repository (minus
//     .dockerignore) into a temporary directory and its `go build` line is run there for every service;
//   - deploy/compose/compose.yaml: loaded with compose-go (pins, healthchecks, depends_on conditions,
//     published ports, replicas, certificate mounts, no Nacos address shared by replicas or services);
//   - deploy/k8s overlays dev and prod: rendered with kustomize and decoded strictly into the typed
//     k8s.io/api objects (probes, resources, security context, shutdown budget, HPA, PDB,
//     NetworkPolicy call graph, headless Services, no fixed Nacos advertise host in a pod template).
//
// The services and what each needs (kind, database, Kafka, NATS, replicas, calls) come from
// services/*/service.yaml (deploy/servicelist), so a new service is checked with no edit here. Every
// service's environment, as its container would see it, is passed to the built binary's `check-config`
// subcommand, which validates it and rejects unknown variables.
package manifests
