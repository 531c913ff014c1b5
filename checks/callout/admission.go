package callout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/senderguard/senderguard/cache"
)

// hostFailuresToBreak is how many connection failures in a row (timeouts,
// drops, resets: no SMTP reply) open a mail host's breaker.
const hostFailuresToBreak = 3

// maxSilentHosts bounds the hosts whose failures are being counted; past
// it the counts start over (a flood of dead hosts must not grow memory).
const maxSilentHosts = 10000

// silentHosts counts, per mail host address, the connections in a row
// that got no SMTP reply at all. It is this replica's own count: the
// breaker it opens is shared through the store.
type silentHosts struct {
	mu sync.Mutex
	n  map[string]int
}

func (s *silentHosts) add(ip string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == nil || len(s.n) >= maxSilentHosts {
		s.n = map[string]int{}
	}
	s.n[ip]++
	return s.n[ip]
}

func (s *silentHosts) reset(ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.n, ip)
}

// GateConfig are the limits a Gate keeps per mail host address.
type GateConfig struct {
	PerHostConcurrency   int // 0 means 4
	PerHostRatePerMinute int // 0 means 60
	// BannerPatience is how long a connection may wait for a banner
	// before it counts as a tarpit (0 means 5s); Tarpits is how many such
	// connections may be held (half the global probe slots), more are cut
	// off.
	BannerPatience time.Duration
	Tarpits        int
	BreakerTTL     time.Duration // how long a host or domain that refused us is left alone
	// Hold bounds a fleet-wide host slot held by a replica that died
	// (the probe timeout plus a margin).
	Hold time.Duration
}

// Gate admits a Prober's connections to mail hosts: per-host limits
// (fleet-wide while a shared store is up: N replicas must not give one MX
// N times the budget), a share of the global slots for hosts that keep us
// waiting, and breakers: a host that refused us, or three connections in
// a row without an SMTP reply, is left alone for a while.
type Gate struct {
	store   cache.Store
	fleet   fleet // nil unless the store is shared
	cfg     GateConfig
	hooks   Hooks
	log     *slog.Logger
	now     func() time.Time
	hosts   *keyedLimiter // this replica's, while the fleet's is not in use
	silent  silentHosts
	tarpits chan struct{}
}

// NewGate returns a gate keeping its breakers in store.
func NewGate(store cache.Store, cfg GateConfig, hooks Hooks, log *slog.Logger) *Gate {
	if cfg.PerHostConcurrency <= 0 {
		cfg.PerHostConcurrency = 4
	}
	if cfg.PerHostRatePerMinute <= 0 {
		cfg.PerHostRatePerMinute = 60
	}
	if cfg.BannerPatience <= 0 {
		cfg.BannerPatience = 5 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hooks.fill()
	g := &Gate{store: store, cfg: cfg, hooks: hooks, log: log, now: time.Now, tarpits: make(chan struct{}, max(cfg.Tarpits, 1))}
	g.hosts = newKeyedLimiter(cfg.PerHostConcurrency, cfg.PerHostRatePerMinute, func() time.Time { return g.now() })
	g.fleet, _ = store.(fleet)
	return g
}

// Broken reports an open breaker for a mail host.
func (g *Gate) Broken(host string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	e, _, ok, err := g.store.Get(ctx, hostKey(host))
	return err == nil && ok && e.Kind == kindBreaker
}

// Break leaves a mail host (and the domain, when given) alone for
// BreakerTTL.
func (g *Gate) Break(host, domain, why string) {
	g.hooks.Breaker()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	e := cache.Entry{Kind: kindBreaker, Stored: g.now().Unix()}
	setEntry(ctx, g.store, g.log, hostKey(host), e, g.cfg.BreakerTTL)
	if domain != "" {
		setEntry(ctx, g.store, g.log, domainKey(domain), e, g.cfg.BreakerTTL)
	}
	g.log.Warn("callout: not probing mail host for a while", "host", host, "domain", domain, "why", why, "for", g.cfg.BreakerTTL)
}

// Admit takes a connection to ip under the per-host limits, or names the
// limit that refused. abort ends the connection early: a host that keeps
// us waiting past BannerPatience when the tarpit share is taken.
func (g *Gate) Admit(ctx context.Context, ip netip.Addr, host string, abort func()) (*admission, string) {
	key := ip.String()
	release, refused := g.acquireHost(ctx, key)
	if refused != "" {
		g.hooks.Skip("host_" + refused)
		return nil, "host " + refused
	}
	a := &admission{g: g, ctx: ctx, ip: key, host: host, abort: abort, release: release}
	a.timer = time.AfterFunc(g.cfg.BannerPatience, a.patienceEnded)
	return a, ""
}

// acquireHost takes a connection slot and a rate unit of one mail host
// address: fleet-wide while a shared store is up, else this replica's own.
func (g *Gate) acquireHost(ctx context.Context, ip string) (release func(), refused string) {
	if g.fleet != nil {
		release, refused, err := g.fleet.Acquire(ctx, hostAddrKey(ip), g.cfg.PerHostConcurrency, g.cfg.PerHostRatePerMinute, g.cfg.Hold)
		if err == nil {
			return release, refused
		}
	}
	if refused := g.hosts.acquire(ip); refused != "" {
		return nil, refused
	}
	return func() { g.hosts.release(ip) }, ""
}

// admission is one connection a Gate let through.
type admission struct {
	g       *Gate
	ctx     context.Context // the probe's
	ip      string
	host    string
	abort   func()
	release func() // the per-host slot, fleet-wide or local
	timer   *time.Timer

	mu       sync.Mutex
	answered bool
	tarpit   bool // holds a tarpit slot
	cut      bool // aborted as a tarpit
}

// patienceEnded: no banner yet. Take a tarpit slot, or cut the connection.
func (a *admission) patienceEnded() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.answered {
		return
	}
	select {
	case a.g.tarpits <- struct{}{}:
		a.tarpit = true
	default:
		a.g.hooks.Skip("unanswered_hosts")
		a.cut = true
		a.abort()
	}
}

// answer: the host sent its banner, it is not tarpitting. Safe on nil
// (a prober without a gate).
func (a *admission) answer() {
	if a == nil {
		return
	}
	a.timer.Stop()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.answered = true
	if a.tarpit {
		a.tarpit = false
		<-a.g.tarpits
	}
}

// done ends the connection, whose dialogue ended with r.
func (a *admission) done(r *Result) {
	a.answer()
	g := a.g
	a.release()
	if r.Reply != nil || r.tlsFailed() {
		g.silent.reset(a.ip) // it speaks SMTP
		return
	}
	a.mu.Lock()
	cut := a.cut
	a.mu.Unlock()
	if r.Err == nil || (errors.Is(a.ctx.Err(), context.Canceled) && !cut) {
		return // the probe was called off (shutdown): not the host's doing
	}
	// No SMTP reply at all: a timeout, a drop, a reset, or cut off as a
	// tarpit.
	if g.silent.add(a.ip) == hostFailuresToBreak {
		g.Break(a.host, "", fmt.Sprintf("%d connections in a row without an SMTP reply (%v)", hostFailuresToBreak, r.Err))
	}
}
