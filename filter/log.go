package filter

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/senderguard/senderguard/checks/spf"
)

// logDecision writes the one decision line of the current message; end
// says how its transaction ended (accept at end of message, aborted,
// superseded, disconnected), "" when our refusal ended it.
func (s *session) logDecision(end string) {
	msg := s.msg
	if msg == nil || msg.logged {
		return
	}
	msg.logged = true
	outcome := msg.outcome(end)
	s.countVerdict(outcome)
	qid := msg.queueID
	if qid == "" {
		qid = "NOQUEUE"
	}
	attrs := []slog.Attr{
		slog.String("queue_id", qid),
		slog.String("client_ip", s.conn.ip.String()),
		slog.String("helo", s.conn.helo),
		slog.String("sender", msg.sender),
		slog.String("outcome", outcome),
	}
	if j := s.conn.mta; j != "" {
		attrs = append(attrs, slog.String("mta", j))
	}
	if d := s.conn.daemon; d != "" {
		attrs = append(attrs, slog.String("daemon", d))
	}
	if msg.args != "" {
		attrs = append(attrs, slog.String("esmtp_args", msg.args))
	}
	if u := msg.auth; u != "" {
		attrs = append(attrs, slog.String("auth", u))
	}
	if msg.skip != "" {
		attrs = append(attrs, slog.String("skipped", msg.skip))
	}
	attrs = msg.checkAttrs(attrs)
	v, stage, _ := msg.shown()
	if v.Action != "" {
		attrs = append(attrs, slog.String("verdict", string(v.Action)))
	}
	if v.Check != "" && v.Reply() != "" {
		attrs = append(attrs, slog.String("decided_by", v.Check), slog.String("reply", v.Reply()), slog.String("stage", stage))
	}
	if len(msg.rcptDomains) > 0 {
		attrs = append(attrs, slog.String("rcpt_domains", strings.Join(msg.rcptDomains, " ")))
	}
	if len(msg.outcomes) > 0 {
		attrs = append(attrs, slog.String("rcpt_outcomes", strings.Join(msg.outcomes, " ")))
	}
	if msg.rt.cfg.DryRun {
		attrs = append(attrs, slog.Bool("dry_run", true))
	}
	attrs = append(attrs, slog.Duration("duration", time.Since(msg.start)))
	s.f.deps.Log.LogAttrs(context.Background(), slog.LevelInfo, "decision", attrs...)
}

// checkAttrs appends what the checks found (SPF of both identities, the
// callout, a trusted forwarder, the DKIM rescue of a held SPF fail).
func (msg *message) checkAttrs(attrs []slog.Attr) []slog.Attr {
	f := &msg.facts
	if r := f.SPFMail; r != nil {
		attrs = append(attrs, slog.String("spf_mailfrom", string(r.Status)), slog.String("spf_mailfrom_mechanism", r.Mechanism))
		if r.Status == spf.Pass && r.Open {
			// A pass that vouches for nothing: the sender was probed.
			attrs = append(attrs, slog.String("spf_mailfrom_open", "+all"))
		}
		if r.Problem != nil {
			attrs = append(attrs, slog.String("spf_mailfrom_problem", r.Problem.Error()))
		}
		if r.NoMail {
			attrs = append(attrs, slog.Bool("spf_mailfrom_no_mail", true)) // "v=spf1 -all"
		}
	}
	if r := f.SPFHelo; r != nil {
		attrs = append(attrs, slog.String("spf_helo", string(r.Status)))
		if r.NoMail {
			attrs = append(attrs, slog.Bool("spf_helo_no_mail", true))
		}
	}
	if c := f.Callout; c != nil {
		attrs = append(attrs, slog.String("callout", string(c.Class)), slog.String("callout_rule", c.RuleName()),
			slog.String("callout_evidence", c.Evidence()), slog.Bool("callout_cached", c.Cached))
		if tls := c.TLSSummary(); tls != "" {
			attrs = append(attrs, slog.String("callout_tls", tls))
		}
	}
	if msg.forwarder != "" {
		attrs = append(attrs, slog.String("spf_fail_accepted", "trusted forwarder ("+msg.forwarder+")"))
	}
	if rs := msg.rescue; rs != nil {
		attrs = append(attrs, slog.String("spf_fail_rescue", rs.outcome))
		switch {
		case rs.outcome == "rescued":
			attrs = append(attrs, slog.String("rescued_by", rs.by+" d="+rs.domain+" s="+rs.selector))
		case rs.why != "" && rs.by == rescueDMARC && rs.outcome != "refused" && rs.outcome != "tempfail":
			attrs = append(attrs, slog.String("accepted_by", rs.why)) // quarantined, or p=none
		case rs.why != "":
			attrs = append(attrs, slog.String("rescue_failed", rs.why))
		}
	} else if msg.mode.held() {
		attrs = append(attrs, slog.String("spf_fail_rescue", "held"))
	}
	if len(msg.sigs) > 0 {
		attrs = append(attrs, slog.String("dkim", sigList(msg.sigs)))
	}
	if dc := msg.dmarc; dc != nil {
		attrs = dc.attrs(attrs)
	}
	return attrs
}

// outcome is what the decision line calls the message's end: our refusal
// when it reached every recipient (at MAIL, at each RCPT) or came at end
// of message, "dry-run" when dry-run held one back, else end.
func (msg *message) outcome(end string) string {
	switch {
	case msg.verdict.severity() > 0 && (msg.mode == modeNone || msg.applied == "eom"):
		return string(msg.verdict.Action)
	case msg.wouldBe.severity() > 0:
		return "dry-run"
	}
	return end
}

// shown is the verdict the decision line and the verdict counter name,
// and the stage it was (or in dry-run would have been) given at: a
// refusal given, else one dry-run held back (dry), else the verdict.
func (msg *message) shown() (v Verdict, stage string, dry bool) {
	if msg.verdict.severity() == 0 && msg.wouldBe.severity() > 0 {
		return msg.wouldBe, msg.wouldStage, true
	}
	return msg.verdict, msg.applied, false
}

// countVerdict adds the message's one verdict to
// senderguard_verdicts_total{stage,action}: once per message, whatever its
// recipients, so that ratios to messages_total are true fractions.
func (s *session) countVerdict(outcome string) {
	msg := s.msg
	v, stage, dry := msg.shown()
	action := "none" // ended without a verdict (aborted, disconnected)
	if stage == "" {
		stage = "eom"
	}
	switch {
	case msg.skip != "":
		action = "skip"
	case dry:
		action = "dry_run_" + string(v.Action)
	case v.severity() > 0:
		action = string(v.Action)
	case outcome == "accept":
		action = "accept"
	}
	s.f.deps.Metrics.Verdicts.WithLabelValues(stage, action).Inc()
}
