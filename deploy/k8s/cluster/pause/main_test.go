package main

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestWaitForStopReapsAndStops: a child that exits is reaped (its /proc entry goes: no zombie is left
// in the pod), and SIGTERM ends the wait with that signal.
func TestWaitForStopReapsAndStops(t *testing.T) {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	defer signal.Stop(sigs)
	got := make(chan os.Signal, 1)
	go func() { got <- waitForStop(sigs) }()

	child := exec.Command("true") // not waited for: only reap() can collect it
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	proc := "/proc/" + strconv.Itoa(child.Process.Pid)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(proc); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d was not reaped (%s still exists)", child.Process.Pid, proc)
		}
		time.Sleep(10 * time.Millisecond)
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case sig := <-got:
		if sig != syscall.SIGTERM {
			t.Errorf("waitForStop returned %v, want SIGTERM", sig)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("waitForStop did not return after SIGTERM")
	}
}
