// Package resolver is senderguard's DNS stub resolver: miekg/dns over UDP
// with EDNS0 and TCP fallback on truncation, retries across the configured
// servers, and precise answers (records, NODATA, NXDOMAIN, or a temporary
// failure). A TTL-respecting cache and query merging sit in front of it
// (cached.go).
package resolver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// ErrTemporary marks answers that may change on retry: SERVFAIL, REFUSED,
// timeouts, unreachable servers. SPF maps it to temperror (RFC 7208 §5).
var ErrTemporary = errors.New("temporary DNS failure")

// Rcode of an answer we keep: success (possibly NODATA) or NXDOMAIN.
type Rcode uint8

const (
	Success  Rcode = iota // NOERROR with or without records
	NXDomain              // RCODE 3, "Name Error"
)

// MX is one mail exchanger record.
type MX struct {
	Pref uint16
	Host string // FQDN, lower case, trailing dot removed; "" for the null MX "."
}

// Answer is what one question returned, already typed. Callers must not
// modify the slices: cached answers are shared.
type Answer struct {
	Rcode Rcode
	TXT   []string // each TXT record's strings joined without spaces (RFC 7208 §3.3)
	// OtherTXT counts TXT records the cache did not keep (see
	// CacheConfig.KeepTXT): they exist, but no check reads them.
	OtherTXT int
	Addrs    []netip.Addr // A or AAAA
	MX       []MX
	PTR      []string // lower case, no trailing dot
	// TTL is how long the answer may be cached: the smallest record TTL for
	// data, the SOA minimum for negative answers (RFC 2308 §5), or -1 when
	// the server gave no hint.
	TTL time.Duration
}

// Void reports an answer with no records of the asked type: NODATA or
// NXDOMAIN (RFC 7208 §4.6.4 calls these void lookups).
func (a *Answer) Void() bool {
	return a.Rcode == NXDomain || len(a.TXT)+len(a.Addrs)+len(a.MX)+len(a.PTR) == 0
}

// Size approximates the memory an answer holds, for the cache's byte
// bound: the strings and slices plus a fixed overhead per answer.
func (a *Answer) Size() int64 {
	n := int64(96)
	for _, t := range a.TXT {
		n += int64(len(t)) + 16
	}
	n += int64(len(a.Addrs)) * 24
	for _, m := range a.MX {
		n += int64(len(m.Host)) + 24
	}
	for _, p := range a.PTR {
		n += int64(len(p)) + 16
	}
	return n
}

// NullMX reports an MX answer that is only the null MX "0 ." (RFC 7505):
// the domain accepts no mail.
func (a *Answer) NullMX() bool { return len(a.MX) == 1 && a.MX[0].Host == "" }

// Querier asks one question. Stub and Cached implement it; SPF and the
// callout prober depend only on this interface.
type Querier interface {
	Query(ctx context.Context, name string, qtype uint16) (*Answer, error)
}

// Stub sends questions to recursive servers.
type Stub struct {
	Servers  []string      // host:port
	Timeout  time.Duration // per attempt and server
	Attempts int           // rounds over all servers
	UDPSize  uint16        // EDNS0 buffer size advertised
	// OnQuery, when set, is called once per exchange with its outcome
	// ("noerror", "nxdomain", "servfail", "timeout", ...).
	OnQuery func(qtype uint16, outcome string, d time.Duration)
	// DownFor is how long a server that did not answer is asked after the
	// others (0 means 30s); once it answers it is asked in its turn again.
	// Without this memory a dead first nameserver costs every uncached
	// question the whole timeout.
	DownFor time.Duration
	// OnServerHealth, when set, is told when a server is found down or
	// answering again.
	OnServerHealth func(server string, up bool)

	mu        sync.Mutex
	downUntil map[string]time.Time
	idle      map[string][]idleConn // TCP connections to reuse, per server
}

// idleConn is a TCP connection to a server, kept for the next truncated
// answer: a new connection per large answer left thousands of sockets in
// TIME_WAIT and can exhaust a remote resolver's ephemeral ports.
type idleConn struct {
	conn  *dns.Conn
	since time.Time
}

const (
	maxIdlePerServer = 4
	// idleTCPFor stays below the idle timeouts of common servers (BIND and
	// Unbound: 30s; miekg/dns: 8s) so a kept connection is rarely stale.
	idleTCPFor = 5 * time.Second
)

// takeIdle returns a kept connection to server, if a fresh one is there.
func (s *Stub) takeIdle(server string) *dns.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	for l := s.idle[server]; len(l) > 0; l = s.idle[server] {
		c := l[len(l)-1]
		s.idle[server] = l[:len(l)-1]
		if time.Since(c.since) < idleTCPFor {
			return c.conn
		}
		c.conn.Close()
	}
	return nil
}

// putIdle keeps a connection that just answered, or closes it.
func (s *Stub) putIdle(server string, c *dns.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idle == nil {
		s.idle = map[string][]idleConn{}
	}
	if len(s.idle[server]) >= maxIdlePerServer {
		c.Close()
		return
	}
	s.idle[server] = append(s.idle[server], idleConn{c, time.Now()})
}

// order is the servers to ask: those that answered lately first, in their
// configured order, then those that did not.
func (s *Stub) order() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.downUntil) == 0 {
		return s.Servers
	}
	now := time.Now()
	up := make([]string, 0, len(s.Servers))
	var down []string
	for _, srv := range s.Servers {
		if until, ok := s.downUntil[srv]; ok && now.Before(until) {
			down = append(down, srv)
		} else {
			up = append(up, srv)
		}
	}
	return append(up, down...)
}

// health records whether server answered at all (any DNS message counts).
func (s *Stub) health(server string, answered bool) {
	s.mu.Lock()
	_, wasDown := s.downUntil[server]
	changed := false
	if answered {
		if wasDown {
			delete(s.downUntil, server)
			changed = true
		}
	} else {
		if s.downUntil == nil {
			s.downUntil = map[string]time.Time{}
		}
		d := s.DownFor
		if d <= 0 {
			d = 30 * time.Second
		}
		s.downUntil[server] = time.Now().Add(d)
		changed = !wasDown
	}
	s.mu.Unlock()
	if changed && s.OnServerHealth != nil {
		s.OnServerHealth(server, answered)
	}
}

// ServersFromResolvConf reads nameserver lines from path.
func ServersFromResolvConf(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var servers []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			ip := strings.SplitN(fields[1], "%", 2)[0]
			if _, err := netip.ParseAddr(ip); err == nil {
				servers = append(servers, net.JoinHostPort(ip, "53"))
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(servers) == 0 {
		return nil, fmt.Errorf("%s: no nameserver lines", path)
	}
	return servers, nil
}

// Query asks name/qtype of each server in turn until one answers
// definitively, within ctx.
func (s *Stub) Query(ctx context.Context, name string, qtype uint16) (*Answer, error) {
	if len(s.Servers) == 0 {
		return nil, fmt.Errorf("%w: no DNS servers configured", ErrTemporary)
	}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	q.RecursionDesired = true
	size := s.UDPSize
	if size == 0 {
		size = 1232
	}
	q.SetEdns0(size, false)
	attempts := max(s.Attempts, 1)
	var last error
	servers := s.order()
	for range attempts {
		for _, server := range servers {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("%w: %s %s: %v", ErrTemporary, dns.TypeToString[qtype], name, err)
			}
			r, err := s.exchange(ctx, q, server)
			if err != nil {
				last = err
				continue
			}
			switch r.Rcode {
			case dns.RcodeSuccess, dns.RcodeNameError:
				return toAnswer(r, qtype), nil
			default:
				last = fmt.Errorf("%s answered %s", server, dns.RcodeToString[r.Rcode])
			}
		}
	}
	return nil, fmt.Errorf("%w: %s %s: %v", ErrTemporary, dns.TypeToString[qtype], name, last)
}

// exchange sends q over UDP and, if the answer is truncated, again over TCP
// to the same server (RFC 7766 §5).
func (s *Stub) exchange(ctx context.Context, q *dns.Msg, server string) (*dns.Msg, error) {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	r, err := s.exchangeNet(ctx, q, server, "udp", timeout)
	if err == nil && r.Truncated {
		r, err = s.exchangeNet(ctx, q, server, "tcp", timeout)
	}
	return r, err
}

func (s *Stub) exchangeNet(parent context.Context, q *dns.Msg, server, network string, timeout time.Duration) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	c := &dns.Client{Net: network, Timeout: timeout, UDPSize: q.IsEdns0().UDPSize()}
	start := time.Now()
	var r *dns.Msg
	var err error
	if network == "tcp" {
		r, err = s.exchangeTCP(ctx, c, q, server)
	} else {
		r, _, err = c.ExchangeContext(ctx, q, server)
	}
	if err == nil {
		s.health(server, true)
	} else if parent.Err() == nil {
		// Silent or unreachable within its own timeout; not when the
		// caller's deadline cut the exchange short.
		s.health(server, false)
	}
	if s.OnQuery != nil {
		outcome := "error"
		switch {
		case err == nil:
			outcome = strings.ToLower(dns.RcodeToString[r.Rcode])
		case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
			outcome = "timeout"
		}
		s.OnQuery(q.Question[0].Qtype, outcome, time.Since(start))
	}
	if err != nil {
		return nil, fmt.Errorf("%s over %s: %w", server, network, err)
	}
	if len(r.Question) != 1 || !strings.EqualFold(unescapeTXT(r.Question[0].Name), unescapeTXT(q.Question[0].Name)) || r.Question[0].Qtype != q.Question[0].Qtype {
		return nil, fmt.Errorf("%s over %s: answer to another question", server, network)
	}
	return r, nil
}

// exchangeTCP asks over a kept TCP connection when there is one (once
// more on a new connection if the server had closed it), and keeps the
// connection afterwards.
func (s *Stub) exchangeTCP(ctx context.Context, c *dns.Client, q *dns.Msg, server string) (*dns.Msg, error) {
	for {
		conn := s.takeIdle(server)
		reused := conn != nil
		if !reused {
			var err error
			if conn, err = c.DialContext(ctx, server); err != nil {
				return nil, err
			}
		}
		r, _, err := c.ExchangeWithConnContext(ctx, q, conn)
		if err == nil {
			s.putIdle(server, conn)
			return r, nil
		}
		conn.Close()
		if !reused || ctx.Err() != nil {
			return nil, err
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// toAnswer keeps the records of the asked type (following the CNAME chain
// the server put in the answer section) and derives the cache lifetime.
func toAnswer(r *dns.Msg, qtype uint16) *Answer {
	a := &Answer{TTL: -1}
	if r.Rcode == dns.RcodeNameError {
		a.Rcode = NXDomain
	}
	minTTL := uint32(1<<32 - 1)
	seen := false
	for _, rr := range r.Answer {
		h := rr.Header()
		if h.Rrtype != qtype && h.Rrtype != dns.TypeCNAME {
			continue
		}
		seen = true
		minTTL = min(minTTL, h.Ttl)
		switch v := rr.(type) {
		case *dns.TXT:
			a.TXT = append(a.TXT, unescapeTXT(strings.Join(v.Txt, "")))
		case *dns.A:
			if ip, ok := netip.AddrFromSlice(v.A.To4()); ok {
				a.Addrs = append(a.Addrs, ip)
			}
		case *dns.AAAA:
			if ip, ok := netip.AddrFromSlice(v.AAAA.To16()); ok {
				a.Addrs = append(a.Addrs, ip)
			}
		case *dns.MX:
			a.MX = append(a.MX, MX{Pref: v.Preference, Host: canonical(v.Mx)})
		case *dns.PTR:
			a.PTR = append(a.PTR, canonical(v.Ptr))
		}
	}
	if seen && !a.Void() {
		a.TTL = time.Duration(minTTL) * time.Second
		return a
	}
	// Negative answer: RFC 2308 §5, the lesser of the SOA's TTL and MINIMUM.
	for _, rr := range r.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			a.TTL = time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
		}
	}
	return a
}

// canonical lower-cases a name and drops the root dot.
func canonical(name string) string {
	return strings.TrimSuffix(strings.ToLower(name), ".")
}

// unescapeTXT turns miekg/dns's presentation form of TXT strings and names (\DDD for
// bytes outside printable ASCII, \" and \\) back into the raw octets, so
// that checks see exactly what the zone holds.
func unescapeTXT(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b = append(b, c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			v := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0')
			if v < 256 {
				b = append(b, byte(v))
				i += 3
				continue
			}
		}
		b = append(b, s[i+1])
		i++
	}
	return string(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
