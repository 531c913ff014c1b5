package filter_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/senderguard/senderguard/checks/dkim"
	"github.com/senderguard/senderguard/checks/dmarc"
	"github.com/senderguard/senderguard/config"
	"github.com/senderguard/senderguard/filter"
	"github.com/senderguard/senderguard/internal/testdkim"
)

// dmarcRig is a rescue rig with spf_fail_rescue: dmarc: every envelope
// sender is at fail.test ("v=spf1 -all"); the header From domains
// publish each kind of policy; draw fixes pct='s sample.
type dmarcRig struct {
	*rescueRig
	brand, news *testdkim.Key
	draw        atomic.Int64
}

func newDMARCRig(t *testing.T, edit func(*config.Config)) *dmarcRig {
	return newDMARCRigKeys(t, edit, nil)
}

// newDMARCRigKeys is newDMARCRig with the keys of like (nil: new ones).
func newDMARCRigKeys(t *testing.T, edit func(*config.Config), like *dmarcRig) *dmarcRig {
	dr := &dmarcRig{rescueRig: &rescueRig{}}
	dr.rig = newRigWith(t, "tcp", func(c *config.Config) {
		c.SPFFailRescue = "dmarc"
		if edit != nil {
			edit(c)
		}
	}, func(d *filter.Deps) {
		d.DKIM = &dkim.Verifier{Resolver: d.SPF.Resolver}
		d.DMARC = &dmarc.Finder{Resolver: d.SPF.Resolver}
		d.Draw = func() int { return int(dr.draw.Load()) }
	})
	if like == nil {
		dr.keys(t)
		dr.brand = testdkim.NewEd25519(t, "brand.test", "b")
		dr.news = testdkim.NewEd25519(t, "mail.org.test", "n")
	} else {
		dr.key, dr.other, dr.slow, dr.brand, dr.news = like.key, like.other, like.slow, like.brand, like.news
		if err := dr.dns.Add(dr.key.Record(), dr.other.Record(), dr.slow.Record()); err != nil {
			t.Fatal(err)
		}
		dr.dns.ServFail("s._domainkey.mail.fail.test")
	}
	if err := dr.dns.Add(dr.brand.Record(), dr.news.Record(),
		`_dmarc.brand.test. 300 IN TXT "v=DMARC1; p=reject"`,
		`_dmarc.reject.test. 300 IN TXT "v=DMARC1; p=reject"`,
		`_dmarc.quar.test. 300 IN TXT "v=DMARC1; p=quarantine"`,
		`_dmarc.none.test. 300 IN TXT "v=DMARC1; p=none"`,
		`_dmarc.org.test. 300 IN TXT "v=DMARC1; p=none; sp=reject"`,
		`_dmarc.strict.test. 300 IN TXT "v=DMARC1; p=reject; adkim=s"`,
		`_dmarc.pct.test. 300 IN TXT "v=DMARC1; p=reject; pct=30"`,
		`_dmarc.fail.test. 300 IN TXT "v=DMARC1; p=reject"`,
	); err != nil {
		t.Fatal(err)
	}
	dr.dns.ServFail("_dmarc.down.test")
	return dr
}

// message is a message whose header From is from and whose extra header
// fields are extra ("Name: value" lines).
func fromMessage(from string, extra ...string) string {
	msg := testdkim.Message(from, "u@example.test", "bulk", "the text of a bulk message")
	if len(extra) > 0 {
		msg = strings.Join(extra, "\r\n") + "\r\n" + msg
	}
	return msg
}

func (dr *dmarcRig) run(t *testing.T, raw string) ([]milter.ModifyAction, *milter.Action) {
	t.Helper()
	s := dr.session("192.0.2.10")
	dr.want(s.Mail("bounces@fail.test", ""))
	if a, err := s.Rcpt("u@example.test", ""); err != nil || a.Type != milter.ActionContinue {
		t.Fatalf("RCPT: %v %v, want continue (held)", a, err)
	}
	return send(t, s, raw)
}

func quarantined(mods []milter.ModifyAction) string {
	for _, m := range mods {
		if m.Type == milter.ActionQuarantine {
			return m.Reason
		}
	}
	return ""
}

// TestDMARCDecidesHeldSPFFails: each branch of spf_fail_rescue: dmarc,
// through the milter.
func TestDMARCDecidesHeldSPFFails(t *testing.T) {
	dr := newDMARCRig(t, nil)
	tests := []struct {
		name  string
		raw   string
		draw  int
		code  int    // 0: accepted
		reply string // part of the refusal
		ar    string // part of Authentication-Results when accepted
		quar  bool
		line  []string
	}{
		{"aligned DKIM of the From domain, envelope elsewhere: pass", dr.brand.Sign(t, fromMessage("news@brand.test")), 0, 0, "",
			"dmarc=pass (p=reject dis=none) header.from=brand.test", false,
			[]string{`rescued_by="dmarc d=brand.test s=b"`, "dmarc=pass", "header_from=brand.test", `dkim=brand.test/b:pass`}},
		{"p=reject, unsigned", fromMessage("news@reject.test"), 0, 550, "5.7.1 SPF fail, and no DKIM signature aligned with reject.test: its DMARC policy is reject", "", false,
			[]string{"dmarc=fail", `dmarc_policy="p=reject"`, "dmarc_disposition=reject", "outcome=reject", "decided_by=dmarc"}},
		{"p=reject, signed by the envelope domain only", dr.key.Sign(t, fromMessage("news@reject.test")), 0, 550, "5.7.1", "", false,
			[]string{"dmarc=fail", "dkim=fail.test/sel:pass"}},
		{"p=quarantine", fromMessage("news@quar.test"), 0, 0, "", "dmarc=fail (p=quarantine dis=quarantine) header.from=quar.test", true,
			[]string{"spf_fail_rescue=quarantined", "dmarc_disposition=quarantine"}},
		{"p=none", fromMessage("news@none.test"), 0, 0, "", "dmarc=fail (p=none dis=none) header.from=none.test", false,
			[]string{"spf_fail_rescue=accepted", `accepted_by="DMARC fail (p=none, dis=none)"`}},
		{"sp= of the organizational domain", fromMessage("news@sub.org.test"), 0, 550, "its DMARC policy is reject", "", false,
			[]string{"header_from=sub.org.test", "dmarc_domain=org.test", `dmarc_policy="p=none sp=reject"`}},
		{"relaxed alignment: a subdomain's signature", dr.news.Sign(t, fromMessage("news@sub.org.test")), 0, 0, "", "dmarc=pass", false,
			[]string{`rescued_by="dmarc d=mail.org.test s=n"`}},
		{"strict alignment refuses a parent's signature", dr.brand.Sign(t, fromMessage("news@x.strict.test")), 0, 550, "5.7.1", "", false, nil},
		{"pct=30, sampled in", fromMessage("news@pct.test"), 29, 550, "5.7.1", "", false, []string{"dmarc_disposition=reject"}},
		{"pct=30, sampled out: the next milder policy", fromMessage("news@pct.test"), 30, 0, "", "dmarc=fail (p=reject pct=30 dis=quarantine)", true,
			[]string{"spf_fail_rescue=quarantined", "dmarc_disposition=quarantine"}},
		{"no policy: the DKIM rescue decides (refused)", fromMessage("news@nopolicy.test"), 0, 550, "5.7.23", "", false,
			[]string{`rescue_failed="no DKIM signature"`, "dmarc=none"}},
		{"no policy: the DKIM rescue decides (rescued)", dr.key.Sign(t, fromMessage("news@nopolicy.test")), 0, 0, "", "dmarc=none header.from=nopolicy.test", false,
			[]string{`rescued_by="dkim d=fail.test s=sel"`}},
		{"policy lookup fails temporarily", fromMessage("news@down.test"), 0, 451, "4.7.24 SPF fail, and the DMARC policy of down.test could not be fetched now", "", false,
			[]string{"dmarc=temperror", "spf_fail_rescue=tempfail"}},
		{"aligned key lookup fails temporarily", dr.slow.Sign(t, fromMessage("news@fail.test")), 0, 451, "4.7.24", "", false, nil},
		{"no From field", strings.Replace(fromMessage("news@none.test"), "From: <news@none.test>\r\n", "", 1), 0, 550, "5.7.23", "", false,
			[]string{`header_from_problem="no From field"`}},
		{"two From fields", fromMessage("news@none.test", "From: <other@none.test>"), 0, 550, "5.7.23", "", false,
			[]string{`header_from_problem="several From fields"`}},
		{"a From with two addresses", strings.Replace(fromMessage("news@none.test"), "From: <news@none.test>", "From: <news@none.test>, <x@brand.test>", 1), 0, 550, "5.7.23", "", false,
			[]string{`header_from_problem="From names several addresses"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dr.draw.Store(int64(tc.draw))
			dr.log.Reset()
			mods, act := dr.run(t, tc.raw)
			if tc.code == 0 {
				if act.Type != milter.ActionAccept && act.Type != milter.ActionContinue {
					t.Fatalf("end of message: %s, want accept", act)
				}
				if ar := added(mods, "Authentication-Results"); !strings.Contains(ar, tc.ar) || !strings.Contains(ar, "spf=fail smtp.mailfrom=fail.test") {
					t.Errorf("Authentication-Results: %q, want %q", ar, tc.ar)
				}
			} else if act.Type != milter.ActionRejectWithCode || int(act.SMTPCode) != tc.code || !strings.Contains(act.SMTPReply, tc.reply) {
				t.Fatalf("end of message: %s, want %d %s", act, tc.code, tc.reply)
			}
			policy := "DMARC p=quarantine" // the record as published
			if strings.HasPrefix(tc.name, "pct=30") {
				policy = "DMARC p=reject pct=30"
			}
			if q := quarantined(mods); (q != "") != tc.quar || (tc.quar && !strings.Contains(added(mods, filter.QuarantineHeader), policy)) {
				t.Errorf("quarantine %q, header %q; want quarantined=%v", q, added(mods, filter.QuarantineHeader), tc.quar)
			}
			if !lineWith(dr.log.String(), append([]string{"msg=decision", "sender=bounces@fail.test"}, tc.line...)...) {
				t.Errorf("no decision line with %v:\n%s", tc.line, dr.log)
			}
		})
	}
}

// TestDMARCQuarantineAsHeader: dmarc_quarantine: header delivers with the
// header only, no quarantine action.
func TestDMARCQuarantineAsHeader(t *testing.T) {
	dr := newDMARCRig(t, func(c *config.Config) { c.DMARCQuarantine = "header" })
	mods, act := dr.run(t, fromMessage("news@quar.test"))
	if act.Type != milter.ActionAccept && act.Type != milter.ActionContinue {
		t.Fatalf("end: %s", act)
	}
	if q := quarantined(mods); q != "" {
		t.Errorf("quarantined (%q) with dmarc_quarantine: header", q)
	}
	if h := added(mods, filter.QuarantineHeader); !strings.Contains(h, "DMARC p=quarantine of quar.test") {
		t.Errorf("%s: %q", filter.QuarantineHeader, h)
	}
}

// TestDMARCDryRunNamesThePolicy: in dry-run the message is held all the
// same, and what the policy would do is noted, not done.
func TestDMARCDryRunNamesThePolicy(t *testing.T) {
	dr := newDMARCRig(t, func(c *config.Config) { c.DryRun = true })
	for _, tc := range []struct{ from, want string }{
		{"news@reject.test", "dry-run=would-reject (550 5.7.1 SPF fail, and no DKIM signature aligned with reject.test: its DMARC policy is reject)"},
		{"news@quar.test", "dry-run=would-quarantine (DMARC p=quarantine of quar.test: SPF fail and no aligned DKIM signature)"},
	} {
		mods, act := dr.run(t, fromMessage(tc.from))
		if act.Type != milter.ActionAccept && act.Type != milter.ActionContinue {
			t.Fatalf("%s: end %s, want accept in dry-run", tc.from, act)
		}
		if x := added(mods, filter.OurHeader); x != tc.want {
			t.Errorf("%s: X-Senderguard %q, want %q", tc.from, x, tc.want)
		}
		if q := quarantined(mods); q != "" {
			t.Errorf("%s: quarantined in dry-run", tc.from)
		}
	}
	if !lineWith(dr.log.String(), "outcome=dry-run", "decided_by=dmarc", "rcpt_outcomes=example.test:held_dry_run") {
		t.Errorf("decision line:\n%s", dr.log)
	}
}

// TestDKIMModeRecordsDMARCFacts: with spf_fail_rescue: dkim a held
// message is decided as before, and its line still says what DMARC
// found, for replay.
func TestDKIMModeRecordsDMARCFacts(t *testing.T) {
	dr := newDMARCRig(t, func(c *config.Config) { c.SPFFailRescue = "dkim" })
	mods, act := dr.run(t, dr.brand.Sign(t, fromMessage("news@brand.test")))
	if act.Type != milter.ActionRejectWithCode || !strings.Contains(act.SMTPReply, "5.7.23") {
		t.Fatalf("end: %s, want the SPF fail refused (dkim mode: the envelope domain did not sign)", act)
	}
	_ = mods
	if !lineWith(dr.log.String(), "header_from=brand.test", "dmarc=pass", `dmarc_policy="p=reject"`, "dkim=brand.test/b:pass") {
		t.Errorf("decision line:\n%s", dr.log)
	}
	if lineWith(dr.log.String(), "dmarc_disposition") {
		t.Errorf("a disposition in dkim mode:\n%s", dr.log)
	}
}

// TestReplayAnswersWhatDMARCWouldHaveDone: the decision lines of held
// messages logged under spf_fail_rescue: dkim, replayed under dmarc,
// give what dmarc decides live for the same messages; a line without
// the DMARC facts (an older senderguard's) is unreplayable, and says so.
func TestReplayAnswersWhatDMARCWouldHaveDone(t *testing.T) {
	live := newDMARCRig(t, nil)
	logged := newDMARCRigKeys(t, func(c *config.Config) { c.SPFFailRescue = "dkim" }, live)
	msgs := map[string]string{
		"brand signed":        live.brand.Sign(t, fromMessage("news@brand.test")),
		"reject unsigned":     fromMessage("news@reject.test"),
		"quarantine":          fromMessage("news@quar.test"),
		"none":                fromMessage("news@none.test"),
		"org sp=reject":       fromMessage("news@sub.org.test"),
		"no policy, unsigned": fromMessage("news@nopolicy.test"),
		"no policy, signed":   live.key.Sign(t, fromMessage("news@nopolicy.test")),
		"two From fields":     fromMessage("news@none.test", "From: <other@none.test>"),
		"policy down":         fromMessage("news@down.test"),
	}
	outcome := func(act *milter.Action) string {
		switch {
		case act.Type == milter.ActionAccept || act.Type == milter.ActionContinue:
			return "accept"
		case act.SMTPCode >= 500:
			return "reject"
		}
		return "tempfail"
	}
	cfg := config.Default()
	cfg.SPFFailRescue = "dmarc"
	rp := filter.NewReplayer(cfg)
	changed := 0
	for name, raw := range msgs {
		_, act := live.run(t, raw)
		want := outcome(act)
		logged.log.Reset()
		_, act = logged.run(t, raw)
		var line string
		for _, l := range strings.Split(logged.log.String(), "\n") {
			if strings.Contains(l, "msg=decision") {
				line = l
			}
		}
		d, err := filter.ParseDecision([]byte(line))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out, err := rp.Replay(d)
		if err != nil {
			t.Errorf("%s: unreplayable: %v\n%s", name, err, line)
			continue
		}
		if out.Old != outcome(act) || out.New != want {
			t.Errorf("%s: replay %s -> %s, want %s -> %s (live dmarc)\n%s", name, out.Old, out.New, outcome(act), want, line)
		}
		if out.Changed {
			changed++
		}
	}
	if changed < 3 {
		t.Errorf("only %d decisions changed by dmarc", changed)
	}
	old := `level=INFO msg=decision client_ip=192.0.2.10 helo=h.test sender=a@fail.test outcome=reject spf_mailfrom=fail rcpt_domains=a.test rcpt_outcomes=a.test:held spf_fail_rescue=refused`
	d, _ := filter.ParseDecision([]byte(old))
	if _, err := rp.Replay(d); err == nil || !strings.Contains(err.Error(), "lacks") {
		t.Errorf("an old line under dmarc: %v, want unreplayable", err)
	}
}

// TestDMARCLookupBoundedByTheBudget: a DMARC server that never answers
// costs end of message at most the stage budget, and the message is
// deferred, not refused.
func TestDMARCLookupBoundedByTheBudget(t *testing.T) {
	dr := newDMARCRig(t, nil)
	dr.dns.Drop("_dmarc.silent.test")
	s := dr.session("192.0.2.10")
	dr.want(s.Mail("bounces@fail.test", ""))
	dr.want(s.Rcpt("u@example.test", ""))
	start := time.Now()
	_, act := send(t, s, fromMessage("news@silent.test"))
	took := time.Since(start)
	if act.Type != milter.ActionRejectWithCode || act.SMTPCode != 451 || !strings.Contains(act.SMTPReply, "4.7.24") {
		t.Fatalf("end of message: %s, want 451 4.7.24", act)
	}
	// The rig's budget is 500ms: the lookup starts at the end of the
	// header section, end of message waits for what is left of it.
	if took > 1500*time.Millisecond {
		t.Errorf("the message took %v with a silent DMARC server; budget 500ms", took)
	}
}

// TestQuarantineNamesThePublishedPolicy: a message that pct= left to the
// milder policy is quarantined under the record as published, never
// under a "p=quarantine" its owner did not write.
func TestQuarantineNamesThePublishedPolicy(t *testing.T) {
	dr := newDMARCRig(t, nil)
	dr.draw.Store(30)
	mods, _ := dr.run(t, fromMessage("news@pct.test"))
	want := "DMARC p=reject pct=30 of pct.test: SPF fail and no aligned DKIM signature"
	if q, h := quarantined(mods), added(mods, filter.QuarantineHeader); q != want || h != want {
		t.Errorf("quarantine %q, header %q; want %q", q, h, want)
	}
}
