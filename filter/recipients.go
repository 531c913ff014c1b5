package filter

import (
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/d--j/go-milter"

	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/config"
	"github.com/senderguard/senderguard/metrics"
)

// rcptPolicy is what one recipient domain asked for: the global settings
// with an entry of recipient_domains applied.
type rcptPolicy struct {
	label   string // in metrics: the entry's name, "entry-N", or "global"
	policy  *Policy
	dryRun  bool
	callout bool
	probeOn map[spf.Status]bool
	rescue  string // spf_fail_rescue: dkim, dmarc or none

	// counters of recipient_verdicts_total by action, made on first use
	// (a label look-up costs more than the rest of a warm RCPT).
	counters sync.Map // action → prometheus.Counter
}

// count adds one recipient's verdict to recipient_verdicts_total.
func (p *rcptPolicy) count(m *metrics.Metrics, action string) {
	c, ok := p.counters.Load(action)
	if !ok {
		c, _ = p.counters.LoadOrStore(action, m.RecipientVerdicts.WithLabelValues(p.label, action))
	}
	c.(prometheus.Counter).Inc()
}

// recipientTable finds a recipient domain's policy: the exact name first,
// then the longest "*." suffix that covers it (most specific wins; a
// domain may appear in one entry only, so there is no tie), else the
// default entry made of the global settings. Every recipient is judged
// through it, with or without recipient_domains.
type recipientTable struct {
	def   *rcptPolicy
	exact map[string]*rcptPolicy
	wild  map[string]*rcptPolicy // keyed by the suffix after "*."
	// allCallout: every entry wants callouts, so the sender domain's MX
	// will be needed whoever the recipients are.
	allCallout bool
}

func probeOnSet(list []string) map[spf.Status]bool {
	m := map[spf.Status]bool{}
	for _, s := range list {
		m[spf.Status(s)] = true
	}
	return m
}

// newRecipients builds the table of cfg: the global policy as its default
// entry, and recipient_domains' entries; names were validated by config.
func newRecipients(cfg *config.Config) *recipientTable {
	g := &rcptPolicy{label: "global", policy: NewPolicy(cfg), dryRun: cfg.DryRun, callout: cfg.Callout.Enabled, probeOn: probeOnSet(cfg.Callout.ProbeOn),
		rescue: cfg.SPFFailRescue}
	t := &recipientTable{def: g, exact: map[string]*rcptPolicy{}, wild: map[string]*rcptPolicy{}, allCallout: g.callout}
	for i := range cfg.RecipientDomains {
		e := &cfg.RecipientDomains[i]
		p := &rcptPolicy{label: e.Label(i), policy: newPolicy(cfg, e.Merged(cfg.Actions), e.MergedSPF(cfg.SPF.SPFPolicy)), dryRun: g.dryRun, callout: g.callout, probeOn: g.probeOn, rescue: g.rescue}
		if e.DryRun != nil {
			p.dryRun = *e.DryRun
		}
		if e.SPFFailRescue != nil {
			p.rescue = *e.SPFFailRescue
		}
		if c := e.Callout; c != nil {
			if c.Enabled != nil {
				p.callout = *c.Enabled
			}
			if c.ProbeOn != nil {
				p.probeOn = probeOnSet(*c.ProbeOn)
			}
		}
		t.allCallout = t.allCallout && p.callout
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
	return t
}

// sole is the policy of every recipient when there are no entries (the
// verdict is known before the recipients are), nil otherwise.
func (t *recipientTable) sole() *rcptPolicy {
	if len(t.exact)+len(t.wild) == 0 {
		return t.def
	}
	return nil
}

// match returns the policy of domain's entry, the default entry when none
// covers it. It allocates nothing for an ASCII domain.
func (t *recipientTable) match(domain string) *rcptPolicy {
	if p := t.entry(domain); p != nil {
		return p
	}
	return t.def
}

// entry returns the policy of the entry that covers domain, nil when none
// does.
func (t *recipientTable) entry(domain string) *rcptPolicy {
	if len(t.exact)+len(t.wild) == 0 {
		return nil
	}
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

// rcptVerdict gives one recipient the verdict of its own domain's policy
// (domain in lower case), probing first if that policy wants a probe the
// message has not had.
func (s *session) rcptVerdict(domain string) *milter.Response {
	msg := s.msg
	pol := msg.rt.recipients.match(domain)
	v, held := s.judge(pol)
	if held {
		mode := pol.holdMode()
		r := s.join(mode, &v)
		if r == respContinue && len(msg.outcomes) < maxOutcomes {
			outcome := ":held"
			if mode == modeHeldDMARCDry {
				outcome = ":held_dry_run"
			}
			msg.outcomes = append(msg.outcomes, domain+outcome)
		}
		return r
	}
	action := string(v.Action)
	if v.Action != config.Accept && pol.dryRun {
		action = "dry_run_" + action
		msg.wouldRefuse(v, "rcpt", pol, domain)
	}
	if len(msg.outcomes) < maxOutcomes {
		msg.outcomes = append(msg.outcomes, domain+":"+action)
	}
	pol.count(s.f.deps.Metrics, action)
	if v.Action == config.Accept || pol.dryRun {
		return s.join(modePlain, nil)
	}
	if v.severity() > msg.verdict.severity() {
		msg.verdict, msg.applied = v, "rcpt"
	}
	return replyResponse(v)
}

// judge runs the callout pol wants (once per message, within this stage's
// budget) and decides.
func (s *session) judge(pol *rcptPolicy) (Verdict, bool) {
	if pol.callout {
		s.runCallout(s.msg, pol.probeOn)
	}
	return s.decide(pol, s.msg)
}

// wouldRefuse notes a refusal that dry-run did not give: the worst one
// for the decision line, and each distinct one for X-Senderguard, naming
// the recipient domain when an entry of recipient_domains asked for it.
func (msg *message) wouldRefuse(v Verdict, stage string, pol *rcptPolicy, domain string) {
	if v.severity() > msg.wouldBe.severity() {
		msg.wouldBe, msg.wouldStage = v, stage
	}
	w := "would-" + string(v.Action) + " (" + v.Reply() + ")"
	if pol != msg.rt.recipients.def {
		w += " for " + domain
	}
	msg.noteWould(w)
}

// noteWould adds one item to X-Senderguard's dry-run list, once.
func (msg *message) noteWould(w string) {
	if len(msg.wouldReject) < maxOutcomes && !slices.Contains(msg.wouldReject, w) {
		msg.wouldReject = append(msg.wouldReject, w)
	}
}
