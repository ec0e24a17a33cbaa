package localstack

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Instance is one running service process, as written to stack.json.
type Instance struct {
	Service string `json:"service"`
	Index   int    `json:"index"`
	PID     int    `json:"pid"`
	// GRPCAddr is the gRPC listen address ("" for a kind http service such as the gateway, which is
	// checked over HTTP).
	GRPCAddr string `json:"grpc_addr"`
	// AdminAddr is the metrics/debug address; "" while the services do not serve one.
	AdminAddr string `json:"admin_addr"`
	// HTTPAddr is a kind http service's listen address ("" for the gRPC services).
	HTTPAddr string `json:"http_addr,omitempty"`
	// Log is the file holding the instance's output.
	Log string `json:"log"`
}

// Name is the instance's label, "inventory-1".
func (i Instance) Name() string { return fmt.Sprintf("%s-%d", i.Service, i.Index) }

// child is one started process.
type child struct {
	inst Instance
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // the exit status, valid after done

	mu       sync.Mutex
	stopping bool
	tail     *tailBuffer
}

// startChild starts bin with env; its output goes to the log file and, when console is set, to console
// with a "[name] " prefix.
func startChild(inst Instance, bin string, env []string, logDir string, console io.Writer) (*child, error) {
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("log dir: %w", err)
	}
	inst.Log = filepath.Join(logDir, inst.Name()+".log")
	f, err := os.OpenFile(inst.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: log: %w", inst.Name(), err)
	}
	c := &child{inst: inst, log: f, done: make(chan struct{}), tail: &tailBuffer{max: 4096}}
	outs := []io.Writer{f, c.tail}
	if console != nil {
		outs = append(outs, &prefixWriter{prefix: "[" + inst.Name() + "] ", dst: console})
	}
	// Not CommandContext: the stack stops its children in order with signals (stop), not by cancellation.
	cmd := exec.Command(bin) //nolint:noctx // the child's lifetime is the stack's, see above
	cmd.Env = append([]string{}, env...)
	cmd.Stdout = io.MultiWriter(outs...)
	cmd.Stderr = cmd.Stdout
	// A process group of its own keeps the terminal's Ctrl-C away from the children, so the stack stops
	// them in order; the parent-death signal (Linux) ends them if the dev command itself is killed.
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: start: %w", inst.Name(), err)
	}
	c.cmd = cmd
	c.inst.PID = cmd.Process.Pid
	go func() {
		c.err = cmd.Wait()
		_ = f.Close()
		close(c.done)
	}()
	return c, nil
}

// exited reports whether the process has ended.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// markStopping records that the stack, not a crash, ends this child.
func (c *child) markStopping() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopping = true
}

func (c *child) isStopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopping
}

// signal sends sig to the child's process group (the child and anything it started).
func (c *child) signal(sig syscall.Signal) {
	if c.exited() {
		return
	}
	if err := syscall.Kill(-c.inst.PID, sig); err != nil {
		_ = c.cmd.Process.Signal(sig)
	}
}

// stopChildren sends SIGTERM to every child at once, waits up to grace for each, then SIGKILLs the
// rest and waits for them to be reaped. It returns the names of the children that had to be killed.
func stopChildren(children []*child, grace time.Duration) []string {
	for _, c := range children {
		c.markStopping()
		c.signal(syscall.SIGTERM)
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	var killed []string
	for _, c := range children {
		select {
		case <-c.done:
			continue
		case <-deadline.C:
		}
		// The grace period is over for everyone still running.
		for _, r := range children {
			if !r.exited() {
				killed = append(killed, r.inst.Name())
				r.signal(syscall.SIGKILL)
			}
		}
		break
	}
	for _, c := range children {
		<-c.done
	}
	return killed
}

// prefixWriter writes whole lines to dst, each prefixed; a partial line waits for its end. The
// process's output is copied by one goroutine, and dst is shared, so dst must be safe for concurrent
// use (see lockedWriter).
type prefixWriter struct {
	prefix string
	dst    io.Writer
	buf    []byte
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := make([]byte, 0, len(w.prefix)+i+1)
		line = append(append(line, w.prefix...), w.buf[:i+1]...)
		w.buf = w.buf[i+1:]
		// A broken console must not stop the child's output to its log file.
		_, _ = w.dst.Write(line)
	}
	return len(p), nil
}

// lockedWriter serialises writes from several children to one console.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// tailBuffer keeps the last max bytes written, to explain a child that died during start-up.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append([]byte{}, t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// exitError describes how a child ended.
func exitError(c *child) error {
	if c.err == nil {
		return errors.New("exited with status 0")
	}
	return c.err
}
