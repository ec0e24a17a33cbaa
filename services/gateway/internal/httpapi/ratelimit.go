package httpapi

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxClients is how many client buckets are kept before full (hence forgettable) ones are swept.
const maxClients = 10_000

// clientLimiter is a token bucket per client key. Memory stays bounded: a bucket that has refilled is
// indistinguishable from a new one, so such buckets are dropped whenever the map grows past maxClients.
type clientLimiter struct {
	rps   rate.Limit
	burst int
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

func newClientLimiter(rps float64, burst int, now func() time.Time) *clientLimiter {
	if now == nil {
		now = time.Now
	}
	return &clientLimiter{rps: rate.Limit(rps), burst: burst, now: now, buckets: map[string]*rate.Limiter{}}
}

// allow takes one token from key's bucket, or says how long to wait for one.
func (l *clientLimiter) allow(key string) (time.Duration, bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxClients {
			l.sweep(now)
		}
		b = rate.NewLimiter(l.rps, l.burst)
		l.buckets[key] = b
	}
	if b.AllowN(now, 1) { // the common case, without ReserveN's allocation
		return 0, true
	}
	r := b.ReserveN(now, 1)
	if !r.OK() {
		return time.Second, false
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}

func (l *clientLimiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(l.buckets, k)
		}
	}
}

// exhausted reports, without taking a token, whether key's bucket is empty, and how long until it holds
// one. A key without a bucket is not exhausted.
func (l *clientLimiter) exhausted(key string) (time.Duration, bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		return 0, false
	}
	tokens := b.TokensAt(now)
	if tokens >= 1 {
		return 0, false
	}
	if l.rps <= 0 {
		return time.Second, true
	}
	return time.Duration((1 - tokens) / float64(l.rps) * float64(time.Second)), true
}
