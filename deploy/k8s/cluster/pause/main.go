// Command pause is the pod sandbox ("pause") container of the single-node test cluster
// (deploy/k8s/cluster): it holds the pod's namespaces, reaps the zombies of a pod that shares its PID
// namespace, and exits on SIGINT or SIGTERM. It does what registry.k8s.io/pause does (a C program), as a
// static Go binary built into a FROM scratch image on this machine, where no registry is reachable.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("pause (shopmesh test cluster)")
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "pause: warning: not running as PID 1")
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	fmt.Fprintf(os.Stderr, "pause: shutting down, got signal %v\n", waitForStop(sigs))
}

// waitForStop reaps children on each SIGCHLD until SIGINT or SIGTERM arrives, and returns that signal.
func waitForStop(sigs <-chan os.Signal) os.Signal {
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			return sig
		}
		reap()
	}
	return nil
}

// reap collects every exited child without blocking (as PID 1 it inherits the pod's orphans).
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
