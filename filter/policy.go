package filter

import (
	"fmt"
	"strings"

	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/config"
	"github.com/senderguard/senderguard/internal/safetext"
)

// Verdict is what the policy decided for a message.
type Verdict struct {
	Action config.Verb
	Code   int
	Status string // enhanced status code
	Text   string
	Check  string // the check that decided: spf_mailfrom, spf_helo, callout; "" when none did
}

// Reply is the SMTP reply line for a tempfail or reject.
func (v Verdict) Reply() string {
	if v.Action == config.Accept || v.Action == "" {
		return ""
	}
	return fmt.Sprintf("%d %s %s", v.Code, v.Status, v.Text)
}

// severity orders verdicts: the worst wins.
func (v Verdict) severity() int {
	switch v.Action {
	case config.Reject:
		return 2
	case config.TempFail:
		return 1
	}
	return 0
}

// Facts is what the checks found about one message.
type Facts struct {
	ClientIP string
	HELO     string
	Sender   string
	SPFHelo  *spf.Result
	SPFMail  *spf.Result
	Callout  *callout.Result
}

// Policy turns check results into a verdict. It never touches the network.
type Policy struct {
	actions config.Actions
	rules   config.SPFPolicy
	// notPass is rules.RejectNotPassDomains, canonical.
	notPass              []string
	reasonMsg, reasonURL string
}

// NewPolicy builds the policy of cfg.
func NewPolicy(cfg *config.Config) *Policy { return newPolicy(cfg, cfg.Actions, cfg.SPF.SPFPolicy) }

// newPolicy is the policy of cfg with these actions and SPF rules (a
// recipient domain's).
func newPolicy(cfg *config.Config, actions config.Actions, rules config.SPFPolicy) *Policy {
	return &Policy{actions: actions, rules: rules, notPass: canonicalNames(rules.RejectNotPassDomains),
		reasonMsg: cfg.SPF.ReasonMessage, reasonURL: cfg.SPF.ReasonURL}
}

// Decide returns the most severe verdict any check calls for; on a tie the
// MAIL FROM SPF result comes first, then HELO SPF, then the callout. With
// spf.helo_first a HELO refusal decides before anything else.
func (p *Policy) Decide(f *Facts) Verdict {
	best := Verdict{Action: config.Accept}
	consider := func(v Verdict) {
		if v.severity() > best.severity() {
			best = v
		}
	}
	// The HELO actions judge the null sender (whose MAIL FROM identity is
	// the HELO's, RFC 7208 §2.4), and every sender unless
	// helo_null_sender_only.
	if f.SPFHelo != nil && (!p.rules.HELONullSenderOnly || f.Sender == "") {
		v := p.spfVerdict(p.spfAction(&p.actions.SPFHelo, f.SPFHelo, f.HELO), f.SPFHelo, f)
		if p.rules.HELOFirst && v.severity() > 0 {
			return v
		}
		consider(v)
	}
	if f.SPFMail != nil && f.SPFMail.Identity == spf.MailFrom {
		v := p.spfVerdict(p.spfAction(&p.actions.SPFMailFrom, f.SPFMail, domainOf(f.Sender)), f.SPFMail, f)
		if v.severity() >= best.severity() {
			best = v // MAIL FROM first on a tie
		}
	}
	if f.Callout != nil {
		consider(p.calloutVerdict(f.Callout))
	}
	return best
}

// spfAction is the action for r: the table's, a refusal of fail,
// softfail and neutral for a name in reject_not_pass_domains, and no
// rejection unless the record is "v=spf1 -all" with reject_only_no_mail.
func (p *Policy) spfAction(table *config.SPFActions, r *spf.Result, name string) config.Action {
	a := *table.For(string(r.Status))
	if len(p.notPass) > 0 && a.Verb != config.Reject && matchName(p.notPass, name, true) {
		switch r.Status {
		case spf.Fail, spf.Softfail, spf.Neutral:
			a = config.Action{Verb: config.Reject, Code: 550, Status: "5.7.23"}
			if f := table.Fail; f.Verb == config.Reject {
				a.Code, a.Status = f.Code, f.Status
			}
		}
	}
	if p.rules.RejectOnlyNoMail && a.Verb == config.Reject && !r.NoMail {
		return config.Action{Verb: config.Accept}
	}
	return a
}

func (p *Policy) spfVerdict(a config.Action, r *spf.Result, f *Facts) Verdict {
	v := Verdict{Action: a.Verb, Code: a.Code, Status: a.Status, Text: a.Text, Check: "spf_" + string(r.Identity)}
	if v.Action == config.Accept || v.Text != "" {
		return v
	}
	if p.reasonMsg != "" {
		v.Text = reasonText(p.reasonMsg, p.reasonURL, v.Action, r)
		return v
	}
	who := "sender " + r.Sender
	if r.Identity == spf.HELO {
		who = "HELO name " + f.HELO
	}
	switch r.Status {
	case spf.Fail:
		v.Text = fmt.Sprintf("SPF fail: %s is not allowed to be sent from %s: %s", who, r.IP, replyText(r.Explanation))
	case spf.TempError:
		v.Text = fmt.Sprintf("SPF temperror: the SPF policy of %s could not be checked now (DNS); try again later", who)
	case spf.PermError:
		v.Text = fmt.Sprintf("SPF permerror: the SPF record of %s is broken", who)
	default:
		v.Text = fmt.Sprintf("SPF %s for %s from %s", r.Status, who, r.IP)
	}
	return v
}

func (p *Policy) calloutVerdict(r *callout.Result) Verdict {
	a := *p.actions.Callout.For(string(r.Class))
	v := Verdict{Action: a.Verb, Code: a.Code, Status: a.Status, Text: a.Text, Check: "callout"}
	if v.Action == config.Accept || v.Text != "" {
		return v
	}
	// Name the remote status only: the remote free text can carry anything.
	switch r.Class {
	case callout.NotExists:
		code := "5xx"
		if r.Reply != nil {
			code = fmt.Sprint(r.Reply.Code)
			if r.Reply.Enhanced != "" {
				code += " " + r.Reply.Enhanced
			}
		}
		v.Text = fmt.Sprintf("Sender address rejected: <%s> does not exist (its mail server answered %s)", replyText(r.Address), code)
	case callout.NullMX:
		v.Text = fmt.Sprintf("Sender address rejected: domain of <%s> accepts no mail (null MX)", replyText(r.Address))
	case callout.NoMailHost:
		v.Text = fmt.Sprintf("Sender address rejected: domain of <%s> has no mail server", replyText(r.Address))
	case callout.InProgress:
		v.Text = fmt.Sprintf("Sender address verification of <%s> in progress; try again later", replyText(r.Address))
	default:
		v.Text = fmt.Sprintf("Sender address <%s> could not be verified (%s); try again later", replyText(r.Address), r.Class)
	}
	return v
}

// replyText makes remote-influenced text safe for an SMTP reply line:
// printable ASCII, bounded, and without "%" (Sendmail treats reply text
// as a format string).
func replyText(s string) string {
	return strings.ReplaceAll(safetext.Printable(s, 300), "%", "")
}

// reasonText expands spf.reason_message: {rejectdefer}, {result}, {spf}
// (the explanation: the record's exp= for fail, else a description) and
// {url}; without a URL, the sentence that names {url} is left out.
func reasonText(tmpl, url string, verb config.Verb, r *spf.Result) string {
	if url == "" {
		tmpl = dropSentence(tmpl, "{url}")
	}
	rd := "rejected"
	if verb == config.TempFail {
		rd = "deferred"
	}
	why := r.Explanation
	if r.Status != spf.Fail || why == "" || why == spf.DefaultExplanation {
		why = "SPF " + string(r.Status) + ": " + r.Comment()
	}
	return replyText(strings.NewReplacer("{rejectdefer}", rd, "{result}", string(r.Status), "{spf}", why, "{url}", url).Replace(tmpl))
}

// dropSentence removes from s the sentence containing mark: from the end
// of the sentence before it (". ") to its own end.
func dropSentence(s, mark string) string {
	i := strings.Index(s, mark)
	if i < 0 {
		return s
	}
	start := strings.LastIndex(s[:i], ". ")
	if start < 0 {
		start = 0
	} else {
		start += 1 // keep the period that ends the sentence before
	}
	end := len(s)
	if j := strings.Index(s[i:], ". "); j >= 0 {
		end = i + j + 1
	}
	return strings.TrimSpace(s[:start] + s[end:])
}
