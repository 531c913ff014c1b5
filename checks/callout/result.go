// Package callout verifies a sender address by asking the sender domain's
// own mail server (a "callout", sender address verification): MX lookup,
// EHLO, MAIL FROM:<>, RCPT TO:<sender>, QUIT, and a typed classification.
package callout

import (
	"fmt"
	"time"
)

// Class is a probe's classification.
type Class string

const (
	Exists     Class = "exists"       // RCPT answered 2xx
	NotExists  Class = "not-exists"   // RCPT answered 5xx
	CatchAll   Class = "catch-all"    // the server also accepts a random local part
	NullMX     Class = "null-mx"      // RFC 7505: the domain accepts no mail
	NoMailHost Class = "no-mail-host" // no MX and no address
	Unknown    Class = "unknown"      // 4xx, timeouts, errors, refusal of our probe
	// InProgress is not a probe result: an asynchronous probe is still
	// running when the stage's budget ends.
	InProgress Class = "in-progress"
)

// Reply is one SMTP reply: code, enhanced status code (RFC 3463) and text.
type Reply struct {
	Code     int
	Enhanced string
	Text     string // lines joined with " ", bounded
}

func (r *Reply) String() string {
	if r == nil {
		return ""
	}
	s := fmt.Sprint(r.Code)
	if r.Enhanced != "" {
		s += " " + r.Enhanced
	}
	if r.Text != "" {
		s += " " + r.Text
	}
	return s
}

// Result is a classification with the decisive evidence.
type Result struct {
	Class   Class
	Address string
	Host    string // the mail host whose reply decided
	Step    string // the dialogue step that decided (banner, ehlo, mail, rcpt, ...)
	Reply   *Reply // the decisive reply, if any
	Rule    string // the reply rule that classified it (classify.go); "" when no reply decided
	Err     error  // the decisive error, if any (timeouts, refused connections)
	// Postmaster is the reply to RCPT TO:<postmaster@domain>, asked in
	// the same session after an ambiguous refusal (nil when not asked).
	Postmaster *Reply
	Cached     bool // answered from the cache
	Duration   time.Duration

	// TLS is how the decisive dialogue was protected: TLSNone, TLSUpgraded,
	// TLSFailedThenPlain or TLSFailed; TLSVersion names the version used.
	TLS        TLSOutcome
	TLSVersion string

	refused bool // the server refused us, not the address: open the breaker
}

// TLSSummary is the outcome with the version used, e.g. "tls TLS 1.3";
// "" when no dialogue took place.
func (r *Result) TLSSummary() string {
	if r.TLSVersion == "" {
		return string(r.TLS)
	}
	return string(r.TLS) + " " + r.TLSVersion
}

// TLSOutcome says whether a probe's dialogue was encrypted.
type TLSOutcome string

const (
	TLSNone            TLSOutcome = "none"              // plaintext: no STARTTLS offered, or tls: off
	TLSUpgraded        TLSOutcome = "tls"               // STARTTLS succeeded
	TLSFailedThenPlain TLSOutcome = "failed-then-plain" // the upgrade failed; retried in plaintext (may)
	TLSFailed          TLSOutcome = "failed"            // the upgrade failed; not retried (verify)
)

// TLSMode is the probes' STARTTLS policy (callout.tls).
type TLSMode string

const (
	TLSMay    TLSMode = "may"    // upgrade when offered, any certificate (as smtp_tls_security_level = may)
	TLSVerify TLSMode = "verify" // upgrade when offered; the chain and the MX name must verify
	TLSOff    TLSMode = "off"    // never upgrade
)

// Evidence is the decisive reply or error in one line.
// greylisted: a 4xx at RCPT, worth one re-probe later.
func (r *Result) greylisted() bool {
	return r.Step == "rcpt" && r.Reply != nil && r.Reply.Code >= 400 && r.Reply.Code < 500
}

// tlsFailed: STARTTLS was announced but this dialogue's upgrade failed.
func (r *Result) tlsFailed() bool { return r.TLS == TLSFailed }

// RuleName is the rule that classified the probe: "dns" when DNS alone
// decided (null MX, no mail host), "no-reply" when no SMTP reply did (a
// connection failure, a limit), "cache" for a cached answer.
func (r *Result) RuleName() string {
	switch {
	case r.Rule != "":
		return r.Rule
	case r.Cached:
		return "cache"
	case r.Class == NullMX || r.Class == NoMailHost:
		return ruleDNS
	}
	return ruleNoReply
}

func (r *Result) Evidence() string {
	switch {
	case r.Reply != nil && r.Host != "" && r.Postmaster != nil:
		return fmt.Sprintf("%s: %s: %s (postmaster: %s)", r.Host, r.Step, r.Reply, r.Postmaster)
	case r.Reply != nil && r.Host != "":
		return fmt.Sprintf("%s: %s: %s", r.Host, r.Step, r.Reply)
	case r.Reply != nil:
		return r.Reply.String()
	case r.Err != nil:
		return r.Err.Error()
	}
	return ""
}
