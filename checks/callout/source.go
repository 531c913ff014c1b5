package callout

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/senderguard/senderguard/checks/resolver"
)

// Rule names of results no connection decided: probes paused while a
// source address is listed on a blocklist, and domains whose mail hosts
// match callout.skip_mx_hosts.
const (
	RulePausedListed = "paused-listed"
	RuleSkipMXHost   = "skip-mx-host"
)

// Pauser says whether probes must not be made now (a source address is
// listed) and why; the blocklist watch is one.
type Pauser interface {
	Paused() (why string, paused bool)
}

// source is the local address a probe of ip binds: the IPv4 source for an
// IPv4 mail host, the IPv6 one for IPv6; invalid when none is set for that
// family (the kernel picks, as for any connection).
func (p *Prober) source(ip netip.Addr) netip.Addr {
	if ip.Unmap().Is4() {
		return p.SourceIPv4
	}
	return p.SourceIPv6
}

// precheck answers for a without a connection when none may be made: the
// probes are paused, or a mail host of the domain matches SkipMXHosts.
// It returns nil when the probe may go on.
func (p *Prober) precheck(ctx context.Context, a Address) *Result {
	if p.Pause != nil {
		if why, paused := p.Pause.Paused(); paused {
			p.tracef("probes paused: %s", why)
			return &Result{Class: Unknown, Rule: RulePausedListed, Err: fmt.Errorf("probes paused: %s", why)}
		}
	}
	if len(p.SkipMXHosts) == 0 {
		return nil
	}
	ans, err := p.Resolver.Query(ctx, a.Domain, dns.TypeMX)
	if err != nil || ans.Rcode == resolver.NXDomain || ans.NullMX() {
		return nil // the probe reads (and reports) the same answer
	}
	hosts := []string{a.Domain} // implicit MX (RFC 5321 §5.1)
	if len(ans.MX) > 0 {
		hosts = hosts[:0]
		for _, mx := range ans.MX {
			hosts = append(hosts, mx.Host)
		}
	}
	for _, h := range hosts {
		if pat, ok := MatchHost(p.SkipMXHosts, h); ok {
			p.tracef("%s: mail host %s matches skip pattern %s; not probed", a.Domain, h, pat)
			return &Result{Class: Unknown, Host: h, Rule: RuleSkipMXHost,
				Err: fmt.Errorf("mail host %s matches callout.skip_mx_hosts %s: not probed", h, pat)}
		}
	}
	return nil
}

// MatchHost reports the first pattern that matches host: a name matches
// itself, "*.name" matches every name below it (not name itself).
// Patterns and host are compared case-insensitively, without a final dot.
func MatchHost(patterns []string, host string) (string, bool) {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, pat := range patterns {
		p := strings.ToLower(strings.TrimSuffix(pat, "."))
		if rest, ok := strings.CutPrefix(p, "*."); ok {
			if strings.HasSuffix(host, "."+rest) {
				return pat, true
			}
		} else if host == p {
			return pat, true
		}
	}
	return "", false
}

// SourceLog remembers the local addresses probe connections left from,
// for the blocklist watch of a prober that has no configured source
// address: the kernel's choice is the address the probed hosts saw.
type SourceLog struct {
	mu   sync.Mutex
	seen map[netip.Addr]time.Time
	now  func() time.Time
}

// maxSources bounds the addresses a SourceLog keeps (a host has few).
const maxSources = 16

// sourceMemory is how long an address counts as recent after its last
// probe connection.
const sourceMemory = 24 * time.Hour

// NewSourceLog returns an empty log.
func NewSourceLog() *SourceLog {
	return &SourceLog{seen: map[netip.Addr]time.Time{}, now: time.Now}
}

// Note records a connection's local address.
func (l *SourceLog) Note(a netip.Addr) {
	if !a.IsValid() {
		return
	}
	a = a.Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[a]; !ok && len(l.seen) >= maxSources {
		l.forgetOldest()
	}
	l.seen[a] = l.now()
}

func (l *SourceLog) forgetOldest() {
	var oldest netip.Addr
	var at time.Time
	for a, t := range l.seen {
		if !oldest.IsValid() || t.Before(at) {
			oldest, at = a, t
		}
	}
	delete(l.seen, oldest)
}

// Recent lists the addresses used within the last day, sorted.
func (l *SourceLog) Recent() []netip.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []netip.Addr
	for a, t := range l.seen {
		if l.now().Sub(t) <= sourceMemory {
			out = append(out, a)
		} else {
			delete(l.seen, a)
		}
	}
	slices.SortFunc(out, func(x, y netip.Addr) int { return x.Compare(y) })
	return out
}
