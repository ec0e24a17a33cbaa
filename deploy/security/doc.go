// Package security is shopmesh's security suite (issue 18, "Proof"): `make security-test` runs
// `go test ./security/` in the deploy module. Every test in it tries one attack, many times, against
// real running components (the services' binaries with their mTLS, the gateway's HTTP server in the
// prod profile, the authenticated Kafka, NATS and Nacos of `INFRA_AUTH=1 infra.sh up`), counts the
// tries and the successes, and the suite prints a table at the end
// (attack | tried | succeeded | expected refusal | observed). It fails if any attack succeeds or could
// not be tried; an attack needing a server that is not there skips, and fails under REQUIRE_INFRA=1.
// `-report FILE` (or SECURITY_REPORT=FILE) also writes the table: JSON for a .json file, markdown
// otherwise. The tests run only with SECURITY_SUITE=1, which `make security-test` sets: `make test`
// compiles them and runs none (the suite starts its own stack and, in CI, runs on a private set of
// authenticated servers: `deploy/security/authinfra.sh up`, then `make security-test
// SECURITY_INFRA_ENV=$(deploy/security/authinfra.sh env)`).
//
// The package has no code outside its tests: the tally (attack, try) is in tally_test.go.
package security
