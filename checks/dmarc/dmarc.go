// Package dmarc finds the DMARC policy (RFC 7489) of a message's From
// domain through senderguard's cached resolver and judges DKIM alignment
// with it. Parsing a record is go-msgauth's (dmarc.Parse); what this
// package adds around it: policy discovery with the organizational
// domain (§6.6.3, public suffix list), the rule that several records
// mean none, temporary DNS failures told apart from "no policy", the
// policy that applies to a subdomain (sp=), alignment (§3.1.1) and the
// pct= sampling (§6.6.4).
package dmarc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

	msgauth "github.com/emersion/go-msgauth/dmarc"
	"github.com/miekg/dns"
	"golang.org/x/net/publicsuffix"

	"github.com/senderguard/senderguard/checks/dkim"
	"github.com/senderguard/senderguard/checks/resolver"
)

// Policy is a DMARC policy and, once pct= is applied, a disposition.
type Policy string

const (
	None       Policy = "none"
	Quarantine Policy = "quarantine"
	Reject     Policy = "reject"
)

// milder is the next milder policy (RFC 7489 §6.6.4: what the messages
// pct= leaves out get).
func (p Policy) milder() Policy {
	switch p {
	case Reject:
		return Quarantine
	}
	return None
}

// Record is the DMARC policy that applies to a From domain.
type Record struct {
	Domain string // the domain whose _dmarc record it is
	// Org: found at the organizational domain, not at the From domain
	// itself, so sp= applies.
	Org    bool
	P, SP  Policy // SP is "" when the record has no sp=
	Strict bool   // adkim=s
	Pct    int    // 0-100; 100 when absent
}

// Applied is the policy for the From domain: sp= (else p=) when the
// record is the organizational domain's, p= otherwise.
func (r *Record) Applied() Policy {
	if r.Org && r.SP != "" {
		return r.SP
	}
	return r.P
}

// Disposition is what a DMARC fail gets: the applied policy for a
// message pct= selects, the next milder one for the rest. draw is a
// number in [0, 100) (tests fix it).
func (r *Record) Disposition(draw int) Policy {
	p := r.Applied()
	if r.Pct < 100 && draw >= r.Pct {
		return p.milder()
	}
	return p
}

// Comment renders the record for Authentication-Results and logs:
// "p=reject sp=none", with pct and adkim when not their defaults.
func (r *Record) Comment() string {
	s := "p=" + string(r.P)
	if r.SP != "" {
		s += " sp=" + string(r.SP)
	}
	if r.Pct != 100 {
		s += fmt.Sprintf(" pct=%d", r.Pct)
	}
	if r.Strict {
		s += " adkim=s"
	}
	return s
}

var (
	// ErrNoPolicy: neither the From domain nor its organizational domain
	// publishes one usable DMARC record.
	ErrNoPolicy = errors.New("dmarc: no policy")
	// ErrTemporary: the policy could not be fetched now (timeout,
	// SERVFAIL): try again later.
	ErrTemporary = errors.New("dmarc: policy lookup failed temporarily")
)

// IsRecord reports whether a TXT string is a DMARC record ("v=DMARC1"
// first, RFC 7489 §6.4); the cache keeps these of a TXT answer.
func IsRecord(txt string) bool {
	rest, ok := strings.CutPrefix(strings.TrimLeft(txt, " \t"), "v=DMARC1")
	if !ok {
		return false
	}
	rest = strings.TrimLeft(rest, " \t")
	return rest == "" || rest[0] == ';'
}

// Parse reads one record with go-msgauth and keeps what judging needs.
func Parse(domain, txt string) (*Record, error) {
	m, err := msgauth.Parse(txt)
	if err != nil {
		return nil, err
	}
	r := &Record{Domain: domain, P: Policy(m.Policy), SP: Policy(m.SubdomainPolicy), Strict: m.DKIMAlignment == msgauth.AlignmentStrict, Pct: 100}
	if m.Percent != nil {
		r.Pct = *m.Percent
	}
	return r, nil
}

// Finder looks policies up.
type Finder struct {
	Resolver resolver.Querier
}

// Find returns the policy of fromDomain (RFC 7489 §6.6.3): the From
// domain's record, else its organizational domain's. ErrNoPolicy when
// there is none (or several, or a broken one, which also means none),
// ErrTemporary when a lookup failed temporarily.
func (f *Finder) Find(ctx context.Context, fromDomain string) (*Record, error) {
	from := strings.ToLower(strings.TrimSuffix(fromDomain, "."))
	r, err := f.lookup(ctx, from)
	if !errors.Is(err, errEmpty) {
		return r, err
	}
	org, oerr := publicsuffix.EffectiveTLDPlusOne(from)
	if oerr != nil || org == from {
		return nil, ErrNoPolicy
	}
	r, err = f.lookup(ctx, org)
	if errors.Is(err, errEmpty) {
		return nil, ErrNoPolicy
	}
	if r != nil {
		r.Org = true
	}
	return r, err
}

// errEmpty: no DMARC record at this name (the search goes on).
var errEmpty = errors.New("no DMARC record")

func (f *Finder) lookup(ctx context.Context, domain string) (*Record, error) {
	a, err := f.Resolver.Query(ctx, "_dmarc."+domain, dns.TypeTXT)
	if err != nil {
		return nil, fmt.Errorf("%w: _dmarc.%s: %v", ErrTemporary, domain, err)
	}
	var recs []string
	for _, t := range a.TXT {
		if IsRecord(t) {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		return nil, errEmpty
	case 1:
	default:
		// §6.6.3 step 5: several records end the discovery; no DMARC.
		return nil, fmt.Errorf("%w: _dmarc.%s has %d DMARC records", ErrNoPolicy, domain, len(recs))
	}
	r, err := Parse(domain, recs[0])
	if err != nil {
		// A broken policy is no policy (when in doubt, the SPF fail's
		// own action decides, not a guess at what the owner meant).
		return nil, fmt.Errorf("%w: _dmarc.%s: %v", ErrNoPolicy, domain, err)
	}
	return r, nil
}

// Aligned reports whether a DKIM signing domain is aligned with the From
// domain (RFC 7489 §3.1.1): the same name in strict mode, the same
// organizational domain in relaxed mode (dkim.Aligned).
func Aligned(strict bool, signer, from string) bool {
	if !strict {
		return dkim.Aligned(signer, from)
	}
	signer = strings.ToLower(strings.TrimSuffix(signer, "."))
	return signer != "" && signer == strings.ToLower(strings.TrimSuffix(from, "."))
}

// Errors of the From field (RFC 7489 §6.6.1 lets a receiver refuse such
// messages; senderguard does not rescue them).
var (
	ErrNoFrom         = errors.New("no From field")
	ErrSeveralFroms   = errors.New("several From fields")
	ErrSeveralAuthors = errors.New("From names several addresses")
	ErrBadFrom        = errors.New("From field unreadable")
)

// addressParser reads addresses whatever the charset of display names:
// only the address is needed.
var addressParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// AuthorDomain is the domain of the one address in the one From field
// (values are the From fields' values, in order).
func AuthorDomain(values []string) (string, error) {
	switch {
	case len(values) == 0:
		return "", ErrNoFrom
	case len(values) > 1:
		return "", ErrSeveralFroms
	}
	list, err := addressParser.ParseList(values[0])
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadFrom, err)
	}
	switch {
	case len(list) == 0:
		return "", ErrNoFrom
	case len(list) > 1:
		return "", ErrSeveralAuthors
	}
	at := strings.LastIndexByte(list[0].Address, '@')
	if at < 0 || at == len(list[0].Address)-1 {
		return "", fmt.Errorf("%w: %q has no domain", ErrBadFrom, list[0].Address)
	}
	return strings.ToLower(strings.TrimSuffix(list[0].Address[at+1:], ".")), nil
}
