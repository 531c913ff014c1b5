package cache

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/senderguard/senderguard/internal/smtpstatus"
)

// Entry is one learned fact about an address, domain or mail host: small
// on purpose, so a million of them fit in little memory.
type Entry struct {
	Kind     string // e.g. "exists", "not-exists", "catch-all", "breaker"
	Code     uint16 // the decisive SMTP reply code, 0 if none
	Enhanced string // its enhanced status code, "" if none
	Stored   int64  // when it was learned, unix seconds
	// Rules is the version of the reply rules that gave Kind (0: written
	// before rules were versioned), so that facts learned under old
	// rules can be told apart after an upgrade.
	Rules uint8
}

// Store keeps entries with a lifetime. The in-memory Memory store is the
// default; a shared backend (Redis) implements the same interface so
// several replicas learn together.
type Store interface {
	// Get returns the live entry for key and its remaining lifetime.
	Get(ctx context.Context, key string) (Entry, time.Duration, bool, error)
	// Set stores e for ttl.
	Set(ctx context.Context, key string, e Entry, ttl time.Duration) error
	// Delete removes keys and reports how many were there.
	Delete(ctx context.Context, keys ...string) (int, error)
}

// Memory is a bounded in-process Store. It keeps a 128-bit hash of each
// key and a packed entry, not the strings: a million entries take about
// half the memory they would otherwise (BenchmarkMillionEntries).
type Memory struct {
	c     *TTL[memKey, memEntry]
	seeds [2]maphash.Seed

	mu    sync.RWMutex
	kinds []string
	kindN map[string]uint8
}

type memKey [2]uint64

type memEntry struct {
	kind   uint8
	rules  uint8
	code   uint16
	enh    smtpstatus.Enhanced
	stored int64
}

// NewMemory holds at most size entries.
func NewMemory(size int, clock Clock, hooks Hooks) (*Memory, error) {
	c, err := NewTTL[memKey, memEntry](size, clock, hooks)
	if err != nil {
		return nil, err
	}
	return &Memory{c: c, seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, kindN: map[string]uint8{}}, nil
}

func (m *Memory) key(k string) memKey {
	return memKey{maphash.String(m.seeds[0], k), maphash.String(m.seeds[1], k)}
}

func (m *Memory) Get(_ context.Context, key string) (Entry, time.Duration, bool, error) {
	e, left, ok := m.c.Get(m.key(key))
	if !ok {
		return Entry{}, 0, false, nil
	}
	m.mu.RLock()
	kind := m.kinds[e.kind]
	m.mu.RUnlock()
	out := Entry{Kind: kind, Code: e.code, Stored: e.stored, Rules: e.rules}
	out.Enhanced = e.enh.String()
	return out, left, true, nil
}

func (m *Memory) Set(_ context.Context, key string, e Entry, ttl time.Duration) error {
	k, err := m.kind(e.Kind)
	if err != nil {
		return err
	}
	me := memEntry{kind: k, rules: e.Rules, code: e.Code, stored: e.Stored}
	if e.Enhanced != "" {
		var ok bool
		if me.enh, ok = smtpstatus.Parse(e.Enhanced); !ok {
			return fmt.Errorf("cache: bad enhanced status code %q", e.Enhanced)
		}
	}
	m.c.Add(m.key(key), me, ttl)
	return nil
}

func (m *Memory) Delete(_ context.Context, keys ...string) (int, error) {
	n := 0
	for _, k := range keys {
		if m.c.Remove(m.key(k)) {
			n++
		}
	}
	return n, nil
}

// kind interns an entry kind; there are only a handful.
func (m *Memory) kind(s string) (uint8, error) {
	m.mu.RLock()
	k, ok := m.kindN[s]
	m.mu.RUnlock()
	if ok {
		return k, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if k, ok := m.kindN[s]; ok {
		return k, nil
	}
	if len(m.kinds) >= 255 {
		return 0, fmt.Errorf("cache: too many entry kinds")
	}
	m.kinds = append(m.kinds, s)
	m.kindN[s] = uint8(len(m.kinds) - 1)
	return m.kindN[s], nil
}

// Len is the number of entries held.
func (m *Memory) Len() int { return m.c.Len() }
