package spf

import (
	"strings"

	"github.com/senderguard/senderguard/internal/safetext"
)

// ReceivedSPF renders the value of a Received-SPF header field
// (RFC 7208 §9.1) for this result, as seen by receiver with HELO helo.
func (r *Result) ReceivedSPF(receiver, helo string) string {
	var b strings.Builder
	b.WriteString(string(r.Status))
	b.WriteString(" (")
	b.WriteString(receiver)
	b.WriteString(": ")
	b.WriteString(r.Comment())
	b.WriteString(")")
	kv := func(k, v string) {
		b.WriteString(" ")
		b.WriteString(k)
		b.WriteString("=")
		b.WriteString(QuoteValue(v))
		b.WriteString(";")
	}
	kv("client-ip", r.IP.String())
	if r.Identity == MailFrom {
		kv("envelope-from", r.Sender)
	}
	kv("helo", helo)
	kv("receiver", receiver)
	kv("identity", string(r.Identity))
	if r.Mechanism != "" {
		kv("mechanism", r.Mechanism)
	}
	if r.Problem != nil {
		kv("problem", safetext.Printable(r.Problem.Error(), 200))
	}
	return strings.TrimSuffix(b.String(), ";")
}

// Comment is the human-readable sentence of RFC 7208 §9.1's examples.
func (r *Result) Comment() string {
	who := "domain of " + r.Sender
	if r.Identity == HELO {
		who = "domain of " + r.Domain
	}
	ip := r.IP.String()
	switch r.Status {
	case Pass:
		return who + " designates " + ip + " as permitted sender"
	case Fail:
		return who + " does not designate " + ip + " as permitted sender"
	case Softfail:
		return "transitioning " + who + " does not designate " + ip + " as permitted sender"
	case Neutral:
		return ip + " is neither permitted nor denied by " + who
	case None:
		return who + " does not publish an SPF record"
	case TempError:
		return "temporary error checking " + who
	default:
		return "permanent error in the SPF record of " + who
	}
}

// QuoteValue returns v as a dot-atom when it is one, else as a quoted
// string (RFC 5322 §3.2.4) with control characters dropped.
func QuoteValue(v string) string {
	atom := v != ""
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(isAlnum(c) || strings.IndexByte("!#$%&'*+-/=?^_`{|}~.@:", c) >= 0) {
			atom = false
			break
		}
	}
	if atom {
		return v
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
