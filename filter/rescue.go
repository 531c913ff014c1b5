package filter

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/d--j/go-milter"

	"github.com/senderguard/senderguard/checks/dkim"
	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/config"
)

// txMode is what a transaction's accepted recipients will get at end of
// message. The milter can refuse a message only as a whole there, so all
// of them must get the same: a recipient whose verdict would differ is
// told "452 4.5.3" and sent again, in a transaction of its own (RFC 5321
// §4.5.3.1.10), and nothing is lost silently.
type txMode uint8

const (
	modeNone  txMode = iota // no recipient accepted yet
	modePlain               // accepted now, delivered
	modeHeld                // an SPF fail held for the DKIM rescue at end of message
	// modeHeldDMARC: held for the From domain's DMARC policy to decide
	// (spf_fail_rescue: dmarc); modeHeldDMARCDry: the same under dry-run,
	// where what it decides is only noted.
	modeHeldDMARC
	modeHeldDMARCDry
)

// held reports a mode whose message is judged at end of message.
func (m txMode) held() bool { return m >= modeHeld }

// holdMode is the mode a held SPF fail of pol's recipients gets.
func (pol *rcptPolicy) holdMode() txMode {
	switch {
	case pol.rescue != rescueDMARC:
		return modeHeld
	case pol.dryRun:
		return modeHeldDMARCDry
	}
	return modeHeldDMARC
}

// Rescue modes (spf_fail_rescue).
const (
	rescueNone  = "none"
	rescueDKIM  = "dkim"
	rescueDMARC = "dmarc"
)

// respOwnTransaction asks the client to send a recipient again, in a
// transaction of its own.
var respOwnTransaction = mustReply(452, "4.5.3", "Too many recipients for this message; send to this one in a separate transaction")

func mustReply(code uint16, status, text string) *milter.Response {
	r, err := milter.RejectWithCodeAndReason(code, status+" "+text)
	if err != nil {
		panic(err)
	}
	return r
}

// rescue is how the end of message judged a held SPF fail.
type rescue struct {
	// outcome: rescued (an aligned signature; DMARC pass), refused,
	// tempfail, or with DMARC's word: quarantined, accepted (p=none).
	outcome  string
	by       string // dkim or dmarc: the rule that decided
	domain   string // d= of the signature that rescued it
	selector string
	why      string // for the decision line, when not rescued
}

// decide is the one decision of a recipient policy: its verdict of the
// message's facts, after what may clear an SPF fail. held reports a
// rejection for an SPF fail that waits for end of message, where a valid
// DKIM signature of the sender's domain may rescue the message.
func (s *session) decide(pol *rcptPolicy, msg *message) (v Verdict, held bool) {
	return decide(pol, msg, s.f.deps.DKIM != nil)
}

// decide is session.decide for a policy and message alone (replay uses
// it too); canHold says whether signatures can be verified.
func decide(pol *rcptPolicy, msg *message, canHold bool) (v Verdict, held bool) {
	f := pol.facts(msg)
	v = pol.policy.Decide(&f)
	if v.Action == config.Accept || v.Check != "spf_mailfrom" || f.SPFMail == nil || f.SPFMail.Status != spf.Fail {
		return v, false
	}
	if msg.forwarder != "" {
		// A forwarder the site trusts: its SPF fail is expected.
		f.SPFMail = nil
		return pol.policy.Decide(&f), false
	}
	// In dry-run a dkim rescue is not held (the refusal shows as it would
	// be without one); a dmarc one is, so that what the policy would do
	// shows before it is enforced.
	held = v.Action == config.Reject && pol.rescue != rescueNone && canHold && (!pol.dryRun || pol.rescue == rescueDMARC)
	return v, held
}

// join puts a recipient into the transaction, or asks for a transaction
// of its own when it would get another verdict than those before it.
func (s *session) join(mode txMode, held *Verdict) *milter.Response {
	msg := s.msg
	if msg.mode != modeNone && msg.mode != mode {
		s.f.deps.Metrics.SeparateTransactions.Inc()
		return respOwnTransaction
	}
	msg.mode = mode
	if held != nil && msg.held == nil {
		msg.held = held
	}
	return respContinue
}

// trustedForwarder names the rule that makes the client a trusted
// forwarder, "" when none does.
func (rt *runtime) trustedForwarder(ip netip.Addr, name string) string {
	tf := &rt.cfg.TrustedForwarders
	if tf.Networks.Contains(ip) {
		return "network"
	}
	if name != "" && name != "unknown" && matchName(rt.forwarderNames, name, true) {
		return "name " + canonicalName(name)
	}
	return ""
}

// startDKIM begins verifying a held message's signatures as its header
// fields arrive; each key lookup gets the stage budget from when it is
// asked.
func (s *session) startDKIM() {
	msg := s.msg
	if msg.dkim != nil || !msg.mode.held() {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	msg.dkimCancel = cancel
	msg.dkim = s.f.deps.DKIM.Start(ctx, msg.rt.cfg.StageBudget.D())
}

// leadingSpace reports SMFIP_HDR_LEADSPC: header values come, and go, with
// the space after the colon.
func leadingSpace(m milter.Modifier) bool { return m.Protocol()&milter.OptHeaderLeadingSpace != 0 }

// endHeld judges a held message at end of message: with spf_fail_rescue
// dmarc, the From domain's DMARC policy where it publishes one
// (dmarcEnd); else a valid signature of the sender's domain (relaxed
// alignment) rescues it, a key that could not be fetched now tempfails,
// and anything else refuses it with the held SPF verdict. It returns the
// message's verdict.
func (s *session) endHeld() Verdict {
	msg := s.msg
	s.startDKIM() // a message without header fields or body
	res := msg.dkim.Finish()
	msg.dkimCancel()
	msg.sigs = res.Signatures
	s.checkDMARC()
	if msg.mode != modeHeld {
		if v, decided := s.dmarcEnd(); decided {
			return v
		}
	}
	return s.dkimEnd(res)
}

// dkimEnd is the DKIM rescue: a valid signature aligned with the
// envelope sender's domain.
func (s *session) dkimEnd(res dkim.Result) Verdict {
	msg := s.msg
	sender := domainOf(msg.sender)
	var temp *dkim.Signature
	msg.rescue = &rescue{outcome: "refused", by: rescueDKIM, why: "no DKIM signature"}
	for i := range res.Signatures {
		sig := &res.Signatures[i]
		if !dkim.Aligned(sig.Domain, sender) {
			if msg.rescue.why == "no DKIM signature" {
				msg.rescue.why = "signature of another domain (d=" + sig.Domain + ")"
			}
			continue
		}
		switch sig.Status {
		case dkim.Pass:
			msg.rescue = &rescue{outcome: "rescued", by: rescueDKIM, domain: sig.Domain, selector: sig.Selector}
			s.countRescue("rescued")
			return Verdict{Action: config.Accept}
		case dkim.TempError:
			temp = sig
		default:
			msg.rescue.why = fmt.Sprintf("d=%s s=%s: %s", sig.Domain, sig.Selector, sig.Status)
		}
	}
	if res.Err != nil && len(res.Signatures) == 0 {
		msg.rescue.why = res.Err.Error()
	}
	if temp != nil {
		msg.rescue = &rescue{outcome: "tempfail", by: rescueDKIM, domain: temp.Domain, selector: temp.Selector, why: "DKIM key lookup failed temporarily"}
		s.countRescue("tempfail")
		return keyTempfail(temp)
	}
	s.countRescue("refused")
	return *msg.held
}

// keyTempfail answers a held SPF fail whose deciding DKIM key could not
// be fetched now.
func keyTempfail(sig *dkim.Signature) Verdict {
	return Verdict{Action: config.TempFail, Code: 451, Status: "4.7.24", Check: "dkim",
		Text: fmt.Sprintf("SPF fail, and the DKIM key of %s (s=%s) could not be fetched now; try again later", replyText(sig.Domain), replyText(sig.Selector))}
}

func (s *session) countRescue(result string) {
	s.f.deps.Metrics.SPFRescues.WithLabelValues(result).Inc()
}

// endDKIM abandons a check the message will not finish.
func (msg *message) endDKIM() {
	if msg != nil && msg.dkim != nil && msg.rescue == nil {
		msg.dkim.Close()
		msg.dkimCancel()
	}
}
