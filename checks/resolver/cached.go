package resolver

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/senderguard/senderguard/cache"
)

// CacheConfig bounds the answer cache.
type CacheConfig struct {
	Size        int           // entries; 0 means 100000
	MinTTL      time.Duration // floor for every cached answer
	MaxTTL      time.Duration // cap for positive answers; 0 means 24h
	NegativeTTL time.Duration // negative answers without SOA; cap for those with one; 0 means 15m
	// QueryTimeout bounds one merged upstream query, whatever its callers'
	// deadlines (0 means 10s). Callers stop waiting at their own deadline.
	QueryTimeout time.Duration
}

type key struct {
	name  string
	qtype uint16
}

// Cached answers from its cache while an answer lives, and merges identical
// concurrent questions into one upstream query.
type Cached struct {
	next  Querier
	cfg   CacheConfig
	cache *cache.TTL[key, *Answer]
	group singleflight.Group
}

// NewCached puts a cache in front of next.
func NewCached(next Querier, cfg CacheConfig, clock cache.Clock, hooks cache.Hooks) (*Cached, error) {
	if cfg.Size <= 0 {
		cfg.Size = 100000
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = 24 * time.Hour
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = 15 * time.Minute
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 10 * time.Second
	}
	c, err := cache.NewTTL[key, *Answer](cfg.Size, clock, hooks)
	if err != nil {
		return nil, err
	}
	return &Cached{next: next, cfg: cfg, cache: c}, nil
}

// Query answers name/qtype from the cache or asks upstream once for all
// concurrent askers.
func (c *Cached) Query(ctx context.Context, name string, qtype uint16) (*Answer, error) {
	k := key{name: lowerNoDot(name), qtype: qtype}
	if a, _, ok := c.cache.Get(k); ok {
		return a, nil
	}
	ch := c.group.DoChan(k.name+"/"+strconv.Itoa(int(qtype)), func() (any, error) {
		// A flight that ended between our miss and this call cached it.
		if a, _, ok := c.cache.Get(k); ok {
			return a, nil
		}
		// The merged query must not die with the first caller's deadline.
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.QueryTimeout)
		defer cancel()
		a, err := safeQuery(qctx, c.next, k.name, qtype)
		if err != nil {
			return nil, err
		}
		c.cache.Add(k, a, c.lifetime(a))
		return a, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*Answer), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %s: %v", ErrTemporary, k.name, ctx.Err())
	}
}

func (c *Cached) lifetime(a *Answer) time.Duration {
	ttl := a.TTL
	if a.Void() {
		if ttl < 0 || ttl > c.cfg.NegativeTTL {
			ttl = c.cfg.NegativeTTL
		}
	} else if ttl > c.cfg.MaxTTL {
		ttl = c.cfg.MaxTTL
	}
	return max(ttl, c.cfg.MinTTL)
}

// Len is the number of cached answers.
func (c *Cached) Len() int { return c.cache.Len() }

func lowerNoDot(name string) string {
	name = strings.TrimSuffix(name, ".")
	for i := 0; i < len(name); i++ {
		if c := name[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(name)
		}
	}
	return name
}

// safeQuery turns a panic below (a bug, or a library tripping over a
// hostile answer) into a temporary failure: it runs in a singleflight
// goroutine, where a panic would end the process.
func safeQuery(ctx context.Context, q Querier, name string, qtype uint16) (a *Answer, err error) {
	defer func() {
		if p := recover(); p != nil {
			a, err = nil, fmt.Errorf("%w: %s: internal error: %v", ErrTemporary, name, p)
		}
	}()
	return q.Query(ctx, name, qtype)
}
