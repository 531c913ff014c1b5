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
	MaxBytes    int64         // bytes of answers (Answer.Size); 0 means 64 MiB
	MinTTL      time.Duration // floor for every cached answer
	MaxTTL      time.Duration // cap for positive answers; 0 means 24h
	NegativeTTL time.Duration // negative answers without SOA; cap for those with one; 0 means 15m
	// QueryTimeout bounds one merged upstream query, whatever its callers'
	// deadlines (0 means 10s). Callers stop waiting at their own deadline.
	QueryTimeout time.Duration
	// KeepTXT, when set, names the TXT strings the checks read (SPF:
	// v=spf1 records). An answer holding any keeps only those; one holding
	// none keeps its record only when it is the sole one (an exp=
	// explanation), since a check never reads one of several. The others
	// are counted in Answer.OtherTXT.
	KeepTXT func(string) bool
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
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 64 << 20
	}
	cost := func(k key, a *Answer) int64 { return int64(len(k.name)) + a.Size() }
	c, err := cache.NewSizedTTL[key, *Answer](cfg.Size, cfg.MaxBytes, cost, clock, hooks)
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
		a = c.trimTXT(a)
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

// trimTXT keeps of a TXT answer what a check can read (KeepTXT).
func (c *Cached) trimTXT(a *Answer) *Answer {
	if c.cfg.KeepTXT == nil || len(a.TXT) == 0 {
		return a
	}
	kept := 0
	for _, t := range a.TXT {
		if c.cfg.KeepTXT(t) {
			kept++
		}
	}
	if kept == len(a.TXT) || (kept == 0 && len(a.TXT) == 1) {
		return a
	}
	trimmed := *a
	trimmed.TXT = make([]string, 0, kept)
	for _, t := range a.TXT {
		if c.cfg.KeepTXT(t) {
			trimmed.TXT = append(trimmed.TXT, t)
		}
	}
	trimmed.OtherTXT += len(a.TXT) - kept
	return &trimmed
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

// Bytes is what the cached answers hold, as Answer.Size counts it.
func (c *Cached) Bytes() int64 { return c.cache.Bytes() }

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
