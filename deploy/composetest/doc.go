// Package composetest is `make compose-test` (issue 19): the compose stack of deploy/compose started on
// a real Docker engine exactly as users start it (`make compose-up`), driven through the gateway's HTTP
// API on 127.0.0.1 and faulted, then taken down.
//
// TestCompose runs only with COMPOSE_TEST=1 (the Makefile target sets it after starting the engine and
// building the stand-in images of deploy/compose/standin); without it the package runs its unit tests
// only. Its steps, each timed and listed in a summary at the end:
//
//  1. preflight: docker info, docker compose version; a published port of deploy/compose/.env that is
//     already taken on 127.0.0.1 is moved to a free one through the environment (compose lets the
//     environment win over .env), so the run never collides with another listener;
//  2. a clean start: `docker compose down -v` of the project (its data volumes are dropped);
//  3. `make compose-up` (certificates, secrets, build, `up -d --build --wait`);
//  4. every container healthy, the one-shot jobs (restart "no": *-migrate, *-setup) exited 0, two
//     replicas of inventory and payment;
//  5. orders placed with a token signed by the generated gateway-jwt-keys (as users of the compose profile
//     mint them: it has no dev token route), each CONFIRMED through the API, and seen in the containers:
//     the order rows in PostgreSQL, the topics in Kafka (with the kafka healthcheck's own client
//     settings), JetStream messages in NATS, two instances of inventory and payment in Nacos;
//  6. the trace of one order (its traceparent sent by the harness; up to three traced orders when a
//     span batch was lost) in Jaeger's query API with spans of gateway, order, inventory and payment;
//     up == 1 for every service's replicas in Prometheus;
//  7. an order load during which one inventory container is killed (`docker kill`): no failed order;
//  8. an order load during which payment is restarted (`docker compose restart payment`): orders resume;
//  9. `make compose-down VOLUMES=1`: no container, network or volume of the project remains.
//
// A failed order is what loadtest's clients count as one (loadtest/chaos.Load): an order whose final
// answer, after retrying 503/429 (after Retry-After) and connection errors with the same
// Idempotency-Key, is not 201/200 with an id.
package composetest
