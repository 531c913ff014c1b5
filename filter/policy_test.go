package filter

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/config"
)

func TestPolicyDecide(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.1")
	mail := func(s spf.Status) *spf.Result {
		return &spf.Result{Status: s, Identity: spf.MailFrom, IP: ip, Sender: "a@x.test", Explanation: "go away %s", Problem: errors.New("p")}
	}
	helo := func(s spf.Status) *spf.Result {
		return &spf.Result{Status: s, Identity: spf.HELO, IP: ip, Sender: "postmaster@h.test"}
	}
	co := func(c callout.Class, code int, enh string) *callout.Result {
		r := &callout.Result{Class: c, Address: "a@x.test"}
		if code != 0 {
			r.Reply = &callout.Reply{Code: code, Enhanced: enh, Text: "secret internal host said no"}
		}
		return r
	}
	tests := []struct {
		name  string
		f     Facts
		reply string
		check string
	}{
		{"pass", Facts{SPFMail: mail(spf.Pass), SPFHelo: helo(spf.None)}, "", ""},
		{"mailfrom fail", Facts{SPFMail: mail(spf.Fail)}, "550 5.7.23 SPF fail: sender a@x.test is not allowed to be sent from 192.0.2.1: go away s", "spf_mailfrom"},
		{"temperror", Facts{SPFMail: mail(spf.TempError)}, "451 4.7.24 SPF temperror: the SPF policy of sender a@x.test could not be checked now (DNS); try again later", "spf_mailfrom"},
		{"permerror accepted", Facts{SPFMail: mail(spf.PermError)}, "", ""},
		{"softfail accepted", Facts{SPFMail: mail(spf.Softfail)}, "", ""},
		{"helo fail", Facts{HELO: "h.test", SPFMail: mail(spf.Pass), SPFHelo: helo(spf.Fail)}, "550 5.7.23 SPF fail: HELO name h.test is not allowed to be sent from 192.0.2.1: ", "spf_helo"},
		{"reject beats tempfail", Facts{HELO: "h.test", SPFMail: mail(spf.TempError), SPFHelo: helo(spf.Fail)}, "550 5.7.23 SPF fail: HELO name h.test is not allowed to be sent from 192.0.2.1: ", "spf_helo"},
		{"null sender uses helo only", Facts{HELO: "h.test", SPFMail: helo(spf.Fail), SPFHelo: helo(spf.Fail)}, "550 5.7.23 SPF fail: HELO name h.test is not allowed to be sent from 192.0.2.1: ", "spf_helo"},
		{"not-exists", Facts{SPFMail: mail(spf.Neutral), Callout: co(callout.NotExists, 550, "5.1.1")}, "550 5.1.7 Sender address rejected: <a@x.test> does not exist (its mail server answered 550 5.1.1)", "callout"},
		{"null mx", Facts{SPFMail: mail(spf.Pass), Callout: co(callout.NullMX, 0, "")}, "550 5.7.27 Sender address rejected: domain of <a@x.test> accepts no mail (null MX)", "callout"},
		{"no mail host", Facts{Callout: co(callout.NoMailHost, 0, "")}, "550 5.1.8 Sender address rejected: domain of <a@x.test> has no mail server", "callout"},
		{"unknown accepted", Facts{Callout: co(callout.Unknown, 451, "4.7.1")}, "", ""},
		{"in progress", Facts{Callout: co(callout.InProgress, 0, "")}, "451 4.7.1 Sender address verification of <a@x.test> in progress; try again later", "callout"},
		{"catch-all accepted", Facts{Callout: co(callout.CatchAll, 250, "")}, "", ""},
	}
	p := NewPolicy(config.Default())
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := p.Decide(&tc.f)
			if v.Reply() != tc.reply && !(len(tc.reply) > 0 && len(v.Reply()) > len(tc.reply) && v.Reply()[:len(tc.reply)] == tc.reply) {
				t.Errorf("reply %q, want %q", v.Reply(), tc.reply)
			}
			if v.Check != tc.check && tc.reply != "" {
				t.Errorf("decided by %q, want %q", v.Check, tc.check)
			}
		})
	}
	// Configured actions and texts win.
	cfg := config.Default()
	cfg.Actions.Callout.Unknown, _ = config.ParseAction("tempfail 451 4.4.3")
	cfg.Actions.SPFMailFrom.Softfail, _ = config.ParseAction("reject 550 5.7.1 Custom words")
	p = NewPolicy(cfg)
	if v := p.Decide(&Facts{Callout: co(callout.Unknown, 0, "")}); v.Reply() != "451 4.4.3 Sender address <a@x.test> could not be verified (unknown); try again later" {
		t.Errorf("unknown tempfail: %q", v.Reply())
	}
	if v := p.Decide(&Facts{SPFMail: mail(spf.Softfail)}); v.Reply() != "550 5.7.1 Custom words" {
		t.Errorf("custom text: %q", v.Reply())
	}
}

// TestEveryResultHasItsOwnAction: config's one table from result names to
// actions knows each name the checks give (a name it did not know would
// fall to permerror's or unknown's action).
func TestEveryResultHasItsOwnAction(t *testing.T) {
	var a config.Actions
	seen := map[*config.Action]string{}
	distinct := func(name string, p *config.Action) {
		if other, ok := seen[p]; ok {
			t.Errorf("%s shares its action with %s", name, other)
		}
		seen[p] = name
	}
	for _, s := range []spf.Status{spf.Pass, spf.Fail, spf.Softfail, spf.Neutral, spf.None, spf.TempError, spf.PermError} {
		distinct("spf "+string(s), a.SPFMailFrom.For(string(s)))
	}
	for _, c := range []callout.Class{callout.Exists, callout.NotExists, callout.CatchAll, callout.NullMX, callout.NoMailHost, callout.InProgress, callout.Unknown} {
		distinct("callout "+string(c), a.Callout.For(string(c)))
	}
}
