package filter

import (
	"context"
	"net/netip"
	"slices"
	"sync"

	"github.com/miekg/dns"

	"github.com/senderguard/senderguard/checks/spf"
)

// maxPTRNames bounds the reverse DNS names a client is checked by.
const maxPTRNames = 10

// dnsWhitelisted tells why the client is whitelisted by a rule that
// needs DNS (spf.whitelist.verified_helo_names, spf_domains,
// ptr_domains), "" when none applies. The lookups run at once, within
// ctx; a lookup that fails whitelists nothing.
func (s *session) dnsWhitelisted(ctx context.Context, rt *runtime) string {
	if len(rt.verifiedHelo)+len(rt.spfDomains)+len(rt.ptrDomains) == 0 || s.f.deps.SPF == nil {
		return ""
	}
	ip := s.conn.ip
	var (
		mu     sync.Mutex
		reason string
		wg     sync.WaitGroup
	)
	found := func(r string) {
		mu.Lock()
		if reason == "" {
			reason = r
		}
		mu.Unlock()
	}
	if helo := canonicalName(s.conn.helo); slices.Contains(rt.verifiedHelo, helo) {
		wg.Go(func() {
			if s.resolvesTo(ctx, helo, ip) {
				found("whitelist-verified-helo")
			}
		})
	}
	for _, d := range rt.spfDomains {
		wg.Go(func() {
			// The forwarder passes its own domain's SPF record (RFC 7208
			// check_host with postmaster@domain).
			if r := s.f.deps.SPF.CheckMailFrom(ctx, ip, d, d); r.Status == spf.Pass {
				found("whitelist-spf-domain")
			}
		})
	}
	if len(rt.ptrDomains) > 0 {
		wg.Go(func() {
			if s.ptrIn(ctx, rt.ptrDomains, ip) {
				found("whitelist-ptr")
			}
		})
	}
	wg.Wait()
	return reason
}

// resolvesTo reports whether name has ip among its A (IPv4) or AAAA
// (IPv6) records.
func (s *session) resolvesTo(ctx context.Context, name string, ip netip.Addr) bool {
	qt := dns.TypeA
	if ip.Is6() {
		qt = dns.TypeAAAA
	}
	a, err := s.f.deps.SPF.Resolver.Query(ctx, name, qt)
	return err == nil && slices.Contains(a.Addrs, ip)
}

// ptrIn reports whether a reverse DNS name of ip is in one of domains
// (or below) and resolves back to ip (forward-confirmed, as Postfix and
// RFC 7208 §5.5 validate a name).
func (s *session) ptrIn(ctx context.Context, domains []string, ip netip.Addr) bool {
	rev, err := dns.ReverseAddr(ip.String())
	if err != nil {
		return false
	}
	a, err := s.f.deps.SPF.Resolver.Query(ctx, rev, dns.TypePTR)
	if err != nil {
		return false
	}
	for i, name := range a.PTR {
		if i == maxPTRNames {
			break
		}
		if matchName(domains, name, true) && s.resolvesTo(ctx, name, ip) {
			return true
		}
	}
	return false
}
