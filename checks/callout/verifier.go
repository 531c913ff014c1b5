package callout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
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
	GreylistRetry                       time.Duration // delay of the one re-probe after a 4xx at RCPT
	ProbeTimeout                        time.Duration // bound of one probe over all hosts
	Async                               bool          // probes outlive the stage budget and fill the cache
	GlobalConcurrency                   int
	PerDomainConcurrency                int
	PerDomainRatePerMinute              int
	// GlobalRatePerMinute bounds all probes (fleet-wide with a shared
	// store); 0 means 1200.
	GlobalRatePerMinute int
}

// fleet is a store that several replicas share: one probe per address
// per fleet (leases) and fleet-wide limits. cache.Shared is one; an error
// means "alone for now": the local limits apply.
type fleet interface {
	Lease(ctx context.Context, key string, ttl time.Duration) (release func(), ok bool, err error)
	Acquire(ctx context.Context, key string, concurrency, rate int, hold time.Duration) (release func(), refused string, err error)
	// GetFresh reads past any near-cache.
	GetFresh(ctx context.Context, key string) (cache.Entry, time.Duration, bool, error)
}

// FleetMargin is added to the probe timeout for leases and fleet slots,
// so they outlive the probe that holds them and free themselves if its
// replica dies.
const FleetMargin = 5 * time.Second

// Hooks report events for metrics; a nil field reports nowhere.
type Hooks struct {
	Probe   func(c Class, d time.Duration)
	Skip    func(reason string)
	Breaker func()
	// TLS reports how a probe's decisive dialogue was protected.
	TLS func(outcome TLSOutcome)
	// Rule reports the reply rule that classified each probe
	// (RuleNames lists them all).
	Rule func(rule string)
	// FleetWait reports a lookup that waited for another replica's probe
	// and whether its result arrived in time.
	FleetWait func(found bool)
	// Postmaster reports each RCPT TO:<postmaster@domain> asked after an
	// ambiguous refusal, and whether it was accepted.
	Postmaster func(accepted bool)
}

// fill makes every nil hook a no-op, so that callers never check.
func (h *Hooks) fill() {
	if h.Probe == nil {
		h.Probe = func(Class, time.Duration) {}
	}
	if h.Skip == nil {
		h.Skip = func(string) {}
	}
	if h.Breaker == nil {
		h.Breaker = func() {}
	}
	if h.TLS == nil {
		h.TLS = func(TLSOutcome) {}
	}
	if h.Rule == nil {
		h.Rule = func(string) {}
	}
	if h.FleetWait == nil {
		h.FleetWait = func(bool) {}
	}
	if h.Postmaster == nil {
		h.Postmaster = func(bool) {}
	}
}

// Verifier is the cached, rate-limited, merged front of a Prober.
type Verifier struct {
	prober *Prober
	store  cache.Store
	cfg    VerifierConfig
	hooks  Hooks
	log    *slog.Logger
	now    func() time.Time

	group   singleflight.Group
	global  chan struct{}
	domains *keyedLimiter
	// globalRate is all probes' rate (one key); fleet, when the store is
	// shared, carries leases and fleet-wide limits.
	globalRate *keyedLimiter
	fleet      fleet

	mu      sync.Mutex
	retries map[string]bool
	queue   *retryQueue

	bg       sync.WaitGroup
	bgCtx    context.Context
	bgCancel context.CancelFunc
}

// NewVerifier puts store and cfg's limits in front of p; p's Gate keeps
// the per-host limits and breakers.
func NewVerifier(p *Prober, store cache.Store, cfg VerifierConfig, hooks Hooks, log *slog.Logger) *Verifier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	global := max(cfg.GlobalConcurrency, 1)
	if cfg.GlobalRatePerMinute <= 0 {
		cfg.GlobalRatePerMinute = 1200
	}
	hooks.fill()
	v := &Verifier{prober: p, store: store, cfg: cfg, hooks: hooks, log: log, now: time.Now,
		global:  make(chan struct{}, global),
		retries: map[string]bool{}, bgCtx: ctx, bgCancel: cancel}
	now := func() time.Time { return v.now() }
	v.domains = newKeyedLimiter(cfg.PerDomainConcurrency, cfg.PerDomainRatePerMinute, now)
	v.globalRate = newKeyedLimiter(1<<30, cfg.GlobalRatePerMinute, now)
	v.fleet, _ = store.(fleet)
	v.queue = newRetryQueue(ctx, v.launch)
	return v
}

// Close stops background probes and waits for them.
func (v *Verifier) Close() {
	v.bgCancel()
	v.queue.wait()
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
	ch := v.group.DoChan(addressKey(key), func() (any, error) {
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
	if e, _, ok, err := v.store.Get(ctx, addressKey(key)); err == nil && ok && current(e) {
		r := resultOf(e, a, "cache")
		if r.Class == Exists && v.cfg.RefreshAfter > 0 && v.now().Unix()-e.Stored > int64(v.cfg.RefreshAfter/time.Second) {
			v.background(a, key, true, 0)
		}
		return r, true
	} else if err != nil {
		v.log.Warn("callout cache unavailable; probing", "err", err)
	}
	if e, _, ok, err := v.store.Get(ctx, domainKey(a.Domain)); err == nil && ok {
		switch e.Kind {
		case string(CatchAll):
			return &Result{Class: CatchAll, Address: a.String(), Cached: true, Step: "cache"}, true
		case kindBreaker:
			v.skip("breaker")
			return &Result{Class: Unknown, Address: a.String(), Cached: true, Step: "cache",
				Err: errors.New("domain's mail hosts refused our probes recently; not probed")}, true
		}
	}
	return nil, false
}

// freshResult is the address's entry read from the shared store itself.
func (v *Verifier) freshResult(ctx context.Context, a Address, key string) (*Result, bool) {
	e, _, ok, err := v.fleet.GetFresh(ctx, addressKey(key))
	if err != nil || !ok || !current(e) {
		return nil, false
	}
	return resultOf(e, a, "fleet"), true
}

// current reports whether an address entry may be used: a not-exists
// learned under older reply rules may be a full mailbox, a rate limit or
// a refusal of us that those rules misread, so it is probed again (and
// overwritten) rather than refusing mail for days after an upgrade.
func current(e cache.Entry) bool {
	return e.Kind != string(NotExists) || e.Rules >= RulesVersion
}

// resultOf is the result a cached entry of an address stands for.
func resultOf(e cache.Entry, a Address, step string) *Result {
	r := &Result{Class: Class(e.Kind), Address: a.String(), Cached: true, Step: step}
	if e.Code != 0 {
		r.Reply = &Reply{Code: int(e.Code), Enhanced: e.Enhanced}
	}
	return r
}

func (v *Verifier) skip(reason string) {
	v.hooks.Skip(reason)
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
	// Paused, or a mail host never probed: no lease, no limit, no entry
	// (the answer changes when the listing ends or the MX moves).
	if r := v.prober.precheck(ctx, a); r != nil {
		r.Address = a.String()
		v.hooks.Rule(r.Rule)
		v.skip(strings.ReplaceAll(r.Rule, "-", "_"))
		return r
	}
	if v.fleet != nil {
		release, ok, err := v.fleet.Lease(ctx, addressKey(key), v.cfg.ProbeTimeout+FleetMargin)
		if err == nil && !ok {
			if refresh {
				return &Result{Class: Unknown, Address: a.String(), Err: errors.New("another replica refreshes it")}
			}
			return v.awaitFleet(ctx, a, key)
		}
		if ok {
			defer release()
			// The lease may have just been released by a replica that
			// probed and stored the result, while this replica's read
			// came from a near-cache whose invalidation was still on its
			// way: read the shared store itself before probing again.
			if !refresh {
				if r, found := v.freshResult(ctx, a, key); found {
					return r
				}
			}
		}
	}
	release, reason := v.acquire(ctx, a.Domain)
	if reason != "" {
		v.skip(reason)
		return &Result{Class: Unknown, Address: a.String(), Err: fmt.Errorf("not probed: %s limit reached", reason)}
	}
	defer release()
	pctx, cancel := context.WithTimeout(ctx, v.cfg.ProbeTimeout)
	defer cancel()
	r := v.prober.probeChecked(pctx, a)
	v.hooks.Probe(r.Class, r.Duration)
	v.hooks.Rule(r.RuleName())
	if r.Postmaster != nil {
		v.hooks.Postmaster(r.Postmaster.Code >= 200 && r.Postmaster.Code < 300)
	}
	if r.TLS != "" {
		v.hooks.TLS(r.TLS)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer scancel()
	now := v.now().Unix()
	if g := v.prober.Gate; r.refused && g != nil {
		g.Break(r.Host, a.Domain, "refused our probe: "+r.Reply.String())
	}
	if r.Class == CatchAll {
		v.set(sctx, domainKey(a.Domain), cache.Entry{Kind: string(CatchAll), Stored: now}, v.cfg.TTLExists)
	}
	if refresh && r.Class == Unknown {
		return r // a failed refresh keeps the old positive entry, as Postfix does
	}
	if ttl := v.ttl(r.Class); ttl > 0 {
		e := cache.Entry{Kind: string(r.Class), Stored: now, Rules: RulesVersion}
		if r.Reply != nil {
			e.Code, e.Enhanced = uint16(r.Reply.Code), r.Reply.Enhanced
		}
		v.set(sctx, addressKey(key), e, ttl)
	}
	if r.greylisted() && !refresh {
		v.background(a, key, false, v.cfg.GreylistRetry)
	}
	return r
}

func (v *Verifier) set(ctx context.Context, key string, e cache.Entry, ttl time.Duration) {
	setEntry(ctx, v.store, v.log, key, e, ttl)
}

// setEntry stores e under key; a store that fails is logged, not fatal
// (the entry is learned again).
func setEntry(ctx context.Context, store cache.Store, log *slog.Logger, key string, e cache.Entry, ttl time.Duration) {
	if err := store.Set(ctx, key, e, ttl); err != nil {
		log.Warn("callout cache write failed", "key", key, "err", err)
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
// the one retry after greylisting. At most one is pending per address;
// delayed ones wait in one timer queue, not in a goroutine each.
func (v *Verifier) background(a Address, key string, refresh bool, delay time.Duration) {
	v.mu.Lock()
	if v.retries[key] || len(v.retries) >= 10000 || v.bgCtx.Err() != nil {
		v.mu.Unlock()
		return
	}
	v.retries[key] = true
	v.mu.Unlock()
	job := retryJob{a: a, key: key, refresh: refresh}
	if delay > 0 {
		v.queue.push(time.Now().Add(delay), job)
		return
	}
	v.launch(job)
}

// launch runs one background probe now.
func (v *Verifier) launch(j retryJob) {
	v.bg.Add(1)
	go func() {
		defer v.bg.Done()
		defer func() { v.mu.Lock(); delete(v.retries, j.key); v.mu.Unlock() }()
		if v.bgCtx.Err() != nil {
			return
		}
		v.group.Do(addressKey(j.key), func() (any, error) { return v.probeAndStore(v.bgCtx, j.a, j.key, j.refresh), nil })
	}()
}

// acquire takes a slot of this replica's global concurrency, one unit of
// the global rate and a per-domain slot and rate unit: fleet-wide while a
// shared store is up, else here. It returns the release, or names the
// limit that refused.
func (v *Verifier) acquire(ctx context.Context, domain string) (func(), string) {
	select {
	case v.global <- struct{}{}:
	default:
		return nil, "global_concurrency"
	}
	freeGlobal := func() { <-v.global }
	if v.fleet != nil {
		if release, refused, ok := v.acquireFleet(ctx, domain); ok {
			if refused != "" {
				freeGlobal()
				return nil, refused
			}
			return func() { release(); freeGlobal() }, ""
		}
	}
	if refused := v.globalRate.acquire(""); refused != "" {
		freeGlobal()
		return nil, "global_" + refused
	}
	v.globalRate.release("")
	if refused := v.domains.acquire(domain); refused != "" {
		freeGlobal()
		return nil, "domain_" + refused
	}
	return func() { v.domains.release(domain); freeGlobal() }, ""
}

// acquireFleet takes the global rate and the domain's limits in the
// shared store; ok is false when the store is not in use.
func (v *Verifier) acquireFleet(ctx context.Context, domain string) (release func(), refused string, ok bool) {
	if _, refused, err := v.fleet.Acquire(ctx, globalKey, 0, v.cfg.GlobalRatePerMinute, 0); err != nil {
		return nil, "", false
	} else if refused != "" {
		return nil, "global_" + refused, true
	}
	release, refused, err := v.fleet.Acquire(ctx, domainKey(domain), v.cfg.PerDomainConcurrency, v.cfg.PerDomainRatePerMinute, v.cfg.ProbeTimeout+FleetMargin)
	if err != nil {
		return nil, "", false
	}
	if refused != "" {
		return nil, "domain_" + refused, true
	}
	return release, "", true
}

// awaitFleet waits, within ctx and the probe timeout, for the result of
// the probe another replica holds the lease for.
func (v *Verifier) awaitFleet(ctx context.Context, a Address, key string) *Result {
	ctx, cancel := context.WithTimeout(ctx, v.cfg.ProbeTimeout+FleetMargin)
	defer cancel()
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	for {
		if r, ok := v.cached(ctx, a, key); ok {
			v.hooks.FleetWait(true)
			r.Step = "fleet"
			return r
		}
		select {
		case <-ctx.Done():
			v.hooks.FleetWait(false)
			return &Result{Class: Unknown, Address: a.String(), Err: errors.New("another replica's probe gave no result in time")}
		case <-t.C:
		}
	}
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
