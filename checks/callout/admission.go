package callout

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"
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

// admission is one connection to a mail host address under the per-host
// limits and the share of slots for hosts that keep us waiting.
type admission struct {
	v       *Verifier
	ip      string
	host    string
	abort   func()
	release func() // the per-host slot, fleet-wide or local
	timer   *time.Timer

	mu       sync.Mutex
	answered bool
	tarpit   bool // holds a tarpit slot
}

// admit is the prober's Gate: per-host limits, and at most half the
// global slots for connections still waiting for a banner after
// BannerPatience.
func (v *Verifier) admit(ctx context.Context, ip netip.Addr, host string, abort func()) (Admission, string) {
	key := ip.String()
	release, refused := v.acquireHost(ctx, key)
	if refused != "" {
		v.skip("host_" + refused)
		return nil, "host " + refused
	}
	a := &admission{v: v, ip: key, host: host, abort: abort, release: release}
	a.timer = time.AfterFunc(v.cfg.BannerPatience, a.patienceEnded)
	return a, ""
}

// acquireHost takes a connection slot and a rate unit of one mail host
// address: fleet-wide while a shared store is up (N replicas must not
// give one MX N times the budget), else this replica's own.
func (v *Verifier) acquireHost(ctx context.Context, ip string) (release func(), refused string) {
	if v.fleet != nil {
		release, refused, err := v.fleet.Acquire(ctx, hostAddrKey(ip), v.cfg.PerHostConcurrency, v.cfg.PerHostRatePerMinute, v.cfg.ProbeTimeout+fleetMargin)
		if err == nil {
			return release, refused
		}
	}
	if refused := v.hosts.acquire(ip); refused != "" {
		return nil, refused
	}
	return func() { v.hosts.release(ip) }, ""
}

// patienceEnded: no banner yet. Take a tarpit slot, or cut the connection.
func (a *admission) patienceEnded() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.answered {
		return
	}
	select {
	case a.v.tarpits <- struct{}{}:
		a.tarpit = true
	default:
		a.v.skip("unanswered_hosts")
		a.abort()
	}
}

func (a *admission) Answered() {
	a.timer.Stop()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.answered = true
	if a.tarpit {
		a.tarpit = false
		<-a.v.tarpits
	}
}

func (a *admission) Done(r *Result) {
	a.Answered()
	v := a.v
	a.release()
	if r.Reply != nil || r.tlsFailed() {
		v.silent.reset(a.ip) // it speaks SMTP
		return
	}
	if r.Err == nil || v.bgCtx.Err() != nil {
		return
	}
	// No SMTP reply at all: a timeout, a drop, a reset, or cut off as a
	// tarpit.
	if v.silent.add(a.ip) == hostFailuresToBreak {
		v.openBreaker(a.host, "", fmt.Sprintf("%d connections in a row without an SMTP reply (%v)", hostFailuresToBreak, r.Err))
	}
}
