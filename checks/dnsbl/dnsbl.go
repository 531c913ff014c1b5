// Package dnsbl looks addresses up on DNS blocklists (RFC 5782) and
// watches the addresses senderguard's probes leave from: a prober listed
// for sending callouts (ips.backscatterer.org lists any address it sees
// doing so) must stop before the listing spreads to the site's mail.
package dnsbl

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/senderguard/senderguard/checks/resolver"
)

// Status is what one list says of one address.
type Status string

const (
	Clean  Status = "clean"  // NXDOMAIN (or no A record): not listed
	Listed Status = "listed" // an A record in 127.0.0.0/8 (RFC 5782 §2.1)
	// Refused: the list would not answer this resolver. Spamhaus answers
	// 127.255.255.0/24 to queries from public or shared resolvers and
	// over its free quota; that is not a listing.
	Refused Status = "refused"
	// Odd: an answer outside 127.0.0.0/8, which no list gives (a resolver
	// that rewrites NXDOMAIN): not a listing.
	Odd    Status = "odd"
	Failed Status = "failed" // the lookup failed (timeout, SERVFAIL): nothing learned
)

// Result is one lookup.
type Result struct {
	Address netip.Addr
	Zone    string
	Status  Status
	Answer  []netip.Addr // the A records, when any
	Err     error        // for Failed
}

// Reason says what the list answered, for logs.
func (r Result) Reason() string {
	switch r.Status {
	case Failed:
		return fmt.Sprintf("%s on %s: lookup failed: %v", r.Address, r.Zone, r.Err)
	case Clean:
		return fmt.Sprintf("%s is not listed on %s", r.Address, r.Zone)
	}
	answers := make([]string, len(r.Answer))
	for i, a := range r.Answer {
		answers[i] = a.String()
	}
	return fmt.Sprintf("%s on %s: %s (%s)", r.Address, r.Zone, r.Status, strings.Join(answers, ","))
}

var (
	loopback8    = netip.MustParsePrefix("127.0.0.0/8")
	refusedRange = netip.MustParsePrefix("127.255.255.0/24")
)

// QueryName is the name asked for addr on zone: IPv4 octets reversed
// (RFC 5782 §2.1), IPv6 nibbles reversed (§2.4).
func QueryName(addr netip.Addr, zone string) string {
	addr = addr.Unmap()
	var b strings.Builder
	if addr.Is4() {
		o := addr.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d.", o[3], o[2], o[1], o[0])
	} else {
		const hex = "0123456789abcdef"
		o := addr.As16()
		for i := len(o) - 1; i >= 0; i-- {
			b.WriteByte(hex[o[i]&0xf])
			b.WriteByte('.')
			b.WriteByte(hex[o[i]>>4])
			b.WriteByte('.')
		}
	}
	b.WriteString(strings.TrimSuffix(zone, "."))
	return b.String()
}

// Lookup asks zone about addr through q.
func Lookup(ctx context.Context, q resolver.Querier, addr netip.Addr, zone string) Result {
	r := Result{Address: addr, Zone: zone}
	ans, err := q.Query(ctx, QueryName(addr, zone), dns.TypeA)
	if err != nil {
		r.Status, r.Err = Failed, err
		return r
	}
	r.Answer = ans.Addrs
	r.Status = Classify(ans.Addrs)
	return r
}

// Classify reads a list's A records: none is clean, 127.255.255.0/24 a
// refused query, anything else in 127.0.0.0/8 a listing. A listing wins
// over a refusal in the same answer; an answer with no 127/8 address is
// odd.
func Classify(addrs []netip.Addr) Status {
	if len(addrs) == 0 {
		return Clean
	}
	st := Odd
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case refusedRange.Contains(a):
			if st == Odd {
				st = Refused
			}
		case loopback8.Contains(a):
			return Listed
		}
	}
	return st
}
