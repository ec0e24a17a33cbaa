package main

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRunRejects covers the flag errors and the taken-port check, which all fail before any build. The
// stack itself is exercised by localstack's TestStack through the same localstack.Run.
func TestRunRejects(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	base := []string{"-data", dir + "/data", "-run-dir", dir + "/run", "-bin", dir + "/bin",
		"-nats-addr", "127.0.0.1:0", "-kafka-addr", "127.0.0.1:0", "-gateway-addr", "127.0.0.1:0"}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no inventory", []string{"-inventory", "0"}, "at least 1 instance"},
		{"stray argument", []string{"up"}, "unexpected arguments"},
		{"bad flag", []string{"-nope"}, "flag provided but not defined"},
		{"bad gateway mode", []string{"-gateway", "maybe", "-order-port", "0", "-inventory-port", "0", "-payment-port", "0"}, "-gateway: want on or off"},
		{"instances unknown service", []string{"-instances", "order=1,shipping=1"}, `unknown service "shipping"`},
		{"instances bad count", []string{"-instances", "order=x"}, "want a count"},
		{"instances not name=N", []string{"-instances", "order"}, "is not name=N"},
		{"callee left out", []string{"-instances", "inventory=0", "-order-port", "0", "-payment-port", "0"}, "inventory is left out, but order calls it"},
		{"infra env missing", []string{"-infra", dir + "/nope.env"}, "make infra-up"},
		{"db prefix without infra", []string{"-db-prefix", "x"}, "need -infra"},
		{"taken port", []string{"-order-port", "0", "-inventory-port", "0", "-gateway", "off", "-payment-port", strconv.Itoa(busyPort)}, "payment-1: address 127.0.0.1:" + strconv.Itoa(busyPort)},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var out, errOut bytes.Buffer
			err := run(ctx, append(append([]string{}, base...), c.args...), nil, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("run: %v, want an error containing %q", err, c.want)
			}
		})
	}
}

// TestRunHelp prints the flags and succeeds.
func TestRunHelp(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, nil, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"-instances", "-inventory", "-payment", "-gateway-addr", "-quiet", "-kafka-persist"} {
		if !strings.Contains(errOut.String(), f) {
			t.Errorf("help lacks %s:\n%s", f, errOut.String())
		}
	}
}
