package filter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/d--j/go-milter"

	"github.com/senderguard/senderguard/checks/dkim"
	"github.com/senderguard/senderguard/checks/dmarc"
	"github.com/senderguard/senderguard/config"
)

// DMARCFinder is the DMARC policy seam: the policy that applies to a
// From domain (checks/dmarc.Finder), ErrNoPolicy or ErrTemporary.
type DMARCFinder interface {
	Find(ctx context.Context, fromDomain string) (*dmarc.Record, error)
}

// dmarcCheck is what DMARC says of a held message: its author domain,
// the policy found, and the result the signatures give (RFC 7489: the
// envelope's SPF failed, so only an aligned DKIM signature can pass).
type dmarcCheck struct {
	from    string // the header From's domain
	fromErr error  // no From, several, several addresses, unreadable
	rec     *dmarc.Record
	err     error           // of the policy lookup
	result  string          // pass or fail, when a policy was found
	signer  *dkim.Signature // the aligned signature that passed
	temp    *dkim.Signature // an aligned signature whose key could not be fetched
	// disposition is what spf_fail_rescue: dmarc did with a fail (after
	// pct=); "" when DMARC did not decide.
	disposition dmarc.Policy
}

// Bounds of what a held message's From fields keep.
const (
	maxFromFields = 2    // one is all DMARC accepts; two say "several"
	maxFromBytes  = 4096 // an address list longer than this is unreadable
)

// noteFrom keeps a From field's value for DMARC.
func (msg *message) noteFrom(value string) {
	msg.fromCount++
	if len(msg.froms) < maxFromFields {
		if len(value) > maxFromBytes {
			value = value[:maxFromBytes]
		}
		msg.froms = append(msg.froms, value)
	}
}

// dmarcLookup is a policy lookup under way: it starts at the end of the
// header section, while the body streams, so that end of message waits
// for it at most the stage budget.
type dmarcLookup struct {
	done   chan struct{}
	rec    *dmarc.Record
	err    error
	cancel context.CancelFunc
}

// startDMARC finds the held message's author domain and starts looking
// up its DMARC policy (within the stage budget), once.
func (s *session) startDMARC() {
	msg := s.msg
	if msg.dmarc != nil {
		return
	}
	dc := &dmarcCheck{}
	msg.dmarc = dc
	froms := msg.froms
	if msg.fromCount > len(froms) {
		froms = append(froms, "") // more fields than kept: several
	}
	dc.from, dc.fromErr = dmarc.AuthorDomain(froms)
	finder := s.f.deps.DMARC
	if dc.fromErr != nil || finder == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), msg.rt.cfg.StageBudget.D())
	l := &dmarcLookup{done: make(chan struct{}), cancel: cancel}
	msg.dmarcLookup = l
	from := dc.from
	go func() {
		defer close(l.done)
		defer func() {
			if p := recover(); p != nil { // a bug must not end the process
				l.err = fmt.Errorf("%w: internal error: %v", dmarc.ErrTemporary, p)
			}
		}()
		l.rec, l.err = finder.Find(ctx, from)
	}()
}

// endDMARC abandons a lookup the message will not use.
func (msg *message) endDMARC() {
	if msg != nil && msg.dmarcLookup != nil {
		msg.dmarcLookup.cancel()
	}
}

// checkDMARC completes what DMARC says of a held message: its policy
// (waiting for the lookup at most the stage budget from now) and the
// DMARC result of its signatures. It runs for every held message,
// whatever the rescue mode, so that the decision line tells replay what
// spf_fail_rescue: dmarc would do.
func (s *session) checkDMARC() {
	msg := s.msg
	s.startDMARC()
	dc, l := msg.dmarc, msg.dmarcLookup
	if l == nil {
		return
	}
	t := time.NewTimer(msg.rt.cfg.StageBudget.D())
	select {
	case <-l.done:
		dc.rec, dc.err = l.rec, l.err
	case <-t.C:
		dc.err = fmt.Errorf("%w: no answer within the stage budget", dmarc.ErrTemporary)
	}
	t.Stop()
	l.cancel()
	if dc.rec == nil {
		return
	}
	dc.result = "fail"
	for i := range msg.sigs {
		sig := &msg.sigs[i]
		if !dmarc.Aligned(dc.rec.Strict, sig.Domain, dc.from) {
			continue
		}
		switch sig.Status {
		case dkim.Pass:
			dc.result, dc.signer = "pass", sig
			return
		case dkim.TempError:
			dc.temp = sig
		}
	}
}

// dmarcEnd decides a held SPF fail by the From domain's DMARC policy
// (spf_fail_rescue: dmarc). decided is false where there is no policy:
// the DKIM rescue decides then.
func (s *session) dmarcEnd() (v Verdict, decided bool) {
	msg := s.msg
	dc := msg.dmarc
	accept := Verdict{Action: config.Accept}
	switch {
	case dc.fromErr != nil:
		// RFC 7489 §6.6.1: such messages may be refused; they are not
		// rescued, the SPF fail's own action applies.
		s.endRescue(&rescue{outcome: "refused", by: rescueDMARC, why: "From: " + dc.fromErr.Error()})
		return *msg.held, true
	case errors.Is(dc.err, dmarc.ErrTemporary):
		s.endRescue(&rescue{outcome: "tempfail", by: rescueDMARC, why: "DMARC policy lookup failed temporarily"})
		return Verdict{Action: config.TempFail, Code: 451, Status: "4.7.24", Check: "dmarc",
			Text: fmt.Sprintf("SPF fail, and the DMARC policy of %s could not be fetched now; try again later", replyText(dc.from))}, true
	case dc.rec == nil:
		return Verdict{}, false
	}
	rec := dc.rec
	if dc.result == "pass" {
		dc.disposition = dmarc.None
		s.countDMARC()
		s.endRescue(&rescue{outcome: "rescued", by: rescueDMARC, domain: dc.signer.Domain, selector: dc.signer.Selector})
		return accept, true
	}
	if dc.temp != nil {
		s.endRescue(&rescue{outcome: "tempfail", by: rescueDMARC, domain: dc.temp.Domain, selector: dc.temp.Selector, why: "DKIM key lookup failed temporarily"})
		return keyTempfail(dc.temp), true
	}
	dc.disposition = rec.Disposition(s.draw())
	s.countDMARC()
	why := "DMARC fail (" + rec.Comment() + ", dis=" + string(dc.disposition) + ")"
	switch dc.disposition {
	case dmarc.Reject:
		s.endRescue(&rescue{outcome: "refused", by: rescueDMARC, why: why})
		return Verdict{Action: config.Reject, Code: 550, Status: "5.7.1", Check: "dmarc",
			Text: fmt.Sprintf("SPF fail, and no DKIM signature aligned with %s: its DMARC policy is %s", replyText(dc.from), rec.Applied())}, true
	case dmarc.Quarantine:
		s.endRescue(&rescue{outcome: "quarantined", by: rescueDMARC, why: why})
		// The record as published: "p=quarantine", or "p=reject pct=30"
		// whose sample left this message to the milder policy.
		msg.quarantine = fmt.Sprintf("DMARC %s of %s: SPF fail and no aligned DKIM signature", rec.Comment(), dc.from)
		return accept, true
	}
	s.endRescue(&rescue{outcome: "accepted", by: rescueDMARC, why: why})
	return accept, true
}

// endRescue records how the held message ended and counts it, unless
// dry-run only noted it.
func (s *session) endRescue(rs *rescue) {
	s.msg.rescue = rs
	if s.msg.mode != modeHeldDMARCDry {
		s.countRescue(rs.outcome)
	}
}

// draw is the pct= sample: a number in [0, 100).
func (s *session) draw() int {
	if d := s.f.deps.Draw; d != nil {
		return d()
	}
	return rand.IntN(100)
}

func (s *session) countDMARC() {
	dc := s.msg.dmarc
	s.f.deps.Metrics.DMARCResults.WithLabelValues(dc.result, string(dc.rec.Applied()), string(dc.disposition)).Inc()
}

// quarantine asks the MTA to hold the message (Postfix's hold queue,
// Sendmail's quarantine) when dmarc_quarantine says so and the MTA lets
// us; X-Senderguard-Quarantine says why in any case.
func (s *session) quarantine(m milter.Modifier) error {
	msg := s.msg
	if msg.rt.cfg.DMARCQuarantine != "quarantine" {
		return nil
	}
	if m.Actions()&milter.OptQuarantine == 0 {
		s.f.deps.Log.Warn("the MTA does not let milters quarantine: message delivered with X-Senderguard-Quarantine", "queue_id", msg.queueID)
		return nil
	}
	return m.Quarantine(msg.quarantine)
}

// QuarantineHeader names why DMARC asked for quarantine.
const QuarantineHeader = "X-Senderguard-Quarantine"

// dmarcResinfo is Authentication-Results' dmarc= (RFC 7489 §11.2) for
// a held message judged with spf_fail_rescue: dmarc, "" otherwise.
func dmarcResinfo(msg *message) string {
	dc := msg.dmarc
	if dc == nil || msg.mode == modeHeld || dc.fromErr != nil {
		return ""
	}
	from := " header.from=" + dc.from
	switch {
	case dc.rec != nil && dc.result != "":
		dis := string(dc.disposition)
		if dis == "" {
			dis = "none"
		}
		return "dmarc=" + dc.result + " (" + dc.rec.Comment() + " dis=" + dis + ")" + from
	case dc.rec == nil && errors.Is(dc.err, dmarc.ErrNoPolicy):
		return "dmarc=none" + from
	}
	return ""
}

// attrs appends the decision line's DMARC facts (what replay needs).
func (dc *dmarcCheck) attrs(attrs []slog.Attr) []slog.Attr {
	if dc.fromErr != nil {
		return append(attrs, slog.String("header_from_problem", dc.fromErr.Error()))
	}
	attrs = append(attrs, slog.String("header_from", dc.from))
	switch {
	case dc.rec != nil:
		attrs = append(attrs, slog.String("dmarc", dc.result), slog.String("dmarc_policy", dc.rec.Comment()), slog.String("dmarc_domain", dc.rec.Domain))
		if dc.disposition != "" {
			attrs = append(attrs, slog.String("dmarc_disposition", string(dc.disposition)))
		}
	case errors.Is(dc.err, dmarc.ErrTemporary):
		attrs = append(attrs, slog.String("dmarc", "temperror"))
	case dc.err != nil:
		attrs = append(attrs, slog.String("dmarc", "none"))
	}
	return attrs
}

// sigList renders verified signatures for the decision line:
// "d/s:status ...".
func sigList(sigs []dkim.Signature) string {
	parts := make([]string, len(sigs))
	for i, s := range sigs {
		parts[i] = s.Domain + "/" + s.Selector + ":" + string(s.Status)
	}
	return strings.Join(parts, " ")
}
