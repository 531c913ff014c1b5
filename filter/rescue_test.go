package filter_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/d--j/go-milter"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/checks/dkim"
	"github.com/senderguard/senderguard/checks/dmarc"
	"github.com/senderguard/senderguard/checks/resolver"
	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/config"
	"github.com/senderguard/senderguard/filter"
	"github.com/senderguard/senderguard/internal/testdkim"
)

// rescueRig serves a filter with DKIM verification; fail.test publishes
// "v=spf1 -all" (every client fails) and a key, so does other.test, and
// the key of slow.test cannot be fetched (SERVFAIL).
type rescueRig struct {
	*rig
	key, other, slow *testdkim.Key
}

func newRescueRig(t *testing.T, edit func(*config.Config)) *rescueRig {
	rr := &rescueRig{}
	rr.rig = newRigWith(t, "tcp", edit, func(d *filter.Deps) {
		d.DKIM = &dkim.Verifier{Resolver: d.SPF.Resolver} // the rig's DNS
	})
	return rr
}

func (rr *rescueRig) keys(t *testing.T) {
	rr.key = testdkim.NewEd25519(t, "fail.test", "sel")
	rr.other = testdkim.NewEd25519(t, "other.test", "o")
	rr.slow = testdkim.NewEd25519(t, "mail.fail.test", "s")
	if err := rr.dns.Add(rr.key.Record(), rr.other.Record(), rr.slow.Record()); err != nil {
		t.Fatal(err)
	}
	rr.dns.ServFail("s._domainkey.mail.fail.test")
}

// send delivers raw (CRLF) as Postfix hands a message to a milter: each
// header field, end of headers, the body; it returns the modifications
// and the end-of-message action.
func send(t testing.TB, s *milter.ClientSession, raw string) ([]milter.ModifyAction, *milter.Action) {
	t.Helper()
	if a, err := s.DataStart(); err != nil || a.Type != milter.ActionContinue {
		t.Fatalf("DATA: %v %v", a, err)
	}
	head, body, _ := strings.Cut(raw, "\r\n\r\n")
	lead := s.ProtocolOption(milter.OptHeaderLeadingSpace)
	// Folded lines stay in their field, joined by LF as Postfix sends them.
	head = strings.ReplaceAll(strings.ReplaceAll(head, "\r\n\t", "\n\t"), "\r\n ", "\n ")
	for _, field := range strings.Split(head, "\r\n") {
		name, value, _ := strings.Cut(field, ":")
		if !lead {
			value = strings.TrimPrefix(value, " ")
		}
		if a, err := s.HeaderField(name, value, nil); err != nil || a.Type != milter.ActionContinue {
			t.Fatalf("header %s: %v %v", name, a, err)
		}
	}
	if a, err := s.HeaderEnd(); err != nil || a.Type != milter.ActionContinue {
		t.Fatalf("EOH: %v %v", a, err)
	}
	mods, act, err := s.BodyReadFrom(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return mods, act
}

func added(mods []milter.ModifyAction, name string) string {
	for _, m := range mods {
		if m.Type == milter.ActionInsertHeader && m.HeaderName == name {
			return strings.TrimPrefix(m.HeaderValue, " ") // SMFIP_HDR_LEADSPC
		}
	}
	return ""
}

func TestSPFFailRescuedByAlignedDKIM(t *testing.T) {
	rr := newRescueRig(t, nil)
	rr.keys(t)
	msg := testdkim.Message("alice@fail.test", "u@example.test", "forwarded", "text of the forwarded message")
	for _, tc := range []struct {
		name, raw  string
		code       int // 0: accepted
		status     string
		rescuedBy  string
		failReason string
	}{
		{"aligned signature", rr.key.Sign(t, msg), 0, "", "rescued_by=\"dkim d=fail.test s=sel\"", ""},
		{"unsigned", msg, 550, "5.7.23", "", "rescue_failed=\"no DKIM signature\""},
		{"body altered after signing", strings.Replace(rr.key.Sign(t, msg), "text of", "text off", 1), 550, "5.7.23", "", "rescue_failed=\"d=fail.test s=sel: fail\""},
		{"signed by another domain", rr.other.Sign(t, msg), 550, "5.7.23", "", "rescue_failed=\"signature of another domain (d=other.test)\""},
		{"key lookup fails temporarily", rr.slow.Sign(t, msg), 451, "4.7.24", "", "spf_fail_rescue=tempfail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := rr.session("192.0.2.10")
			r := rr.rig
			if a, err := s.Mail("alice@fail.test", ""); err != nil || a.Type != milter.ActionContinue {
				t.Fatalf("MAIL: %v %v", a, err)
			}
			if a, err := s.Rcpt("u@example.test", ""); err != nil || a.Type != milter.ActionContinue {
				t.Fatalf("RCPT: %v %v, want continue: held, not refused", a, err)
			}
			mods, act := send(t, s, tc.raw)
			if tc.code == 0 {
				if act.Type != milter.ActionAccept && act.Type != milter.ActionContinue {
					t.Fatalf("end of message: %s, want accept", act)
				}
				ar := added(mods, "Authentication-Results")
				if !strings.Contains(ar, "spf=fail smtp.mailfrom=fail.test") || !strings.Contains(ar, "dkim=pass header.d=fail.test header.s=sel") {
					t.Errorf("Authentication-Results: %q", ar)
				}
				if rs := added(mods, "Received-SPF"); !strings.HasPrefix(rs, "fail ") {
					t.Errorf("Received-SPF: %q, want fail", rs)
				}
			} else if act.Type != milter.ActionRejectWithCode || int(act.SMTPCode) != tc.code || !strings.Contains(act.SMTPReply, tc.status) {
				t.Fatalf("end of message: %s, want %d %s", act, tc.code, tc.status)
			}
			want := tc.rescuedBy
			if want == "" {
				want = tc.failReason
			}
			if !lineWith(r.log.String(), "sender=alice@fail.test", want) {
				t.Errorf("no decision line with %s:\n%s", want, r.log)
			}
		})
	}
	// A message that needs no rescue is not read: its body is skipped.
	s := rr.session("192.0.2.10")
	rr.want(s.Mail("a@pass.test", ""))
	rr.want(s.Rcpt("u@example.test", ""))
	rr.want(s.DataStart())
	rr.want(s.HeaderEnd())
	if a, err := s.BodyChunk([]byte("first chunk\r\n")); err != nil || a.Type != milter.ActionContinue || !s.Skip() {
		t.Errorf("body of an SPF pass: %v %v skip=%v, want skip", a, err, s.Skip())
	}
}

// TestRescueNoneRefusesAtRcpt: spf_fail_rescue: none keeps the old
// behaviour, globally or for one recipient domain.
func TestRescueNoneRefusesAtRcpt(t *testing.T) {
	none := "none"
	rr := newRescueRig(t, func(c *config.Config) {
		c.RecipientDomains = []config.RecipientDomain{{Domains: []string{"strict.example"}, SPFFailRescue: &none}}
	})
	s := rr.session("192.0.2.10")
	rr.want(s.Mail("alice@fail.test", ""))
	a, err := s.Rcpt("u@strict.example", "")
	rr.reply(a, err, 550, "5.7.23")
	rr.want(s.Rcpt("u@other.example", "")) // global: held

	rr2 := newRescueRig(t, func(c *config.Config) { c.SPFFailRescue = "none" })
	s2 := rr2.session("192.0.2.10")
	rr2.want(s2.Mail("alice@fail.test", ""))
	a, err = s2.Rcpt("u@example.test", "")
	rr2.reply(a, err, 550, "5.7.23")
}

// TestHeldAndPlainRecipientsGoSeparately: postmaster must stay reachable
// and can never share a transaction with a held recipient, since the
// milter can only refuse the whole message at its end. The second one is
// told 452 4.5.3 and comes again alone.
func TestHeldAndPlainRecipientsGoSeparately(t *testing.T) {
	rr := newRescueRig(t, nil)
	rr.keys(t)
	s := rr.session("192.0.2.10")
	rr.want(s.Mail("alice@fail.test", ""))
	rr.want(s.Rcpt("u@example.test", ""))
	a, err := s.Rcpt("postmaster@example.test", "")
	rr.reply(a, err, 452, "4.5.3")
	_, act := send(t, s, testdkim.Message("alice@fail.test", "u@example.test", "unsigned", "x"))
	rr.reply(act, nil, 550, "5.7.23")

	// The client sends postmaster's copy in a transaction of its own.
	s2 := rr.session("192.0.2.10")
	rr.want(s2.Mail("alice@fail.test", ""))
	rr.want(s2.Rcpt("postmaster@example.test", ""))
	a, err = s2.Rcpt("u@example.test", "")
	rr.reply(a, err, 452, "4.5.3")
	if _, act := send(t, s2, testdkim.Message("alice@fail.test", "postmaster@example.test", "to postmaster", "x")); act.Type != milter.ActionAccept && act.Type != milter.ActionContinue {
		t.Errorf("postmaster's transaction: %s, want accepted", act)
	}
}

// TestTrustedForwarderIsNotRefused: an SPF fail from a trusted
// forwarder's network is accepted at once, and the line says why.
func TestTrustedForwarderIsNotRefused(t *testing.T) {
	rr := newRescueRig(t, func(c *config.Config) {
		p, err := config.ParsePrefix("192.0.2.0/28")
		if err != nil {
			t.Fatal(err)
		}
		c.TrustedForwarders.Networks = config.Networks{p}
	})
	s := rr.session("192.0.2.10")
	rr.want(s.Mail("alice@fail.test", ""))
	rr.want(s.Rcpt("u@example.test", ""))
	if _, act := send(t, s, testdkim.Message("alice@fail.test", "u@example.test", "via forwarder", "x")); act.Type != milter.ActionAccept && act.Type != milter.ActionContinue {
		t.Errorf("end: %s", act)
	}
	if !lineWith(rr.log.String(), "sender=alice@fail.test", "spf_mailfrom=fail", `spf_fail_accepted="trusted forwarder (network)"`, "outcome=accept") {
		t.Errorf("decision line:\n%s", rr.log)
	}
}

// BenchmarkRescue is the cost of the forwarded-mail rescue: a whole
// conversation (connect to end of message, 4 KiB body, DNS from a warm
// cache) for an SPF pass (body skipped), an SPF fail rescued by a valid
// signature, and an unsigned SPF fail refused at end of message.
func BenchmarkRescue(b *testing.B) {
	rr := &rescueRig{}
	dmarcMode := "dmarc"
	rr.rig = newRigWith(b, "tcp", func(c *config.Config) {
		// brand.example's recipients judge SPF fails by DMARC.
		c.RecipientDomains = []config.RecipientDomain{{Name: "dmarc", Domains: []string{"brand.example"}, SPFFailRescue: &dmarcMode}}
	}, func(d *filter.Deps) {
		q, err := resolver.NewCached(d.SPF.Resolver, resolver.CacheConfig{}, nil, cache.Hooks{})
		if err != nil {
			b.Fatal(err)
		}
		d.SPF = &spf.Checker{Resolver: q, Receiver: "mx.test"}
		d.DKIM = &dkim.Verifier{Resolver: q}
		d.DMARC = &dmarc.Finder{Resolver: q}
		d.Log = slog.New(slog.DiscardHandler)
	})
	rr.key = testdkim.NewEd25519(b, "fail.test", "sel")
	rsaKey := testdkim.NewRSA(b, "fail.test", "rsa")
	brand := testdkim.NewEd25519(b, "brand.test", "b")
	if err := rr.dns.Add(rr.key.Record(), rsaKey.Record(), brand.Record(),
		`_dmarc.brand.test. 300 IN TXT "v=DMARC1; p=reject"`, `_dmarc.fail.test. 300 IN TXT "v=DMARC1; p=reject"`); err != nil {
		b.Fatal(err)
	}
	body := strings.Repeat("a line of a forwarded message, 64 bytes long, or close to it..\n", 64)
	for _, bc := range []struct {
		name, sender, raw string
		code              int
	}{
		{"spf-pass", "a@pass.test", testdkim.Message("a@pass.test", "u@example.test", "bench", body), 0},
		{"fail-rescued-ed25519", "a@fail.test", rr.key.Sign(b, testdkim.Message("a@fail.test", "u@example.test", "bench", body)), 0},
		{"fail-rescued-rsa2048", "a@fail.test", rsaKey.Sign(b, testdkim.Message("a@fail.test", "u@example.test", "bench", body)), 0},
		{"fail-refused-unsigned", "a@fail.test", testdkim.Message("a@fail.test", "u@example.test", "bench", body), 550},
		// spf_fail_rescue: dmarc (the recipient's policy): the From
		// domain's policy decides.
		{"dmarc-pass-from-signed", "a@fail.test", brand.Sign(b, testdkim.Message("news@brand.test", "u@brand.example", "bench", body)), 0},
		{"dmarc-reject-unsigned", "a@fail.test", testdkim.Message("news@brand.test", "u@brand.example", "bench", body), 550},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s, err := rr.client.Session(milter.NewMacroBag())
				if err != nil {
					b.Fatal(err)
				}
				s.Conn("client.test", milter.FamilyInet, 25025, "192.0.2.10")
				s.Helo("client.test")
				s.Mail(bc.sender, "")
				rcpt := "u@example.test"
				if strings.HasPrefix(bc.name, "dmarc") {
					rcpt = "u@brand.example"
				}
				s.Rcpt(rcpt, "")
				_, act := send(b, s, bc.raw)
				if (bc.code == 0) != (act.Type == milter.ActionAccept || act.Type == milter.ActionContinue) {
					b.Fatalf("%s: %s", bc.name, act)
				}
				s.Close()
			}
		})
	}
}
