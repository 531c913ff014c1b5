package cache

import (
	"context"
	"time"
)

// Entry is one learned fact about an address, domain or mail host: small
// on purpose, so a million of them fit in little memory.
type Entry struct {
	Kind     string // e.g. "exists", "not-exists", "catch-all", "breaker"
	Code     uint16 // the decisive SMTP reply code, 0 if none
	Enhanced string // its enhanced status code, "" if none
	Stored   int64  // when it was learned, unix seconds
}

// Store keeps entries with a lifetime. The in-memory Memory store is the
// default; a shared backend (Redis) implements the same interface so
// several replicas learn together.
type Store interface {
	// Get returns the live entry for key and its remaining lifetime.
	Get(ctx context.Context, key string) (Entry, time.Duration, bool, error)
	// Set stores e for ttl.
	Set(ctx context.Context, key string, e Entry, ttl time.Duration) error
}

// Memory is a bounded in-process Store.
type Memory struct {
	c *TTL[string, Entry]
}

// NewMemory holds at most size entries.
func NewMemory(size int, clock Clock, hooks Hooks) (*Memory, error) {
	c, err := NewTTL[string, Entry](size, clock, hooks)
	if err != nil {
		return nil, err
	}
	return &Memory{c: c}, nil
}

func (m *Memory) Get(_ context.Context, key string) (Entry, time.Duration, bool, error) {
	e, left, ok := m.c.Get(key)
	return e, left, ok, nil
}

func (m *Memory) Set(_ context.Context, key string, e Entry, ttl time.Duration) error {
	m.c.Add(key, e, ttl)
	return nil
}

// Len is the number of entries held.
func (m *Memory) Len() int { return m.c.Len() }
