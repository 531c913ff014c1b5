package filter

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/config"
)

// logDecision writes the one decision line of the current message.
func (s *session) logDecision(outcome string) {
	msg := s.msg
	if msg == nil || msg.logged {
		return
	}
	msg.logged = true
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
	}
	if r := f.SPFHelo; r != nil {
		attrs = append(attrs, slog.String("spf_helo", string(r.Status)))
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
		if rs.outcome == "rescued" {
			attrs = append(attrs, slog.String("rescued_by", "dkim d="+rs.domain+" s="+rs.selector))
		} else if rs.why != "" {
			attrs = append(attrs, slog.String("rescue_failed", rs.why))
		}
	} else if msg.mode == modeHeld {
		attrs = append(attrs, slog.String("spf_fail_rescue", "held"))
	}
	v := msg.verdict
	if v.Action != "" {
		attrs = append(attrs, slog.String("verdict", string(v.Action)))
	}
	if v.Check != "" && v.Reply() != "" {
		attrs = append(attrs, slog.String("decided_by", v.Check), slog.String("reply", v.Reply()), slog.String("stage", msg.applied))
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

// countVerdict adds the message's one verdict to
// senderguard_verdicts_total{stage,action}: once per message, whatever its
// recipients, so that ratios to messages_total are true fractions.
func (s *session) countVerdict(outcome string) {
	mt := s.f.deps.Metrics
	msg := s.msg
	stage, action := msg.applied, "none" // ended without a verdict (aborted, disconnected)
	if stage == "" {
		stage = "eom"
	}
	v := msg.verdict.Action
	switch {
	case msg.skip != "":
		action = "skip"
	case outcome == "dry-run":
		action = "dry_run_" + string(v)
	case msg.applied != "" && v != config.Accept && v != "":
		action = string(v)
	case outcome == "accept":
		action = "accept"
	}
	mt.Verdicts.WithLabelValues(stage, action).Inc()
}
