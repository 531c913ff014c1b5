// Package cache holds what senderguard remembers: TTL, the bounded,
// expiring LRU behind the DNS answer cache and the in-memory store
// (hashicorp/golang-lru/v2; bounded in entries and optionally bytes, each
// entry with its own expiry, so a record's TTL is respected exactly); the
// Store interface of the callout's facts, with Memory (the default),
// Redis (rueidis, shared by a fleet, with leases and fleet-wide limits)
// and Shared (Redis in front of Memory, riding out Redis outages).
package cache

import (
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Clock tells the time; tests replace it.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// SystemClock is the wall clock.
var SystemClock Clock = systemClock{}

// Eviction reasons reported to Hooks.Evicted.
const (
	EvictEntries = "entries" // the entry bound was reached
	EvictBytes   = "bytes"   // the byte bound was reached
	EvictExpired = "expired" // an expired entry was found and dropped
	EvictRemoved = "removed" // an operator removed it (cache forget)
)

// Hooks are optional callbacks for metrics; nil fields are skipped.
type Hooks struct {
	Hit, Miss func()
	Evicted   func(reason string)
}

type ttlEntry[V any] struct {
	value   V
	expires int64 // unix nanoseconds
	cost    int64 // bytes, when the cache is bounded in bytes
}

// TTL is a bounded LRU whose entries expire individually. It is safe for
// concurrent use.
type TTL[K comparable, V any] struct {
	lru   *lru.Cache[K, ttlEntry[V]]
	clock Clock
	hooks Hooks

	// Byte bound; zero maxBytes means none. mu orders writers so the
	// eviction callback knows why it runs.
	maxBytes int64
	cost     func(K, V) int64
	mu       sync.Mutex
	bytes    int64
	reason   string
}

// NewTTL returns a cache holding at most size entries.
func NewTTL[K comparable, V any](size int, clock Clock, hooks Hooks) (*TTL[K, V], error) {
	return NewSizedTTL[K, V](size, 0, nil, clock, hooks)
}

// NewSizedTTL returns a cache holding at most size entries whose costs
// (as cost counts them) add up to at most maxBytes.
func NewSizedTTL[K comparable, V any](size int, maxBytes int64, cost func(K, V) int64, clock Clock, hooks Hooks) (*TTL[K, V], error) {
	if clock == nil {
		clock = SystemClock
	}
	c := &TTL[K, V]{clock: clock, hooks: hooks, maxBytes: maxBytes, cost: cost, reason: EvictEntries}
	l, err := lru.NewWithEvict[K, ttlEntry[V]](size, c.evicted)
	if err != nil {
		return nil, err
	}
	c.lru = l
	return c, nil
}

// evicted runs inside the LRU for every entry it drops, with c.mu held by
// the writer that caused it.
func (c *TTL[K, V]) evicted(_ K, e ttlEntry[V]) {
	c.bytes -= e.cost
	if c.hooks.Evicted != nil {
		c.hooks.Evicted(c.reason)
	}
}

// Get returns the live value for k and the time it has left to live.
func (c *TTL[K, V]) Get(k K) (V, time.Duration, bool) {
	e, ok := c.lru.Get(k)
	if ok {
		left := time.Duration(e.expires - c.clock.Now().UnixNano())
		if left > 0 {
			if c.hooks.Hit != nil {
				c.hooks.Hit()
			}
			return e.value, left, true
		}
		c.dropExpired(k, e.expires)
	}
	if c.hooks.Miss != nil {
		c.hooks.Miss()
	}
	var zero V
	return zero, 0, false
}

// dropExpired removes k if it still holds the expired entry seen, so its
// bytes are free at once rather than when the LRU ages it out.
func (c *TTL[K, V]) dropExpired(k K, expires int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.lru.Peek(k); ok && e.expires == expires {
		c.reason = EvictExpired
		c.lru.Remove(k)
		c.reason = EvictEntries
	}
}

// Add stores v for ttl. A non-positive ttl stores nothing; neither does a
// value costing more than the whole byte bound.
func (c *TTL[K, V]) Add(k K, v V, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	e := ttlEntry[V]{value: v, expires: c.clock.Now().Add(ttl).UnixNano()}
	if c.maxBytes > 0 {
		e.cost = c.cost(k, v)
		if e.cost > c.maxBytes {
			return
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.lru.Peek(k); ok {
		c.bytes -= old.cost // replaced without an eviction callback
	}
	c.bytes += e.cost
	c.lru.Add(k, e)
	if c.maxBytes > 0 && c.bytes > c.maxBytes {
		c.reason = EvictBytes
		for c.bytes > c.maxBytes {
			if _, _, ok := c.lru.RemoveOldest(); !ok {
				break
			}
		}
		c.reason = EvictEntries
	}
}

// Remove drops k; it reports whether a live entry was there.
func (c *TTL[K, V]) Remove(k K) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.lru.Peek(k)
	if !ok {
		return false
	}
	c.reason = EvictRemoved
	c.lru.Remove(k)
	c.reason = EvictEntries
	return e.expires > c.clock.Now().UnixNano()
}

// Len is the number of entries held, live or expired.
func (c *TTL[K, V]) Len() int { return c.lru.Len() }

// Bytes is the cost of the entries held, when the cache is bounded in
// bytes.
func (c *TTL[K, V]) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}
