package filter_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/config"
	"github.com/senderguard/senderguard/filter"
)

// countingVerifier is a fake callout: every address exists; it counts.
type countingVerifier struct {
	mu       sync.Mutex
	verifies int
	nullMX   int
}

func (v *countingVerifier) Verify(ctx context.Context, addr string) *callout.Result {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.verifies++
	return &callout.Result{Class: callout.Exists, Address: addr}
}

func (v *countingVerifier) NullMX(ctx context.Context, domain string) (bool, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.nullMX++
	return false, true
}

func (v *countingVerifier) counts() (int, int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.verifies, v.nullMX
}

func recipientEntries(c *config.Config) {
	strictSoftfail := map[string]map[string]config.Action{"spf_mailfrom": {"softfail": mustAction("reject 550 5.7.23")}}
	off := false
	on := true
	c.RecipientDomains = []config.RecipientDomain{
		{Name: "strict", Domains: []string{"strict.example", "*.strict.example"}, Actions: strictSoftfail},
		{Domains: []string{"trial.example"}, DryRun: &on, Actions: strictSoftfail},
		{Domains: []string{"noprobe.example"}, Callout: &config.RecipientCallout{Enabled: &off}},
		{Domains: []string{"noneonly.example"}, Callout: &config.RecipientCallout{ProbeOn: &[]string{"none"}}},
	}
	c.Callout.Enabled = true
}

func mustAction(s string) config.Action {
	a, err := config.ParseAction(s)
	if err != nil {
		panic(err)
	}
	return a
}

func TestPerRecipientVerdicts(t *testing.T) {
	v := &countingVerifier{}
	r := newRigWith(t, "tcp", recipientEntries, func(d *filter.Deps) { d.Callout = v })

	// One softfail message to a strict and an ordinary domain: refused for
	// the first, accepted for the second; postmaster at strict accepted.
	s := r.session("192.0.2.10")
	r.want(s.Mail("ann@soft.test", ""))
	a, err := s.Rcpt("a@strict.example", "")
	r.reply(a, err, 550, "5.7.23 SPF softfail")
	r.want(s.Rcpt("b@other.example", ""))
	r.want(s.Rcpt("postmaster@strict.example", ""))
	a, err = s.Rcpt("c@sub.strict.example", "")
	r.reply(a, err, 550, "5.7.23 ")
	mods, act, err := r.end(s)
	r.want(act, err)
	for _, m := range mods {
		if m.HeaderName == filter.OurHeader && strings.Contains(m.HeaderValue, "dry-run") {
			t.Errorf("dry-run header without a dry-run recipient: %q", m.HeaderValue)
		}
	}
	waitFor(t, func() bool {
		return lineWith(r.log.String(), "sender=ann@soft.test", `rcpt_outcomes="strict.example:reject other.example:accept sub.strict.example:reject"`)
	}, "decision line:\n%s", r.log)

	// A dry-run domain is delivered and marked while another domain's
	// recipient is refused.
	r.want(s.Mail("bea@soft.test", ""))
	r.want(s.Rcpt("t@trial.example", ""))
	a, err = s.Rcpt("s@strict.example", "")
	r.reply(a, err, 550, "5.7.23 ")
	mods, act, err = r.end(s)
	r.want(act, err)
	found := false
	for _, m := range mods {
		if m.HeaderName == filter.OurHeader && strings.Contains(m.HeaderValue, "dry-run=would-reject (550 5.7.23 SPF softfail") && strings.HasSuffix(m.HeaderValue, " for trial.example") {
			found = true
		}
	}
	if !found {
		t.Errorf("no dry-run header naming trial.example in %+v", mods)
	}
}

func TestPerRecipientCalloutOnlyWhenAPolicyWantsIt(t *testing.T) {
	v := &countingVerifier{}
	r := newRigWith(t, "tcp", recipientEntries, func(d *filter.Deps) { d.Callout = v })
	s := r.session("192.0.2.10")
	r.want(s.Mail("cat@soft.test", ""))
	r.want(s.Rcpt("x@noprobe.example", ""))
	if n, nm := v.counts(); n != 0 || nm != 0 {
		t.Fatalf("callouts-off recipient: %d probes, %d null-MX checks; want none", n, nm)
	}
	r.want(s.Rcpt("w@noneonly.example", "")) // probe_on [none]: a softfail is not probed
	if n, nm := v.counts(); n != 0 || nm != 1 {
		t.Fatalf("probe_on [none] recipient: %d probes, %d null-MX checks; want 0 and 1", n, nm)
	}
	r.want(s.Rcpt("y@other.example", ""))
	r.want(s.Rcpt("z@other2.example", ""))
	if n, nm := v.counts(); n != 1 || nm != 1 {
		t.Fatalf("after recipients that want callouts: %d probes, %d null-MX checks; want one each", n, nm)
	}
}

func TestPerRecipientReloadAddsADomain(t *testing.T) {
	r := newRig(t, "tcp", nil)
	s := r.session("192.0.2.10")
	r.want(s.Mail("dan@soft.test", ""))
	r.want(s.Rcpt("a@added.example", "")) // global policy: softfail accepted
	r.must(s.Abort(nil))
	cfg := config.Default()
	cfg.Hostname, cfg.Callout.Enabled = "mx.test", false
	recipientEntries(cfg)
	cfg.Callout.Enabled = false
	cfg.RecipientDomains[0].Domains = append(cfg.RecipientDomains[0].Domains, "added.example")
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r.f.Apply(cfg)
	r.want(s.Mail("dan@soft.test", ""))
	a, err := s.Rcpt("a@added.example", "")
	r.reply(a, err, 550, "5.7.23 ")
}

// TestOpenPassIsProbedAndSkipDomainsAreNot: an SPF pass from a record
// that authorizes every address (+all, ip4:0.0.0.0/0, or an include of
// such a record) is no evidence, so the sender is probed although pass is
// not in probe_on, and the decision line says +all; a sender domain in
// callout.skip_domains (or a subdomain) is never probed, while its SPF is
// still judged.
func TestOpenPassIsProbedAndSkipDomainsAreNot(t *testing.T) {
	v := &countingVerifier{}
	r := newRigWith(t, "tcp", func(c *config.Config) {
		c.Callout.Enabled = true
		c.Callout.SkipDomains = []string{"open4.test"}
	}, func(d *filter.Deps) { d.Callout = v })
	for _, tc := range []struct {
		sender string
		probes int
	}{
		{"a@pass.test", 0},    // a real pass vouches for the client
		{"b@open.test", 1},    // +all
		{"c@openinc.test", 2}, // include of +all
		{"d@open4.test", 2},   // ip4:0.0.0.0/0, but a skip domain
		{"e@soft.test", 3},    // softfail: probe_on
	} {
		s := r.session("192.0.2.10")
		r.want(s.Mail(tc.sender, ""))
		r.want(s.Rcpt("u@x.test", ""))
		r.end(s)
		if n, _ := v.counts(); n != tc.probes {
			t.Fatalf("after %s: %d probes, want %d", tc.sender, n, tc.probes)
		}
	}
	// The null-MX check, asked beside SPF, is asked once a message.
	if _, nm := v.counts(); nm != 5 {
		t.Errorf("%d null-MX checks for 5 messages, want 5", nm)
	}
	if !lineWith(r.log.String(), "sender=b@open.test", "spf_mailfrom=pass", "spf_mailfrom_open=+all", "callout=exists") {
		t.Errorf("no decision line naming +all:\n%s", r.log)
	}
	if !lineWith(r.log.String(), "sender=d@open4.test", "spf_mailfrom=pass") || lineWith(r.log.String(), "sender=d@open4.test", "callout=exists") {
		t.Errorf("the skip domain's line: SPF judged, no probe:\n%s", r.log)
	}
}

// TestPostmasterAloneMakesNoProbe: without recipient_domains the global
// policy is judged per recipient like any entry's, so a message only to
// postmaster (never judged) makes no probe; the first judged recipient
// does, and a second one reuses it.
func TestPostmasterAloneMakesNoProbe(t *testing.T) {
	v := &countingVerifier{}
	r := newRigWith(t, "tcp", func(c *config.Config) { c.Callout.Enabled = true }, func(d *filter.Deps) { d.Callout = v })
	s := r.session("192.0.2.10")
	r.want(s.Mail("cat@soft.test", ""))
	r.want(s.Rcpt("postmaster@example.test", ""))
	if n, _ := v.counts(); n != 0 {
		t.Fatalf("postmaster only: %d probes, want none", n)
	}
	r.want(s.Rcpt("u@example.test", ""))
	r.want(s.Rcpt("w@example.org", ""))
	if n, _ := v.counts(); n != 1 {
		t.Fatalf("two judged recipients: %d probes, want 1", n)
	}
}
