package cache

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// SharedHooks report the shared store's health for metrics; nil fields
// are skipped.
type SharedHooks struct {
	Up    func(up bool)
	Error func(kind string) // timeout, connection, redis, bad_value
}

// Shared is the store of a replica in a fleet: Redis first, and an
// in-memory store that always holds this replica's own writes and answers
// alone while Redis is slow, down or wrong. It never turns a Redis problem
// into an error for the caller: mail must flow.
type Shared struct {
	remote atomic.Pointer[Redis] // nil until a first connection succeeds
	dial   func() (*Redis, error)
	local  *Memory
	hooks  SharedHooks
	log    *slog.Logger

	up     atomic.Bool
	mu     sync.Mutex
	probe  chan struct{} // a health loop is running while Redis is down
	closed chan struct{}
}

// ErrStoreDown says the shared store is not in use now; fleet callers
// fall back to their local limits.
var ErrStoreDown = errors.New("shared store down; local only")

// NewShared puts the Redis that dial connects to in front of local. A
// Redis that cannot be reached at start is connected to later: the
// replica starts alone.
func NewShared(dial func() (*Redis, error), local *Memory, hooks SharedHooks, log *slog.Logger) *Shared {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Shared{dial: dial, local: local, hooks: hooks, log: log, closed: make(chan struct{})}
	s.up.Store(true)
	if hooks.Up != nil {
		hooks.Up(true)
	}
	r, err := dial()
	if err == nil {
		s.remote.Store(r)
		err = r.Ping(context.Background())
	}
	if err != nil {
		s.failed(err)
	}
	return s
}

// Close stops the health loop and the Redis client.
func (s *Shared) Close() {
	close(s.closed)
	if r := s.remote.Load(); r != nil {
		r.Close()
	}
}

// redis is the Redis to use now, or nil.
func (s *Shared) redis() *Redis {
	if !s.up.Load() {
		return nil
	}
	return s.remote.Load()
}

// failed notes a Redis error: counted by kind; anything but a bad value
// takes Redis out of use until a ping answers again.
func (s *Shared) failed(err error) {
	kind := errorKind(err)
	if s.hooks.Error != nil {
		s.hooks.Error(kind)
	}
	if kind == "bad_value" {
		return
	}
	if s.up.CompareAndSwap(true, false) {
		s.log.Warn("shared store unreachable; using local cache and limits until it answers", "err", err)
		if s.hooks.Up != nil {
			s.hooks.Up(false)
		}
		go s.healthLoop()
	}
}

func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, ErrBadValue):
		return "bad_value"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &ne):
		return "connection"
	}
	return "redis"
}

func (s *Shared) healthLoop() {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.closed:
			return
		case <-t.C:
		}
		r := s.remote.Load()
		if r == nil {
			var err error
			if r, err = s.dial(); err != nil {
				continue
			}
			s.remote.Store(r)
		}
		if err := r.Ping(context.Background()); err == nil {
			s.up.Store(true)
			s.log.Info("shared store answers again; sharing resumed")
			if s.hooks.Up != nil {
				s.hooks.Up(true)
			}
			return
		}
	}
}

func (s *Shared) Get(ctx context.Context, key string) (Entry, time.Duration, bool, error) {
	return s.read(ctx, key, (*Redis).Get)
}

// GetFresh reads key from Redis past its near-cache (see Redis.GetFresh);
// from the local store while Redis is not in use.
func (s *Shared) GetFresh(ctx context.Context, key string) (Entry, time.Duration, bool, error) {
	return s.read(ctx, key, (*Redis).GetFresh)
}

// read asks Redis with get while it is in use, else the local store.
func (s *Shared) read(ctx context.Context, key string, get func(*Redis, context.Context, string) (Entry, time.Duration, bool, error)) (Entry, time.Duration, bool, error) {
	if r := s.redis(); r != nil {
		e, left, ok, err := get(r, ctx, key)
		if err == nil {
			return e, left, ok, nil
		}
		s.failed(err)
		if errors.Is(err, ErrBadValue) {
			return Entry{}, 0, false, nil // a miss: probe again and overwrite it
		}
	}
	return s.local.Get(ctx, key)
}

func (s *Shared) Set(ctx context.Context, key string, e Entry, ttl time.Duration) error {
	if err := s.local.Set(ctx, key, e, ttl); err != nil {
		return err
	}

	if r := s.redis(); r != nil {
		if err := r.Set(ctx, key, e, ttl); err != nil {
			s.failed(err)
		}
	}
	return nil
}

// Delete removes keys here and, fleet-wide, in Redis; it fails when Redis
// cannot be reached, since the operator asked for the fleet.
func (s *Shared) Delete(ctx context.Context, keys ...string) (int, error) {
	n, _ := s.local.Delete(ctx, keys...)

	r := s.remote.Load()
	if r == nil {
		return n, ErrStoreDown
	}
	m, err := r.Delete(ctx, keys...)
	if err != nil {
		s.failed(err)
		return n, err
	}
	return max(n, m), nil
}

// Lease is Redis's lease while Redis is in use; alone, every lease is
// granted (the verifier still merges this replica's own lookups).
func (s *Shared) Lease(ctx context.Context, key string, ttl time.Duration) (func(), bool, error) {
	if r := s.redis(); r != nil {
		release, ok, err := r.Lease(ctx, key, ttl)
		if err == nil {
			return release, ok, nil
		}
		s.failed(err)
	}
	return func() {}, true, nil
}

// Acquire is Redis's fleet-wide limit; ErrStoreDown when Redis is not in
// use, so the caller applies its local limits.
func (s *Shared) Acquire(ctx context.Context, key string, concurrency, rate int, hold time.Duration) (func(), string, error) {
	r := s.redis()
	if r == nil {
		return nil, "", ErrStoreDown
	}
	release, refused, err := r.Acquire(ctx, key, concurrency, rate, hold)
	if err != nil {
		s.failed(err)
		return nil, "", ErrStoreDown
	}
	return release, refused, nil
}

// Scan lists keys in Redis (cache show and forget of a domain).
func (s *Shared) Scan(ctx context.Context, match string, limit int) ([]string, error) {
	r := s.remote.Load()
	if r == nil {
		return nil, ErrStoreDown
	}
	return r.Scan(ctx, match, limit)
}
