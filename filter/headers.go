package filter

import (
	"strings"

	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/internal/safetext"
)

type header struct{ name, value string }

// OurHeader carries what no registered header field does: the callout
// result and, in dry-run mode, the verdict that was not applied.
const OurHeader = "X-Senderguard"

// headers returns the fields to insert at the top, in insertion order:
// each is inserted at index 1, so the last one ends up first.
func (s *session) headers() []header {
	msg := s.msg
	rt := msg.rt
	f := &msg.facts
	var hs []header
	if v := s.ourHeader(); v != "" {
		hs = append(hs, header{OurHeader, v})
	}
	if f.SPFMail != nil && rt.receivedSPF {
		receiver := rt.hostname
		if rt.cfg.HideReceiver {
			receiver = "<UNKNOWN>"
		}
		hs = append(hs, header{"Received-SPF", f.SPFMail.ReceivedSPF(receiver, s.conn.helo)})
	}
	if rt.authResults {
		if ar := authResults(rt.authservID, f, msg.rescue, dmarcResinfo(msg)); ar != "" {
			hs = append(hs, header{"Authentication-Results", ar})
		}
	}
	if msg.quarantine != "" {
		hs = append(hs, header{QuarantineHeader, msg.quarantine})
	}
	return hs
}

// authResults renders RFC 8601's Authentication-Results for SPF.
func authResults(id string, f *Facts, rs *rescue, dmarcResult string) string {
	var parts []string
	if r := f.SPFMail; r != nil && r.Identity == spf.MailFrom {
		// The domain, as RFC 8601 §2.7.2 allows: DMARC verifiers
		// (OpenDMARC) compare smtp.mailfrom with the envelope domain and
		// ignore a full address.
		parts = append(parts, resinfo(r, "smtp.mailfrom", domainOf(r.Sender)))
	}
	if r := f.SPFHelo; r != nil {
		parts = append(parts, resinfo(r, "smtp.helo", f.HELO))
	}
	if rs != nil && rs.outcome == "rescued" {
		// The signature that vouched for the forwarded message (RFC 8601
		// §2.7.1); the SPF fail above stays as it was.
		parts = append(parts, "dkim=pass header.d="+spf.QuoteValue(rs.domain)+" header.s="+spf.QuoteValue(rs.selector))
	}
	if dmarcResult != "" {
		parts = append(parts, dmarcResult)
	}
	if len(parts) == 0 {
		return ""
	}
	return id + "; " + strings.Join(parts, "; ")
}

func resinfo(r *spf.Result, prop, value string) string {
	s := "spf=" + string(r.Status)
	if r.Status == spf.TempError || r.Status == spf.PermError {
		// A comment, not free text from the record: RFC 8601 §2.3.
		s += " (" + strings.NewReplacer("(", "", ")", "", "\\", "").Replace(safetext.Printable(r.Problem.Error(), 120)) + ")"
	}
	return s + " " + prop + "=" + spf.QuoteValue(value)
}

func (s *session) ourHeader() string {
	msg := s.msg
	var parts []string
	if c := msg.facts.Callout; c != nil {
		p := "callout=" + string(c.Class)
		if c.Cached {
			p += " (cached)"
		}
		parts = append(parts, p)
	}
	for _, w := range msg.wouldReject {
		parts = append(parts, "dry-run="+w)
	}
	return strings.Join(parts, "; ")
}

// authservIDOf returns the authserv-id that opens an
// Authentication-Results value (RFC 8601 §2.2), without any version.
func authservIDOf(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	if f := strings.Fields(v); len(f) > 0 {
		return f[0]
	}
	return ""
}
