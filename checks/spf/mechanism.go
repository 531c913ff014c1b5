package spf

import (
	"fmt"
	"strings"

	"github.com/miekg/dns"

	"github.com/senderguard/senderguard/checks/resolver"
)

// Mechanism evaluation (RFC 7208 §5) and the name checks it relies on.

func (e *evaluation) match(m *mechanism) (bool, error) {
	switch m.kind {
	case "all":
		return true, nil
	case "ip4", "ip6":
		return m.prefix.Contains(e.ip), nil
	}
	if err := e.countLookup(); err != nil {
		return false, err
	}
	target := e.env.domain
	if m.domain != nil {
		target = e.expandDomain(m.domain)
	}
	switch m.kind {
	case "include":
		r := e.checkHost(target, false)
		switch r.status {
		case Pass:
			e.includeOpen = r.open
			return true, nil
		case TempError:
			return false, r.problem
		case PermError:
			return false, r.problem
		case None:
			return false, fmt.Errorf("%w: include:%s", ErrNoRecord, target)
		}
		return false, nil
	case "a":
		return e.matchHost(target, m, true)
	case "mx":
		return e.matchMX(target, m)
	case "ptr":
		return e.matchPTR(target)
	case "exists":
		a, err := e.query(target, dns.TypeA)
		if err != nil || a == nil {
			return false, err
		}
		return len(a.Addrs) > 0, e.countVoid(a)
	}
	return false, fmt.Errorf("%w: mechanism %q", ErrSyntax, m.kind)
}

// query asks the resolver; an unusable name is a void answer, not a query.
func (e *evaluation) query(name string, qtype uint16) (*resolver.Answer, error) {
	if !validQueryName(name) {
		if e.trace != nil {
			e.tracef("%q is not a valid name; treated as void", name)
		}
		return &resolver.Answer{Rcode: resolver.NXDomain}, nil
	}
	return e.c.Resolver.Query(e.ctx, name, qtype)
}

func (e *evaluation) addrType() uint16 {
	if e.ip.Is4() {
		return dns.TypeA
	}
	return dns.TypeAAAA
}

// matchHost looks up host's addresses of the client's family and compares
// them under the term's prefix lengths. primary counts void answers.
func (e *evaluation) matchHost(host string, m *mechanism, primary bool) (bool, error) {
	a, err := e.query(host, e.addrType())
	if err != nil {
		return false, err
	}
	if primary {
		if err := e.countVoid(a); err != nil {
			return false, err
		}
	}
	bits := m.cidr4
	if !e.ip.Is4() {
		bits = m.cidr6
	}
	for _, addr := range a.Addrs {
		if bits < 0 {
			if addr == e.ip {
				return true, nil
			}
			continue
		}
		if p, err := addr.Prefix(bits); err == nil && p.Contains(e.ip) {
			return true, nil
		}
	}
	return false, nil
}

func (e *evaluation) matchMX(target string, m *mechanism) (bool, error) {
	a, err := e.query(target, dns.TypeMX)
	if err != nil {
		return false, err
	}
	if err := e.countVoid(a); err != nil {
		return false, err
	}
	if len(a.MX) > maxMXAddrs {
		return false, fmt.Errorf("%w: %s has %d", ErrTooManyMX, target, len(a.MX))
	}
	for _, mx := range a.MX {
		if mx.Host == "" {
			continue // null MX (RFC 7505)
		}
		ok, err := e.matchHost(mx.Host, m, false)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// validatedNames returns the client's PTR names whose addresses include the
// client (RFC 7208 §5.5). DNS errors make names drop out, never temperror.
func (e *evaluation) validatedNames() []string {
	if e.validatedDone {
		return e.validated
	}
	e.validatedDone = true
	rev, err := dns.ReverseAddr(e.ip.String())
	if err != nil {
		return nil
	}
	a, err := e.c.Resolver.Query(e.ctx, rev, dns.TypePTR)
	if err != nil {
		return nil
	}
	names := a.PTR
	if len(names) > maxPTRNames {
		names = names[:maxPTRNames]
	}
	for _, name := range names {
		aa, err := e.query(name, e.addrType())
		if err != nil {
			continue
		}
		for _, addr := range aa.Addrs {
			if addr == e.ip {
				e.validated = append(e.validated, name)
				break
			}
		}
	}
	return e.validated
}

func (e *evaluation) matchPTR(target string) (bool, error) {
	target = strings.ToLower(target)
	for _, name := range e.validatedNames() {
		if name == target || strings.HasSuffix(name, "."+target) {
			return true, nil
		}
	}
	return false, nil
}

// validatedName is %{p}: a validated name equal to, else under, the
// current domain, else any validated name, else "unknown" (RFC 7208 §7.3).
func (e *evaluation) validatedName() string {
	names := e.validatedNames()
	d := strings.ToLower(e.env.domain)
	for _, n := range names {
		if n == d {
			return n
		}
	}
	for _, n := range names {
		if strings.HasSuffix(n, "."+d) {
			return n
		}
	}
	if len(names) > 0 {
		return names[0]
	}
	return "unknown"
}

// validDomain is the check of RFC 7208 §4.3: a multi-label name with
// labels of 1 to 63 octets, at most 253 octets, and a proper top label.
func validDomain(d string) bool {
	if !validQueryName(d) || !strings.Contains(d, ".") {
		return false
	}
	return isTopLabel(d[strings.LastIndexByte(d, '.')+1:])
}

// validQueryName checks the DNS limits of a name we are about to ask for.
func validQueryName(d string) bool {
	d = strings.TrimSuffix(d, ".")
	if d == "" || len(d) > maxDomainLength {
		return false
	}
	start := 0
	for i := 0; i <= len(d); i++ {
		if i == len(d) || d[i] == '.' {
			if n := i - start; n == 0 || n > 63 {
				return false
			}
			start = i + 1
		}
	}
	return true
}
