package spf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/checks/resolver"
)

// Limits of RFC 7208 §4.6.4.
const (
	maxLookups      = 10
	maxVoidLookups  = 2
	maxMXAddrs      = 10
	maxPTRNames     = 10
	maxDomainLength = 253
)

// Checker evaluates SPF policies. Its fields are read-only once in use.
type Checker struct {
	Resolver resolver.Querier
	// Receiver is our host name, for %{r} in explanations.
	Receiver string
	// Now is the clock for %{t}; nil means time.Now.
	Now func() time.Time
	// VoidLimit is the void-lookup limit (RFC 7208 §4.6.4 says 2, the
	// default when 0).
	VoidLimit int

	// parsed caches parsed records by their text: records are immutable
	// once parsed, and parsing is most of an evaluation's cost. The same
	// bounded cache type as the DNS answers'; the text is the key, so an
	// entry never goes stale and lives a day.
	parsedOnce sync.Once
	parsed     *cache.TTL[string, parsedRecord]
}

type parsedRecord struct {
	rec *record
	err error
}

// parse returns the parsed record for txt, from the cache when it can.
func (c *Checker) parse(txt string) (*record, error) {
	c.parsedOnce.Do(func() { c.parsed, _ = cache.NewTTL[string, parsedRecord](10000, nil, cache.Hooks{}) })
	if p, _, ok := c.parsed.Get(txt); ok {
		return p.rec, p.err
	}
	rec, err := parseRecord(txt)
	if len(txt) <= maxCachedRecord {
		c.parsed.Add(txt, parsedRecord{rec, err}, 24*time.Hour)
	}
	return rec, err
}

// maxCachedRecord keeps the parsed-record cache bounded in bytes (10,000
// entries of at most 1 KiB of text and its parse): real records are a
// few hundred bytes; a hostile 64-KiB one is parsed each time it is used.
const maxCachedRecord = 1024

// Option adjusts one evaluation.
type Option func(*evaluation)

// WithTrace receives one line per evaluation step, for "senderguard spf -v".
func WithTrace(f func(string)) Option { return func(e *evaluation) { e.trace = f } }

// CheckHELO checks the HELO identity (RFC 7208 §2.3) as the sender
// postmaster@helo.
func (c *Checker) CheckHELO(ctx context.Context, ip netip.Addr, helo string, opts ...Option) Result {
	return c.check(ctx, HELO, ip, helo, "postmaster@"+helo, opts)
}

// CheckMailFrom checks the MAIL FROM identity (RFC 7208 §2.4). An empty
// sender (the null reverse path) checks postmaster@helo instead.
func (c *Checker) CheckMailFrom(ctx context.Context, ip netip.Addr, helo, sender string, opts ...Option) Result {
	if sender == "" {
		return c.check(ctx, HELO, ip, helo, "postmaster@"+helo, opts)
	}
	return c.check(ctx, MailFrom, ip, helo, sender, opts)
}

func (c *Checker) check(ctx context.Context, id Identity, ip netip.Addr, helo, sender string, opts []Option) Result {
	ip = ip.Unmap() // RFC 7208 §5: an IPv4-mapped address is IPv4
	local, domain := splitSender(sender)
	e := &evaluation{c: c, ctx: ctx, ip: ip}
	full := sender
	if !strings.HasPrefix(sender, local+"@") {
		full = local + "@" + domain
	}
	e.env = macroEnv{sender: full, local: local, senderDomain: domain, ip: ip, helo: helo, receiver: c.Receiver, now: c.Now, eval: e}
	for _, o := range opts {
		o(e)
	}
	h := e.checkHost(domain, true)
	res := Result{
		Status: h.status, Identity: id, IP: ip, Sender: e.env.sender,
		Domain: h.domain, Mechanism: h.mech, Open: h.open, Explanation: h.explanation, Problem: h.problem,
		Lookups: e.lookups, VoidLookups: e.voids, NoMail: e.topRecord == noMailRecord,
	}
	if e.trace != nil {
		e.tracef("result %s (lookups %d, void %d)", res.Status, e.lookups, e.voids)
	}
	return res
}

// splitSender splits at the last "@"; a missing local part becomes
// "postmaster" (RFC 7208 §4.3).
func splitSender(sender string) (local, domain string) {
	i := strings.LastIndexByte(sender, '@')
	if i < 0 {
		return "postmaster", sender
	}
	local, domain = sender[:i], sender[i+1:]
	if local == "" {
		local = "postmaster"
	}
	return local, domain
}

type evaluation struct {
	c              *Checker
	ctx            context.Context
	ip             netip.Addr
	env            macroEnv
	lookups, voids int
	trace          func(string)
	validated      []string // validated PTR names, for %{p}
	includeOpen    bool     // the last include matched by an open term
	validatedDone  bool
	topRecord      string // the checked domain's own record
}

// noMailRecord is the record of a domain that sends no mail at all.
const noMailRecord = "v=spf1 -all"

// hostResult is the outcome of check_host() for one domain.
type hostResult struct {
	status      Status
	domain      string
	mech        string
	open        bool // mech matches every address
	explanation string
	problem     error
}

func (e *evaluation) tracef(format string, args ...any) {
	if e.trace != nil {
		e.trace(fmt.Sprintf(format, args...))
	}
}

func errResult(status Status, domain string, err error) hostResult {
	return hostResult{status: status, domain: domain, problem: err}
}

// checkHost is check_host() of RFC 7208 §4. top marks the evaluation whose
// fail result needs an explanation (not one reached through include).
func (e *evaluation) checkHost(domain string, top bool) hostResult {
	domain = strings.TrimSuffix(domain, ".")
	if !validDomain(domain) {
		if e.trace != nil {
			e.tracef("%q is not a valid domain name: none", domain)
		}
		return hostResult{status: None, domain: domain} // RFC 7208 §4.3
	}
	txt, err := e.lookupRecord(domain)
	if err != nil {
		status := PermError
		if errors.Is(err, resolver.ErrTemporary) {
			status = TempError
		}
		return errResult(status, domain, err)
	}
	if txt == "" {
		if e.trace != nil {
			e.tracef("%s: no SPF record: none", domain)
		}
		return hostResult{status: None, domain: domain}
	}
	if top && e.topRecord == "" {
		e.topRecord = txt
	}
	if e.trace != nil {
		e.tracef("%s: %q", domain, txt)
	}
	rec, err := e.c.parse(txt)
	if err != nil {
		return errResult(PermError, domain, fmt.Errorf("%s: %w", domain, err))
	}
	saved := e.env.domain
	e.env.domain = domain
	defer func() { e.env.domain = saved }()

	for i := range rec.mechs {
		m := &rec.mechs[i]
		match, err := e.match(m)
		if err != nil {
			status := PermError
			if errors.Is(err, resolver.ErrTemporary) {
				status = TempError
			}
			if e.trace != nil {
				e.tracef("%s: %s: %s (%v)", domain, m.text, status, err)
			}
			return hostResult{status: status, domain: domain, mech: m.text, problem: fmt.Errorf("%s: %s: %w", domain, m.text, err)}
		}
		if e.trace != nil {
			e.tracef("%s: %s: match=%v", domain, m.text, match)
		}
		if match {
			r := hostResult{status: m.qualifier, domain: domain, mech: m.text, open: e.matchesAll(m)}
			if r.status == Fail && top {
				r.explanation = e.explain(rec)
			}
			return r
		}
	}
	if rec.redirect != nil {
		// RFC 7208 §6.1: only reached when no mechanism matched (an "all"
		// anywhere always matches, so it also overrides redirect).
		if err := e.countLookup(); err != nil {
			return errResult(PermError, domain, err)
		}
		target := e.expandDomain(rec.redirect)
		if e.trace != nil {
			e.tracef("%s: redirect=%s", domain, target)
		}
		r := e.checkHost(target, top)
		if r.status == None {
			return errResult(PermError, target, fmt.Errorf("%w: redirect=%s", ErrNoRecord, target))
		}
		return r
	}
	return hostResult{status: Neutral, domain: domain} // RFC 7208 §4.7
}

// lookupRecord returns the single v=spf1 record of domain, "" when there is
// none.
func (e *evaluation) lookupRecord(domain string) (string, error) {
	a, err := e.c.Resolver.Query(e.ctx, domain, dns.TypeTXT)
	if err != nil {
		return "", err
	}
	found := ""
	n := 0
	for _, t := range a.TXT {
		if IsRecord(t) {
			found = t
			n++
		}
	}
	if n > 1 {
		return "", fmt.Errorf("%s: %w", domain, ErrMultipleRecords)
	}
	return found, nil
}

func (e *evaluation) countLookup() error {
	e.lookups++
	if e.lookups > maxLookups {
		return ErrTooManyLookups
	}
	return nil
}

func (e *evaluation) countVoid(a *resolver.Answer) error {
	if a.Void() {
		e.voids++
		limit := e.c.VoidLimit
		if limit <= 0 {
			limit = maxVoidLookups
		}
		if e.voids > limit {
			if limit != maxVoidLookups {
				return voidLimitError(limit)
			}
			return ErrTooManyVoidLookups
		}
	}
	return nil
}

// expandDomain expands a domain-spec and shortens it from the left to at
// most 253 characters (RFC 7208 §7.3).
func (e *evaluation) expandDomain(ms *macroString) string {
	d := strings.TrimSuffix(ms.expand(&e.env), ".")
	for len(d) > maxDomainLength {
		i := strings.IndexByte(d, '.')
		if i < 0 {
			break
		}
		d = d[i+1:]
	}
	return d
}

// explain returns the exp= text for a fail, or the default (RFC 7208 §6.2).
func (e *evaluation) explain(rec *record) string {
	if rec.exp == nil {
		return DefaultExplanation
	}
	target := e.expandDomain(rec.exp)
	a, err := e.query(target, dns.TypeTXT)
	if err != nil || len(a.TXT)+a.OtherTXT != 1 {
		if e.trace != nil {
			e.tracef("exp=%s: no single TXT record; default explanation", target)
		}
		return DefaultExplanation
	}
	ms, err := parseMacroString(a.TXT[0], macroLettersExp)
	if err != nil {
		if e.trace != nil {
			e.tracef("exp=%s: %v; default explanation", target, err)
		}
		return DefaultExplanation
	}
	return ms.expand(&e.env)
}

// matchesAll reports a matched term that covers every address: all, an
// ip4 or ip6 network of prefix length 0, or an include whose record
// matched by such a term.
func (e *evaluation) matchesAll(m *mechanism) bool {
	switch m.kind {
	case "all":
		return true
	case "ip4", "ip6":
		return m.prefix.Bits() == 0
	case "include":
		return e.includeOpen
	}
	return false
}
