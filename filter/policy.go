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
}

// NewPolicy builds the policy of cfg.
func NewPolicy(cfg *config.Config) *Policy { return &Policy{actions: cfg.Actions} }

// Decide returns the most severe verdict any check calls for; on a tie the
// MAIL FROM SPF result comes first, then HELO SPF, then the callout.
func (p *Policy) Decide(f *Facts) Verdict {
	best := Verdict{Action: config.Accept}
	consider := func(v Verdict) {
		if v.severity() > best.severity() {
			best = v
		}
	}
	if f.SPFMail != nil && f.SPFMail.Identity == spf.MailFrom {
		consider(p.spfVerdict(*p.actions.SPFMailFrom.For(string(f.SPFMail.Status)), f.SPFMail, f))
	}
	if f.SPFHelo != nil {
		consider(p.spfVerdict(*p.actions.SPFHelo.For(string(f.SPFHelo.Status)), f.SPFHelo, f))
	}
	if f.Callout != nil {
		consider(p.calloutVerdict(f.Callout))
	}
	return best
}

func (p *Policy) spfVerdict(a config.Action, r *spf.Result, f *Facts) Verdict {
	v := Verdict{Action: a.Verb, Code: a.Code, Status: a.Status, Text: a.Text, Check: "spf_" + string(r.Identity)}
	if v.Action == config.Accept || v.Text != "" {
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
