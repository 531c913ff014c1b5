// Package cache holds the bounded, expiring caches senderguard keeps: the DNS
// answer cache and the callout result cache. Every cache is bounded in
// entries (an LRU from hashicorp/golang-lru/v2) and every entry carries its
// own expiry, so a record's TTL is respected exactly.
package cache

import (
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Clock tells the time; tests replace it.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// SystemClock is the wall clock.
var SystemClock Clock = systemClock{}

// Hooks are optional callbacks for metrics; nil fields are skipped.
type Hooks struct {
	Hit, Miss, Evict func()
}

type ttlEntry[V any] struct {
	value   V
	expires int64 // unix nanoseconds
}

// TTL is a bounded LRU whose entries expire individually. It is safe for
// concurrent use.
type TTL[K comparable, V any] struct {
	lru   *lru.Cache[K, ttlEntry[V]]
	clock Clock
	hooks Hooks
}

// NewTTL returns a cache holding at most size entries.
func NewTTL[K comparable, V any](size int, clock Clock, hooks Hooks) (*TTL[K, V], error) {
	if clock == nil {
		clock = SystemClock
	}
	c := &TTL[K, V]{clock: clock, hooks: hooks}
	var onEvict func(K, ttlEntry[V])
	if hooks.Evict != nil {
		onEvict = func(K, ttlEntry[V]) { hooks.Evict() }
	}
	l, err := lru.NewWithEvict[K, ttlEntry[V]](size, onEvict)
	if err != nil {
		return nil, err
	}
	c.lru = l
	return c, nil
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
		// Expired: leave it; the next Add replaces it and the LRU ages it out.
	}
	if c.hooks.Miss != nil {
		c.hooks.Miss()
	}
	var zero V
	return zero, 0, false
}

// Add stores v for ttl. A non-positive ttl stores nothing.
func (c *TTL[K, V]) Add(k K, v V, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	c.lru.Add(k, ttlEntry[V]{value: v, expires: c.clock.Now().Add(ttl).UnixNano()})
}

// Len is the number of entries held, live or expired.
func (c *TTL[K, V]) Len() int { return c.lru.Len() }
