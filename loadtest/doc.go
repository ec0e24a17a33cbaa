// Package loadtest is the Go load-test harness behind `make loadtest`: it drives the gRPC services with
// ghz's runner (the scenarios are the JSON configs in ghz/, the same files users pass to the ghz CLI) and
// the gateway's HTTP API with open-loop generators (vegeta for single requests, the constant-arrival
// pacer of package openloop for the multi-step order journey), then reports latency percentiles,
// throughput and errors as a table, JSON and a self-contained HTML chart. The k6 scripts in k6/ mirror
// the HTTP scenarios; a test keeps the two lists in step.
package loadtest
