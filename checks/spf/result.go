// Package spf evaluates Sender Policy Framework records (RFC 7208) for the
// HELO and MAIL FROM identities over a resolver.Querier.
package spf

import (
	"errors"
	"fmt"
	"net/netip"
)

// Status is an SPF result (RFC 7208 §2.6).
type Status string

const (
	None      Status = "none"
	Neutral   Status = "neutral"
	Pass      Status = "pass"
	Fail      Status = "fail"
	Softfail  Status = "softfail"
	TempError Status = "temperror"
	PermError Status = "permerror"
)

// Identity says which identity was checked (RFC 7208 §2.3, §2.4).
type Identity string

const (
	HELO     Identity = "helo"
	MailFrom Identity = "mailfrom"
)

// Problems behind permerror and temperror, wrapped with context.
var (
	ErrTooManyLookups     = errors.New("more than 10 DNS-querying terms")      // RFC 7208 §4.6.4
	ErrTooManyVoidLookups = errors.New("more than 2 void lookups")             // RFC 7208 §4.6.4 (see voidLimitError)
	ErrTooManyMX          = errors.New("more than 10 MX hosts in one mx term") // RFC 7208 §4.6.4
	ErrMultipleRecords    = errors.New("more than one v=spf1 record")          // RFC 7208 §4.5
	ErrSyntax             = errors.New("syntax error")                         // RFC 7208 §4.6
	ErrNoRecord           = errors.New("no SPF record at include or redirect target")
	ErrDNS                = errors.New("DNS failure")
)

// voidLimitError is ErrTooManyVoidLookups under a limit other than 2.
type voidLimitError int

func (e voidLimitError) Error() string        { return fmt.Sprintf("more than %d void lookups", int(e)) }
func (e voidLimitError) Is(target error) bool { return target == ErrTooManyVoidLookups }

// Result is the outcome of one check_host() evaluation with its evidence.
type Result struct {
	Status    Status
	Identity  Identity
	IP        netip.Addr
	Sender    string // the checked sender, postmaster@HELO for the HELO identity
	Domain    string // the domain whose policy decided
	Mechanism string // the term that matched ("" for none/neutral by default)
	// Open marks a match by a term that covers every address ("all",
	// ip4:0.0.0.0/0, ip6:::/0, or an include whose record matched so): a
	// pass from it vouches for nothing.
	Open        bool
	Explanation string // for fail: exp= text or the default explanation
	Problem     error  // for temperror and permerror
	Lookups     int    // DNS-querying terms used
	VoidLookups int
	// NoMail: the domain's record is exactly "v=spf1 -all", a domain
	// that sends no mail at all.
	NoMail bool
}

// DefaultExplanation is given for fail when the record has no usable exp=.
const DefaultExplanation = "see https://www.rfc-editor.org/rfc/rfc7208#section-2.6.4"
