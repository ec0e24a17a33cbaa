// Package loadtest holds the Go load-test harness (ghz runner for gRPC, an
// open-loop HTTP generator for the gateway) behind `make loadtest`; the scenarios
// arrive with the load-test issue.
package loadtest
