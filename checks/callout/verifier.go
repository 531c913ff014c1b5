package callout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"

	"github.com/senderguard/senderguard/cache"
)

// VerifierConfig are the manners of the cached prober.
type VerifierConfig struct {
	TTLExists, TTLNotExists, TTLUnknown time.Duration
	RefreshAfter                        time.Duration // a hit on an older positive entry refreshes it
	BreakerTTL                          time.Duration // how long a host or domain that refused us is left alone
	GreylistRetry                       time.Duration // delay of the one re-probe after a 4xx at RCPT
	ProbeTimeout                        time.Duration // bound of one probe over all hosts
	Async                               bool          // probes outlive the stage budget and fill the cache
	GlobalConcurrency                   int
	PerDomainConcurrency                int
	PerDomainRatePerMinute              int
}

// Hooks report events for metrics; nil fields are skipped.
type Hooks struct {
	Probe   func(c Class, d time.Duration)
	Skip    func(reason string)
	Breaker func()
}

// Verifier is the cached, rate-limited, merged front of a Prober.
type Verifier struct {
	prober *Prober
	store  cache.Store
	cfg    VerifierConfig
	hooks  Hooks
	log    *slog.Logger
	now    func() time.Time

	group  singleflight.Group
	global chan struct{}

	mu      sync.Mutex
	domains map[string]*domainState
	retries map[string]bool

	bg       sync.WaitGroup
	bgCtx    context.Context
	bgCancel context.CancelFunc
}

type domainState struct {
	inflight int
	window   time.Time // start of the current one-minute window
	count    int
}

// NewVerifier wires p to store with cfg.
func NewVerifier(p *Prober, store cache.Store, cfg VerifierConfig, hooks Hooks, log *slog.Logger) *Verifier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	v := &Verifier{prober: p, store: store, cfg: cfg, hooks: hooks, log: log, now: time.Now,
		global: make(chan struct{}, max(cfg.GlobalConcurrency, 1)), domains: map[string]*domainState{},
		retries: map[string]bool{}, bgCtx: ctx, bgCancel: cancel}
	p.SkipHost = v.hostBroken
	return v
}

// Close stops background probes and waits for them.
func (v *Verifier) Close() {
	v.bgCancel()
	v.bg.Wait()
}

// Verify classifies addr from the cache or by one merged probe. When the
// probe outlasts ctx, the result is InProgress (async mode) or Unknown.
func (v *Verifier) Verify(ctx context.Context, addr string) *Result {
	a, err := ParseAddress(addr)
	if err != nil {
		return &Result{Class: Unknown, Address: addr, Err: err}
	}
	key := CacheKey(a)
	if r, ok := v.cached(ctx, a, key); ok {
		return r
	}
	probeCtx := ctx
	if v.cfg.Async {
		probeCtx = v.bgCtx
	}
	ch := v.group.DoChan("a:"+key, func() (any, error) {
		return v.probeAndStore(probeCtx, a, key, false), nil
	})
	select {
	case r := <-ch:
		return r.Val.(*Result)
	case <-ctx.Done():
		if v.cfg.Async {
			return &Result{Class: InProgress, Address: addr, Err: errors.New("probe still running")}
		}
		return &Result{Class: Unknown, Address: addr, Err: fmt.Errorf("probe: %w", ctx.Err())}
	}
}

func (v *Verifier) cached(ctx context.Context, a Address, key string) (*Result, bool) {
	if e, _, ok, err := v.store.Get(ctx, "a:"+key); err == nil && ok {
		r := &Result{Class: Class(e.Kind), Address: a.String(), Cached: true, Step: "cache"}
		if e.Code != 0 {
			r.Reply = &Reply{Code: int(e.Code), Enhanced: e.Enhanced}
		}
		if r.Class == Exists && v.cfg.RefreshAfter > 0 && v.now().Unix()-e.Stored > int64(v.cfg.RefreshAfter/time.Second) {
			v.background(a, key, true, 0)
		}
		return r, true
	} else if err != nil {
		v.log.Warn("callout cache unavailable; probing", "err", err)
	}
	if e, _, ok, err := v.store.Get(ctx, "d:"+a.Domain); err == nil && ok {
		switch e.Kind {
		case string(CatchAll):
			return &Result{Class: CatchAll, Address: a.String(), Cached: true, Step: "cache"}, true
		case "breaker":
			v.skip("breaker")
			return &Result{Class: Unknown, Address: a.String(), Cached: true, Step: "cache",
				Err: errors.New("domain's mail hosts refused our probes recently; not probed")}, true
		}
	}
	return nil, false
}

func (v *Verifier) skip(reason string) {
	if v.hooks.Skip != nil {
		v.hooks.Skip(reason)
	}
}

// probeAndStore runs one probe under the limits and caches what it learned.
// A panic (a bug) becomes an unknown result: it runs in goroutines where
// nothing else would catch it, and the filter must not crash.
func (v *Verifier) probeAndStore(ctx context.Context, a Address, key string, refresh bool) (r *Result) {
	defer func() {
		if p := recover(); p != nil {
			v.log.Error("callout probe panicked", "address", a.String(), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			r = &Result{Class: Unknown, Address: a.String(), Err: fmt.Errorf("internal error: %v", p)}
		}
	}()
	return v.probeLimited(ctx, a, key, refresh)
}

func (v *Verifier) probeLimited(ctx context.Context, a Address, key string, refresh bool) *Result {
	if reason := v.acquire(a.Domain); reason != "" {
		v.skip(reason)
		return &Result{Class: Unknown, Address: a.String(), Err: fmt.Errorf("not probed: %s limit reached", reason)}
	}
	defer v.release(a.Domain)
	pctx, cancel := context.WithTimeout(ctx, v.cfg.ProbeTimeout)
	defer cancel()
	r := v.prober.ProbeAddress(pctx, a)
	if v.hooks.Probe != nil {
		v.hooks.Probe(r.Class, r.Duration)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer scancel()
	now := v.now().Unix()
	if r.refused {
		if v.hooks.Breaker != nil {
			v.hooks.Breaker()
		}
		v.set(sctx, "h:"+r.Host, cache.Entry{Kind: "breaker", Stored: now}, v.cfg.BreakerTTL)
		v.set(sctx, "d:"+a.Domain, cache.Entry{Kind: "breaker", Stored: now}, v.cfg.BreakerTTL)
		v.log.Warn("callout refused by mail host; not probing it for a while", "host", r.Host, "domain", a.Domain, "reply", r.Reply.String(), "for", v.cfg.BreakerTTL)
	}
	if r.Class == CatchAll {
		v.set(sctx, "d:"+a.Domain, cache.Entry{Kind: string(CatchAll), Stored: now}, v.cfg.TTLExists)
	}
	if refresh && r.Class == Unknown {
		return r // a failed refresh keeps the old positive entry, as Postfix does
	}
	if ttl := v.ttl(r.Class); ttl > 0 {
		e := cache.Entry{Kind: string(r.Class), Stored: now}
		if r.Reply != nil {
			e.Code, e.Enhanced = uint16(r.Reply.Code), r.Reply.Enhanced
		}
		v.set(sctx, "a:"+key, e, ttl)
	}
	if r.greylisted && !refresh {
		v.background(a, key, false, v.cfg.GreylistRetry)
	}
	return r
}

func (v *Verifier) set(ctx context.Context, key string, e cache.Entry, ttl time.Duration) {
	if err := v.store.Set(ctx, key, e, ttl); err != nil {
		v.log.Warn("callout cache write failed", "key", key, "err", err)
	}
}

func (v *Verifier) ttl(c Class) time.Duration {
	switch c {
	case Exists, CatchAll:
		return v.cfg.TTLExists
	case NotExists, NoMailHost:
		return v.cfg.TTLNotExists
	case Unknown:
		return v.cfg.TTLUnknown
	}
	return 0 // null MX lives in the DNS cache
}

// background re-probes key after delay: a refresh of a positive entry, or
// the one retry after greylisting. At most one is pending per address.
func (v *Verifier) background(a Address, key string, refresh bool, delay time.Duration) {
	v.mu.Lock()
	if v.retries[key] || len(v.retries) >= 10000 || v.bgCtx.Err() != nil {
		v.mu.Unlock()
		return
	}
	v.retries[key] = true
	v.bg.Add(1)
	v.mu.Unlock()
	go func() {
		defer v.bg.Done()
		defer func() { v.mu.Lock(); delete(v.retries, key); v.mu.Unlock() }()
		if delay > 0 {
			t := time.NewTimer(delay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-v.bgCtx.Done():
				return
			}
		}
		v.group.Do("a:"+key, func() (any, error) { return v.probeAndStore(v.bgCtx, a, key, refresh), nil })
	}()
}

// acquire takes a global and a per-domain slot and one unit of the
// domain's rate; it names the limit that refused, or returns "".
func (v *Verifier) acquire(domain string) string {
	select {
	case v.global <- struct{}{}:
	default:
		return "global_concurrency"
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	d := v.domains[domain]
	if d == nil {
		if len(v.domains) > 10000 {
			v.sweepLocked(now)
		}
		d = &domainState{window: now}
		v.domains[domain] = d
	}
	if now.Sub(d.window) >= time.Minute {
		d.window, d.count = now, 0
	}
	switch {
	case d.inflight >= v.cfg.PerDomainConcurrency:
		<-v.global
		return "domain_concurrency"
	case d.count >= v.cfg.PerDomainRatePerMinute:
		<-v.global
		return "domain_rate"
	}
	d.inflight++
	d.count++
	return ""
}

func (v *Verifier) release(domain string) {
	v.mu.Lock()
	if d := v.domains[domain]; d != nil {
		d.inflight--
	}
	v.mu.Unlock()
	<-v.global
}

func (v *Verifier) sweepLocked(now time.Time) {
	for k, d := range v.domains {
		if d.inflight == 0 && now.Sub(d.window) >= time.Minute {
			delete(v.domains, k)
		}
	}
}

// hostBroken reports an open breaker for a mail host.
func (v *Verifier) hostBroken(host string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	e, _, ok, err := v.store.Get(ctx, "h:"+host)
	return err == nil && ok && e.Kind == "breaker"
}

// NullMX reports whether domain publishes a null MX (RFC 7505).
func (v *Verifier) NullMX(ctx context.Context, domain string) (isNull, known bool) {
	if domain == "" {
		return false, false
	}
	a, err := v.prober.Resolver.Query(ctx, domain, dns.TypeMX)
	if err != nil {
		return false, false
	}
	return a.NullMX(), true
}
