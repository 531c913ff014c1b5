package filter

import (
	"context"
	"strings"

	"github.com/d--j/go-milter"

	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/config"
)

// rcptPolicy is what one recipient domain asked for: the global settings
// with an entry of recipient_domains applied.
type rcptPolicy struct {
	label   string // in metrics: the entry's name, "entry-N", or "global"
	policy  *Policy
	dryRun  bool
	callout bool
	probeOn map[spf.Status]bool
	rescue  bool // spf_fail_rescue: dkim
}

// recipientTable finds a recipient domain's policy: the exact name first,
// then the longest "*." suffix that covers it (most specific wins; a
// domain may appear in one entry only, so there is no tie).
type recipientTable struct {
	exact map[string]*rcptPolicy
	wild  map[string]*rcptPolicy // keyed by the suffix after "*."
}

func probeOnSet(list []string) map[spf.Status]bool {
	m := map[spf.Status]bool{}
	for _, s := range list {
		m[spf.Status(s)] = true
	}
	return m
}

// newRecipients builds the global policy and, when cfg has entries, the
// table; names were validated by config.
func newRecipients(cfg *config.Config, global *Policy) (*rcptPolicy, *recipientTable) {
	g := &rcptPolicy{label: "global", policy: global, dryRun: cfg.DryRun, callout: cfg.Callout.Enabled, probeOn: probeOnSet(cfg.Callout.ProbeOn),
		rescue: cfg.SPFFailRescue == "dkim"}
	if len(cfg.RecipientDomains) == 0 {
		return g, nil
	}
	t := &recipientTable{exact: map[string]*rcptPolicy{}, wild: map[string]*rcptPolicy{}}
	for i := range cfg.RecipientDomains {
		e := &cfg.RecipientDomains[i]
		p := &rcptPolicy{label: e.Label(i), policy: &Policy{actions: e.Merged(cfg.Actions)}, dryRun: g.dryRun, callout: g.callout, probeOn: g.probeOn, rescue: g.rescue}
		if e.DryRun != nil {
			p.dryRun = *e.DryRun
		}
		if e.SPFFailRescue != nil {
			p.rescue = *e.SPFFailRescue == "dkim"
		}
		if c := e.Callout; c != nil {
			if c.Enabled != nil {
				p.callout = *c.Enabled
			}
			if c.ProbeOn != nil {
				p.probeOn = probeOnSet(*c.ProbeOn)
			}
		}
		for _, d := range e.Domains {
			name, wild := strings.CutPrefix(d, "*.")
			canon, _ := config.CanonicalDomain(name)
			if wild {
				t.wild[canon] = p
			} else {
				t.exact[canon] = p
			}
		}
	}
	return g, t
}

// match returns the policy of domain's entry, nil when none covers it. It
// allocates nothing for an ASCII domain.
func (t *recipientTable) match(domain string) *rcptPolicy {
	var buf [256]byte
	domain = strings.TrimSuffix(domain, ".")
	if len(domain) > len(buf) {
		return nil
	}
	b := buf[:len(domain)]
	for i := 0; i < len(domain); i++ {
		c := domain[i]
		if c >= 0x80 {
			canon, err := config.CanonicalDomain(domain) // IDN: by A-label
			if err != nil || len(canon) > len(buf) {
				return nil
			}
			b = buf[:copy(buf[:], canon)]
			break
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	if p := t.exact[string(b)]; p != nil {
		return p
	}
	for i := 0; i < len(b); i++ {
		if b[i] == '.' {
			if p := t.wild[string(b[i+1:])]; p != nil {
				return p
			}
		}
	}
	return nil
}

// facts are the message's facts as this policy sees them: no callout
// result where its callouts are off, no probe result for an SPF result it
// does not probe on.
func (p *rcptPolicy) facts(msg *message) Facts {
	f := msg.facts
	if c := f.Callout; c != nil {
		if !p.callout || (c.Class != callout.NullMX && !wantsProbe(p.probeOn, f.SPFMail)) {
			f.Callout = nil
		}
	}
	return f
}

// maxOutcomes bounds the recipients a decision line names.
const maxOutcomes = 50

// rcptVerdict gives one recipient the verdict of its own domain's policy,
// probing first if that policy wants a probe the message has not had.
func (s *session) rcptVerdict(rcpt string) *milter.Response {
	msg, rt := s.msg, s.msg.rt
	domain := strings.ToLower(domainOf(rcpt))
	pol := rt.recipients.match(domain)
	if pol == nil {
		pol = rt.global
	}
	if pol.callout {
		ctx, cancel := context.WithTimeout(context.Background(), rt.cfg.StageBudget.D())
		s.runCallout(ctx, msg, pol.probeOn)
		cancel()
	}
	v, held := s.decide(pol, msg)
	if held {
		r := s.join(modeHeld, &v)
		if r == respContinue && len(msg.outcomes) < maxOutcomes {
			msg.outcomes = append(msg.outcomes, domain+":held")
		}
		return r
	}
	action := string(v.Action)
	if v.Action != config.Accept && pol.dryRun {
		action = "dry_run_" + action
		if len(msg.wouldReject) < maxOutcomes {
			msg.wouldReject = append(msg.wouldReject, "would-"+string(v.Action)+" ("+v.Reply()+") for "+domain)
		}
	}
	if len(msg.outcomes) < maxOutcomes {
		msg.outcomes = append(msg.outcomes, domain+":"+action)
	}
	s.f.deps.Metrics.RecipientVerdicts.WithLabelValues(pol.label, action).Inc()
	if v.Action == config.Accept || pol.dryRun {
		return s.join(modePlain, nil)
	}
	if v.severity() > msg.verdict.severity() {
		msg.verdict, msg.applied = v, "rcpt"
	}
	return replyResponse(v)
}
