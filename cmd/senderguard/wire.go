package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/checks/dmarc"
	"github.com/senderguard/senderguard/checks/dnsbl"
	"github.com/senderguard/senderguard/checks/resolver"
	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/config"
	"github.com/senderguard/senderguard/metrics"
)

// newQuerier builds the cached stub resolver over servers (or
// /etc/resolv.conf).
func newQuerier(c config.DNS, m *dnsHooks) (*resolver.Cached, error) {
	servers := c.Servers
	if len(servers) == 0 {
		s, err := resolver.ServersFromResolvConf("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("no -dns servers given and %v", err)
		}
		servers = s
	}
	stub := &resolver.Stub{Servers: servers, Timeout: c.Timeout.D(), Attempts: c.Attempts}
	var hooks cache.Hooks
	if m != nil {
		stub.OnQuery = m.onQuery
		stub.OnServerHealth = m.serverUp
		for _, srv := range servers {
			m.serverUp(srv, true)
		}
		hooks = m.cache
	}
	return resolver.NewCached(stub, resolver.CacheConfig{
		Size: c.CacheSize, MaxBytes: int64(c.CacheMaxBytes), KeepTXT: keepTXT, MinTTL: c.MinTTL.D(), MaxTTL: c.MaxTTL.D(), NegativeTTL: c.NegativeTTL.D(),
	}, nil, hooks)
}

// keepTXT: the TXT strings a check reads (SPF records, DMARC policies);
// the cache drops the rest of a TXT answer.
func keepTXT(t string) bool { return spf.IsRecord(t) || dmarc.IsRecord(t) }

// gauge is a boolean as a gauge's value: 1 or 0.
func gauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// dnsHooks feed resolver events to metrics.
type dnsHooks struct {
	onQuery  func(qtype uint16, outcome string, d time.Duration)
	serverUp func(server string, up bool)
	cache    cache.Hooks
}

func metricHooks(m *metrics.Metrics) *dnsHooks {
	return &dnsHooks{
		onQuery: func(qtype uint16, outcome string, d time.Duration) {
			m.DNSQueries.WithLabelValues(dns.TypeToString[qtype], outcome).Inc()
			m.DNSDuration.Observe(d.Seconds())
		},
		serverUp: func(server string, up bool) {
			m.DNSServerUp.WithLabelValues(server).Set(gauge(up))
		},
		cache: cacheHooks(m, "dns"),
	}
}

func cacheHooks(m *metrics.Metrics, name string) cache.Hooks {
	hit, miss := m.CacheRequests.WithLabelValues(name, "hit"), m.CacheRequests.WithLabelValues(name, "miss")
	ev := map[string]prometheus.Counter{}
	for _, r := range []string{cache.EvictEntries, cache.EvictBytes, cache.EvictExpired, cache.EvictRemoved} {
		ev[r] = m.CacheEvictions.WithLabelValues(name, r) // 0 from the start, not absent
	}
	return cache.Hooks{Hit: hit.Inc, Miss: miss.Inc, Evicted: func(reason string) { ev[reason].Inc() }}
}

// newVerifier builds the callout prober, or nil when callouts are off,
// and the store it learns into: memory, or Redis shared with the fleet.
func newVerifier(cfg *config.Config, q resolver.Querier, m *metrics.Metrics, logger *slog.Logger) (*callout.Verifier, func(), error) {
	if !cfg.Callout.Enabled {
		return nil, func() {}, nil
	}
	co := cfg.Callout
	store, closeStore, err := newStore(cfg, m, logger)
	if err != nil {
		return nil, nil, err
	}
	for _, rule := range callout.RuleNames() {
		m.ProbeRules.WithLabelValues(rule)
	}
	hooks := callout.Hooks{
		Probe: func(c callout.Class, d time.Duration) {
			m.Probes.WithLabelValues(string(c)).Inc()
			m.ProbeDuration.Observe(d.Seconds())
		},
		Rule:    func(rule string) { m.ProbeRules.WithLabelValues(rule).Inc() },
		Skip:    func(reason string) { m.ProbesSkipped.WithLabelValues(reason).Inc() },
		Breaker: m.BreakerTrips.Inc,
		TLS:     func(o callout.TLSOutcome) { m.ProbesTLS.WithLabelValues(string(o)).Inc() },
		Postmaster: func(accepted bool) {
			result := "refused"
			if accepted {
				result = "accepted"
			}
			m.PostmasterChecks.WithLabelValues(result).Inc()
		},
		FleetWait: func(found bool) {
			result := "timeout"
			if found {
				result = "result"
			}
			m.FleetWaits.WithLabelValues(result).Inc()
		},
	}
	p := newProber(cfg, q)
	sources := callout.NewSourceLog()
	p.OnConnect = func(local netip.Addr) {
		sources.Note(local)
		m.ProbeConnections.Inc()
	}
	stopWatch := func() {}
	if w := newWatch(cfg, q, store, watchAddresses(co, sources, logger), m, logger); w != nil {
		p.Pause = w // paused only with pause_when_listed (the watch's Pause)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		w.Check(ctx) // at start, before the first probe
		cancel()
		ctx, stopWatch = context.WithCancel(context.Background())
		go w.Run(ctx)
	}
	// The prober's gate: per-host limits, the tarpit share (half the
	// global slots) and the breakers, in the verifier's store.
	p.Gate = callout.NewGate(store, callout.GateConfig{
		PerHostConcurrency: co.PerHostConcurrency, PerHostRatePerMinute: co.PerHostRatePerMinute,
		BannerPatience: co.BannerPatience.D(), Tarpits: max(co.GlobalConcurrency/2, 1),
		BreakerTTL: co.BreakerTTL.D(), Hold: co.ProbeTimeout.D() + callout.FleetMargin,
	}, hooks, logger)
	v := callout.NewVerifier(p, store, callout.VerifierConfig{
		TTLExists: co.TTLExists.D(), TTLNotExists: co.TTLNotExists.D(), TTLUnknown: co.TTLUnknown.D(),
		RefreshAfter: co.RefreshAfter.D(), GreylistRetry: co.GreylistRetry.D(),
		ProbeTimeout: co.ProbeTimeout.D(), Async: co.Async, GlobalConcurrency: co.GlobalConcurrency,
		PerDomainConcurrency: co.PerDomainConcurrency, PerDomainRatePerMinute: co.PerDomainRatePerMinute,
		GlobalRatePerMinute: co.GlobalRatePerMinute,
	}, hooks, logger)
	return v, func() { stopWatch(); v.Close(); closeStore() }, nil
}

// watchAddresses is what the blocklist watch looks up: the configured
// source addresses; else the public address (a prober behind NAT); else
// the public local addresses recent probe connections left from (a
// private one is not what the probed hosts saw: set public_address).
func watchAddresses(co config.Callout, sources *callout.SourceLog, logger *slog.Logger) func() []netip.Addr {
	var fixed []netip.Addr
	for _, s := range []string{co.SourceIPv4, co.SourceIPv6} {
		if ip, err := netip.ParseAddr(s); err == nil {
			fixed = append(fixed, ip)
		}
	}
	if len(fixed) == 0 {
		if ip, err := netip.ParseAddr(co.PublicAddress); err == nil {
			fixed = append(fixed, ip)
		}
	}
	if len(fixed) > 0 {
		return func() []netip.Addr { return fixed }
	}
	var warned sync.Once
	return func() []netip.Addr {
		var out []netip.Addr
		for _, a := range sources.Recent() {
			if callout.Public(a) {
				out = append(out, a)
				continue
			}
			warned.Do(func() {
				logger.Warn("blocklist watch: probes leave from a private address; set callout.public_address to the address the Internet sees, or callout.source_ipv4/6", "address", a.String())
			})
		}
		return out
	}
}

// newWatch builds the blocklist watch of the probe addresses, or nil when
// no blocklist is configured.
func newWatch(cfg *config.Config, q resolver.Querier, store cache.Store, addrs func() []netip.Addr, m *metrics.Metrics, logger *slog.Logger) *dnsbl.Watch {
	co := cfg.Callout
	if len(co.Blocklists) == 0 {
		return nil
	}
	return dnsbl.NewWatch(q, store, dnsbl.WatchConfig{
		Zones: co.Blocklists, Interval: co.BlocklistInterval.D(), Addresses: addrs, Pause: co.PauseWhenListed,
	}, dnsbl.WatchHooks{
		Listed: func(addr, zone string, listed bool) {
			m.SourceListed.WithLabelValues(addr, zone).Set(gauge(listed))
		},
		Paused: func(paused bool) {
			m.ProbesPaused.Set(gauge(paused))
		},
	}, logger)
}

// newStore is the callout store: in memory, or Redis in front of memory.
func newStore(cfg *config.Config, m *metrics.Metrics, logger *slog.Logger) (cache.Store, func(), error) {
	local, err := cache.NewMemory(cfg.Callout.CacheSize, nil, cacheHooks(m, "callout"))
	if err != nil {
		return nil, nil, err
	}
	if cfg.Redis.URL == "" {
		return local, func() {}, nil
	}
	opts, err := redisOptions(cfg)
	if err != nil {
		return nil, nil, err
	}
	for _, k := range []string{"timeout", "connection", "redis", "bad_value"} {
		m.StoreErrors.WithLabelValues(k) // 0 from the start
	}
	shared := cache.NewShared(func() (*cache.Redis, error) { return cache.NewRedis(opts) }, local, cache.SharedHooks{
		Up: func(up bool) {
			m.StoreUp.WithLabelValues().Set(gauge(up))
		},
		Error: func(kind string) { m.StoreErrors.WithLabelValues(kind).Inc() },
	}, logger)
	return shared, shared.Close, nil
}

// redisOptions are cfg's Redis settings with the password from its file
// or the environment.
func redisOptions(cfg *config.Config) (cache.RedisOptions, error) {
	r := cfg.Redis
	o := cache.RedisOptions{URL: string(r.URL), KeyPrefix: r.KeyPrefix, Timeout: r.Timeout.D(), NearCacheBytes: r.NearCacheBytes,
		Username: r.Username, CAFile: r.TLSCAFile, CertFile: r.TLSCertFile, KeyFile: r.TLSKeyFile}
	switch {
	case r.PasswordFile != "":
		b, err := os.ReadFile(r.PasswordFile)
		if err != nil {
			return o, fmt.Errorf("redis password file: %w", err)
		}
		o.Password = strings.TrimRight(string(b), "\r\n")
	case os.Getenv("SENDERGUARD_REDIS_PASSWORD") != "":
		o.Password = os.Getenv("SENDERGUARD_REDIS_PASSWORD")
	}
	return o, nil
}

func newProber(cfg *config.Config, q resolver.Querier) *callout.Prober {
	co := cfg.Callout
	// Without callout.helo, our host name if it is fully qualified; else
	// the prober says the address literal of each connection's local
	// address, never a bare host name that strict servers refuse.
	helo := co.Helo
	if h := cfg.Host(); helo == "" && config.Qualified(h) {
		helo = h
	}
	p := &callout.Prober{Resolver: q, Port: co.Port, Helo: helo, MailFrom: co.MailFrom,
		AllowPrivate: co.AllowPrivate, StepTimeout: co.StepTimeout.D(), CatchAllTest: co.CatchAllTest, TLS: callout.TLSMode(co.TLS),
		SkipMXHosts: co.SkipMXHosts}
	// Validated: each of its family and an address of this host.
	p.SourceIPv4, _ = netip.ParseAddr(co.SourceIPv4)
	p.SourceIPv6, _ = netip.ParseAddr(co.SourceIPv6)
	return p
}
