package callout_test

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/internal/testsmtp"
)

// TestProbesLeaveFromTheSourceAddress: with SourceIPv4 set, the probed
// server sees the connection come from it; without, from the kernel's
// choice (127.0.0.1 on loopback).
func TestProbesLeaveFromTheSourceAddress(t *testing.T) {
	e := newEnv(t, "a.test. 60 IN MX 10 mx.a.test.", "mx.a.test. 60 IN A 127.0.0.21")
	srv := e.smtp("127.0.0.21", nil)
	var noted []netip.Addr
	var mu sync.Mutex
	for _, src := range []string{"127.0.0.77", "127.0.0.78", ""} {
		e.tune = func(p *callout.Prober) {
			p.SourceIPv4, _ = netip.ParseAddr(src)
			p.SourceIPv6 = netip.MustParseAddr("::1") // another family: not used for an IPv4 host
			p.OnConnect = func(a netip.Addr) { mu.Lock(); noted = append(noted, a); mu.Unlock() }
		}
		if r := e.probe("alice@a.test"); r.Class != callout.Exists {
			t.Fatalf("source %q: %s (%s)", src, r.Class, r.Evidence())
		}
	}
	var got []string
	for _, p := range srv.Peers() {
		ap := netip.MustParseAddrPort(p)
		got = append(got, ap.Addr().String())
	}
	want := []string{"127.0.0.77", "127.0.0.78", "127.0.0.1"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("server saw connections from %v, want %v", got, want)
	}
	if len(noted) != 3 || noted[0].String() != "127.0.0.77" || noted[2].String() != "127.0.0.1" {
		t.Errorf("OnConnect saw %v", noted)
	}
}

func TestMatchHost(t *testing.T) {
	pats := []string{"*.mail.protection.outlook.com", "mx.exact.test"}
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"contoso-com.mail.protection.outlook.com", true},
		{"Contoso-COM.Mail.Protection.Outlook.com.", true},
		{"a.b.mail.protection.outlook.com", true},
		{"mail.protection.outlook.com", false}, // *. means below, not the name itself
		{"evilmail.protection.outlook.com", false},
		{"mx.exact.test", true},
		{"mx2.exact.test", false},
	} {
		if _, got := callout.MatchHost(pats, tc.host); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.host, got, tc.want)
		}
	}
}

// TestSkipMXHostsMakeNoConnection: a domain whose MX matches a skip
// pattern is not probed (its own rule); others are; an implicit MX is
// matched by the domain's own name.
func TestSkipMXHostsMakeNoConnection(t *testing.T) {
	e := newEnv(t,
		"hosted.test. 60 IN MX 10 hosted-test.mail.protection.example.",
		"hosted-test.mail.protection.example. 60 IN A 127.0.0.31",
		"mixed.test. 60 IN MX 10 mx.mixed.test.", "mixed.test. 60 IN MX 20 backup.mail.protection.example.",
		"mx.mixed.test. 60 IN A 127.0.0.31", "backup.mail.protection.example. 60 IN A 127.0.0.31",
		"own.test. 60 IN MX 10 mx.own.test.", "mx.own.test. 60 IN A 127.0.0.31",
		"implicit.mail.protection.example. 60 IN A 127.0.0.31",
	)
	srv := e.smtp("127.0.0.31", nil)
	e.tune = func(p *callout.Prober) { p.SkipMXHosts = []string{"*.mail.protection.example"} }
	for _, addr := range []string{"a@hosted.test", "a@mixed.test", "a@implicit.mail.protection.example"} {
		r := e.probe(addr)
		if r.Class != callout.Unknown || r.RuleName() != callout.RuleSkipMXHost {
			t.Errorf("%s: %s rule %s (%s), want unknown by %s", addr, r.Class, r.RuleName(), r.Evidence(), callout.RuleSkipMXHost)
		}
	}
	if n := srv.Conns(); n != 0 {
		t.Fatalf("%d connections to skipped hosts", n)
	}
	if r := e.probe("a@own.test"); r.Class != callout.Exists || srv.Conns() != 1 {
		t.Errorf("own.test: %s, %d connections", r.Class, srv.Conns())
	}
}

// TestAmbiguousRefusalAsksPostmaster: Exim's and OpenSMTPD's wordings of
// an unknown user become not-exists only when postmaster@ is accepted in
// the same session; a clear reply asks nothing more.
func TestAmbiguousRefusalAsksPostmaster(t *testing.T) {
	e := newEnv(t, "served.test. 60 IN MX 10 mx.served.test.", "mx.served.test. 60 IN A 127.0.0.32",
		"relay.test. 60 IN MX 10 mx.relay.test.", "mx.relay.test. 60 IN A 127.0.0.33")
	// served.test: postmaster exists, the refusal's words vary by local part.
	served := e.smtp("127.0.0.32", func(s *testsmtp.Server) {
		s.Users = map[string]bool{}
		s.Reply = func(_ *testsmtp.Server, cmd string) string {
			switch strings.ToLower(cmd) {
			case "rcpt to:<postmaster@served.test>":
				return "250 Accepted"
			case "rcpt to:<exim@served.test>":
				return "550 Unrouteable address"
			case "rcpt to:<osmtpd@served.test>":
				return "550 Invalid recipient: <osmtpd@served.test>"
			case "rcpt to:<expand@served.test>":
				return "524 5.2.4 Mailing list expansion problem: <expand@served.test>"
			case "rcpt to:<unclear@served.test>":
				return "550 Requested action not taken: mailbox unavailable"
			}
			return ""
		}
	})
	// relay.test's host does not serve it: postmaster is refused too.
	relay := e.smtp("127.0.0.33", func(s *testsmtp.Server) {
		s.Reply = func(_ *testsmtp.Server, cmd string) string {
			if strings.HasPrefix(strings.ToUpper(cmd), "RCPT TO:") {
				return "550 Unrouteable address"
			}
			return ""
		}
	})
	tests := []struct {
		addr     string
		class    callout.Class
		rule     string
		askedPM  bool
		srv      *testsmtp.Server
		evidence string
	}{
		{"exim@served.test", callout.NotExists, "exim-unrouteable-postmaster-ok", true, served, "(postmaster: 250 Accepted)"},
		{"osmtpd@served.test", callout.NotExists, "opensmtpd-invalid-recipient-postmaster-ok", true, served, ""},
		{"expand@served.test", callout.NotExists, "opensmtpd-expansion-problem-postmaster-ok", true, served, ""},
		{"unclear@served.test", callout.Unknown, "5xx-unclear", false, served, ""},
		{"nobody@served.test", callout.NotExists, "x.1.1-no-mailbox", false, served, ""},
		{"a@relay.test", callout.Unknown, "exim-unrouteable", true, relay, "(postmaster: 550 Unrouteable address)"},
		{"postmaster@relay.test", callout.Unknown, "exim-unrouteable", false, relay, ""},
	}
	for _, tc := range tests {
		before := tc.srv.Count("RCPT TO:<postmaster@")
		r := e.probe(tc.addr)
		if r.Class != tc.class || r.RuleName() != tc.rule {
			t.Errorf("%s: %s by %s (%s), want %s by %s", tc.addr, r.Class, r.RuleName(), r.Evidence(), tc.class, tc.rule)
		}
		asked := tc.srv.Count("RCPT TO:<postmaster@") - before
		if tc.addr == "postmaster@relay.test" {
			asked-- // the address itself
		}
		if (asked == 1) != tc.askedPM || asked > 1 {
			t.Errorf("%s: asked postmaster %d times, want asked=%v", tc.addr, asked, tc.askedPM)
		}
		if tc.askedPM != (r.Postmaster != nil) {
			t.Errorf("%s: Postmaster reply %v", tc.addr, r.Postmaster)
		}
		if tc.evidence != "" && !strings.Contains(r.Evidence(), tc.evidence) {
			t.Errorf("%s: evidence %q lacks %q", tc.addr, r.Evidence(), tc.evidence)
		}
	}
}

type pauser struct {
	mu     sync.Mutex
	paused bool
}

func (p *pauser) set(b bool) { p.mu.Lock(); p.paused = b; p.mu.Unlock() }
func (p *pauser) Paused() (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return "127.0.0.1 listed on bl.test", p.paused
}

// TestPausedVerifierMakesNoConnection: while paused, a never-seen sender
// gets unknown by paused-listed, no connection, nothing cached; cached
// answers still serve; after the pause, probes resume.
func TestPausedVerifierMakesNoConnection(t *testing.T) {
	e := newEnv(t, "a.test. 60 IN MX 10 mx.a.test.", "mx.a.test. 60 IN A 127.0.0.34")
	srv := e.smtp("127.0.0.34", func(s *testsmtp.Server) { s.Users = map[string]bool{"alice@a.test": true, "bob@a.test": true} })
	pause := &pauser{}
	e.tune = func(p *callout.Prober) { p.Pause = pause }
	var mu sync.Mutex
	rules, skips, probes := map[string]int{}, map[string]int{}, 0
	v := e.verifier(callout.VerifierConfig{}, callout.Hooks{
		Rule:  func(r string) { mu.Lock(); rules[r]++; mu.Unlock() },
		Skip:  func(r string) { mu.Lock(); skips[r]++; mu.Unlock() },
		Probe: func(callout.Class, time.Duration) { mu.Lock(); probes++; mu.Unlock() },
	})
	ctx := t.Context()
	if r := v.Verify(ctx, "alice@a.test"); r.Class != callout.Exists {
		t.Fatalf("before the pause: %s", r.Class)
	}
	pause.set(true)
	r := v.Verify(ctx, "bob@a.test")
	if r.Class != callout.Unknown || r.RuleName() != callout.RulePausedListed || !strings.Contains(r.Evidence(), "listed on bl.test") {
		t.Errorf("paused: %s by %s (%s)", r.Class, r.RuleName(), r.Evidence())
	}
	if r := v.Verify(ctx, "alice@a.test"); r.Class != callout.Exists || !r.Cached {
		t.Errorf("paused, cached: %s cached=%v", r.Class, r.Cached)
	}
	if n := srv.Conns(); n != 1 {
		t.Errorf("%d connections, want 1 (none while paused)", n)
	}
	mu.Lock()
	if rules[callout.RulePausedListed] != 1 || skips["paused_listed"] != 1 || probes != 1 {
		t.Errorf("rules %v skips %v probes %d", rules, skips, probes)
	}
	mu.Unlock()
	pause.set(false)
	if r := v.Verify(ctx, "bob@a.test"); r.Class != callout.Exists || r.Cached {
		t.Errorf("after the pause: %s cached=%v (the paused answer must not be cached)", r.Class, r.Cached)
	}
	if n := srv.Conns(); n != 2 {
		t.Errorf("%d connections after the pause, want 2", n)
	}
}
