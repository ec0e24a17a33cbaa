package k8stest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"time"
)

// PortForward keeps `kubectl port-forward --address 127.0.0.1 <Target> <Port>:<Remote>` running: kubectl
// forwards to one pod chosen when it starts and exits when that pod goes away, so it is started again
// (Restarts counts how often) until Stop.
type PortForward struct {
	Kubectl   string // the kubectl binary
	Namespace string
	Target    string // svc/gateway
	Port      int    // on 127.0.0.1
	Remote    int
	Log       func(format string, args ...any)

	mu       sync.Mutex
	restarts int
	cancel   context.CancelFunc
	done     chan struct{}
}

// Start runs kubectl until Stop and waits until the local port accepts connections (or timeout).
func (f *PortForward) Start(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	f.cancel = cancel
	f.done = make(chan struct{})
	go f.loop(ctx)
	deadline := time.Now().Add(timeout)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(f.Port))
	for {
		var d net.Dialer
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		c, err := d.DialContext(dctx, "tcp", addr)
		dcancel()
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			f.Stop()
			return fmt.Errorf("port-forward %s: %s not listening after %v: %w", f.Target, addr, timeout, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (f *PortForward) loop(ctx context.Context) {
	defer close(f.done)
	for first := true; ; first = false {
		if !first {
			f.mu.Lock()
			f.restarts++
			f.mu.Unlock()
		}
		cmd := exec.CommandContext(ctx, f.Kubectl, "-n", f.Namespace, "port-forward", "--address", "127.0.0.1",
			f.Target, fmt.Sprintf("%d:%d", f.Port, f.Remote))
		cmd.WaitDelay = 5 * time.Second
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ctx.Err() != nil {
			return
		}
		if f.Log != nil {
			f.Log("port-forward %s exited (%v): %s; starting it again", f.Target, err, bytes.TrimSpace(out.Bytes()))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Restarts is how often kubectl had to be started again.
func (f *PortForward) Restarts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restarts
}

// Stop ends kubectl and waits for it.
func (f *PortForward) Stop() {
	if f.cancel == nil {
		return
	}
	f.cancel()
	<-f.done
}
