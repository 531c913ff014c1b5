package callout

import (
	"sync"
	"time"
)

// keyedLimiter bounds the probes per key (a sender domain, a mail host
// address): at most concurrency at once and rate started per one-minute
// window. Idle keys are forgotten in the order their windows started, so
// expiry costs O(1) amortised per acquire, however many keys a burst
// brings (a sweep of the whole map per new key was quadratic).
type keyedLimiter struct {
	concurrency, rate int
	now               func() time.Time

	mu    sync.Mutex
	keys  map[string]*keyState
	queue []windowStart // window starts, oldest first, from head
	head  int
}

type keyState struct {
	inflight int
	window   time.Time // start of the current one-minute window
	count    int       // started in this window
}

type windowStart struct {
	key string
	at  time.Time
}

const limiterWindow = time.Minute

func newKeyedLimiter(concurrency, rate int, now func() time.Time) *keyedLimiter {
	return &keyedLimiter{concurrency: max(concurrency, 1), rate: max(rate, 1), now: now, keys: map[string]*keyState{}}
}

// Limit names, in refusals, which bound refused.
const (
	limitConcurrency = "concurrency"
	limitRate        = "rate"
)

// acquire takes a slot and a unit of rate for key, or names the limit
// that refused.
func (l *keyedLimiter) acquire(key string) string {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked(now)
	st := l.keys[key]
	if st == nil {
		st = &keyState{window: now}
		l.keys[key] = st
		l.queue = append(l.queue, windowStart{key, now})
	} else if now.Sub(st.window) >= limiterWindow {
		st.window, st.count = now, 0
		l.queue = append(l.queue, windowStart{key, now})
	}
	switch {
	case st.inflight >= l.concurrency:
		return limitConcurrency
	case st.count >= l.rate:
		return limitRate
	}
	st.inflight++
	st.count++
	return ""
}

// release gives back key's slot.
func (l *keyedLimiter) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.keys[key]
	if st == nil {
		return
	}
	st.inflight--
	// Its queue entry may have passed while it was busy.
	if st.inflight == 0 && l.now().Sub(st.window) >= limiterWindow {
		delete(l.keys, key)
	}
}

// expireLocked forgets keys whose window ended with nothing in flight.
func (l *keyedLimiter) expireLocked(now time.Time) {
	for l.head < len(l.queue) && now.Sub(l.queue[l.head].at) >= limiterWindow {
		e := l.queue[l.head]
		l.queue[l.head] = windowStart{}
		l.head++
		if st := l.keys[e.key]; st != nil && st.window.Equal(e.at) && st.inflight == 0 {
			delete(l.keys, e.key)
		}
	}
	// Reuse the queue's front once most of it is spent.
	if l.head > 1024 && l.head*2 > len(l.queue) {
		n := copy(l.queue, l.queue[l.head:])
		clear(l.queue[n:])
		l.queue = l.queue[:n]
		l.head = 0
	}
}

// size is the number of keys remembered.
func (l *keyedLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}
