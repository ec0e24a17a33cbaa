package chaos

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Proxy is a TCP proxy on loopback in front of one instance, for network faults: Blackhole makes it
// accept connections and hold them (new and open ones alike) without forwarding a byte, as a network
// that drops packets does; Delay adds latency to everything coming back from the instance; Heal ends
// both, and held bytes then flow on, as after a partition heals.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cond  *sync.Cond
	hole  bool
	delay time.Duration
	conns map[net.Conn]struct{}
	done  bool
	wg    sync.WaitGroup
}

// NewProxy listens on addr ("127.0.0.1:0") and forwards to target.
func NewProxy(addr, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Go(p.accept)
	return p, nil
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Blackhole starts holding every connection.
func (p *Proxy) Blackhole() { p.set(true, p.getDelay()) }

// Delay adds d to every chunk the instance sends back (0 = none).
func (p *Proxy) Delay(d time.Duration) { p.set(p.holding(), d) }

// Heal forwards again without delay.
func (p *Proxy) Heal() { p.set(false, 0) }

func (p *Proxy) set(hole bool, d time.Duration) {
	p.mu.Lock()
	p.hole, p.delay = hole, d
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *Proxy) holding() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hole
}

func (p *Proxy) getDelay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay
}

// wait blocks while the proxy blackholes; false once it is closed.
func (p *Proxy) wait() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.hole && !p.done {
		p.cond.Wait()
	}
	return !p.done
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.done = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.cond.Broadcast()
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Go(func() { p.serve(c) })
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.untrack(client)
	// A connection arriving during a blackhole is accepted and held: no connection to the instance yet.
	if !p.wait() {
		return
	}
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	if !p.track(up) {
		return
	}
	defer p.untrack(up)
	var wg sync.WaitGroup
	wg.Go(func() { p.pipe(up, client, false) })
	wg.Go(func() { p.pipe(client, up, true) })
	wg.Wait()
}

// pipe copies src to dst until either side ends, holding while the proxy blackholes and, for the
// instance's answers (back), delaying each chunk by the current delay. Delayed chunks keep their
// order: the delay is latency, not a bandwidth limit.
func (p *Proxy) pipe(dst, src net.Conn, back bool) {
	defer func() {
		_ = dst.Close()
		_ = src.Close()
	}()
	type chunk struct {
		data []byte
		due  time.Time
	}
	q := make(chan chunk, 1024)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for c := range q {
			if w := time.Until(c.due); w > 0 {
				time.Sleep(w)
			}
			if !p.wait() {
				break
			}
			if _, err := dst.Write(c.data); err != nil {
				break
			}
		}
		_ = src.Close()
		for range q { // drain so the reader never blocks
		}
	}()
	buf := make([]byte, 32<<10)
	// Hold before reading: the bytes stay in the kernel buffers, as in a network that drops them and
	// has them retransmitted later.
	for p.wait() {
		n, err := src.Read(buf)
		if n > 0 {
			d := time.Duration(0)
			if back {
				d = p.getDelay()
			}
			q <- chunk{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(d)}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				_ = dst.Close()
			}
			break
		}
	}
	close(q)
	<-writerDone
}
