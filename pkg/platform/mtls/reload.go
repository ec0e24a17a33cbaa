package mtls

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// reloader is the one way certificate files are reloaded without a restart, shared by Source (the mTLS
// identity: CA bundle, certificate, key) and KeyPair (a serving certificate: certificate, key): it
// reads a set of files, parses them into a T, and, every interval, reads them again and swaps in the
// new T if the bytes changed and parse accepts them. A set parse refuses (a certificate written before
// its key, a truncated file) leaves the previous T in use; the failure is logged and counted.
type reloader[T any] struct {
	files    []string // read in this order, handed to parse in this order
	parse    func(raw [][]byte) (*T, error)
	loaded   func(*T) // logs a T that was swapped in (or nil)
	what     string   // names the material in logs: "mtls", "https"
	log      *slog.Logger
	cur      atomic.Pointer[T]
	raw      [][]byte // the bytes cur was parsed from; guarded by mu
	failures atomic.Uint64
	mu       sync.Mutex // serializes reload
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

// start reads and parses the files once (they must be complete and consistent) and, if interval > 0,
// polls them until close.
func (r *reloader[T]) start(interval time.Duration) error {
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.stop, r.done = make(chan struct{}), make(chan struct{})
	raw, err := r.readFiles()
	if err != nil {
		return err
	}
	v, err := r.parse(raw)
	if err != nil {
		return err
	}
	r.cur.Store(v)
	r.raw = raw
	if interval > 0 {
		go r.poll(interval)
	} else {
		close(r.done)
	}
	return nil
}

func (r *reloader[T]) current() *T { return r.cur.Load() }

func (r *reloader[T]) close() {
	r.once.Do(func() { close(r.stop) })
	<-r.done
}

func (r *reloader[T]) poll(interval time.Duration) {
	defer close(r.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			// reload logs and counts its own failures.
			_ = r.reload()
		}
	}
}

// reload re-reads the files and swaps in what they hold if it changed and parses; see reloader.
func (r *reloader[T]) reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	raw, err := r.readFiles()
	if err == nil {
		if r.unchanged(raw) {
			return nil
		}
		var v *T
		if v, err = r.parse(raw); err == nil {
			r.cur.Store(v)
			r.raw = raw
			if r.loaded != nil {
				r.loaded(v)
			}
			return nil
		}
	}
	r.failures.Add(1)
	r.log.Warn(r.what+" reload ignored, keeping previous certificate", "err", err)
	return err
}

func (r *reloader[T]) unchanged(raw [][]byte) bool {
	for i := range raw {
		if !bytes.Equal(raw[i], r.raw[i]) {
			return false
		}
	}
	return true
}

func (r *reloader[T]) readFiles() ([][]byte, error) {
	raw := make([][]byte, len(r.files))
	for i, f := range r.files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%s: read %s: %w", r.what, f, err)
		}
		raw[i] = b
	}
	return raw, nil
}
