package callout_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/checks/resolver"
	"github.com/senderguard/senderguard/internal/testdns"
	"github.com/senderguard/senderguard/internal/testsmtp"
)

// env is one probing scenario: a DNS zone and SMTP servers on 127.0.0.x,
// all on one port (the prober, like a real MTA, uses one port).
type env struct {
	t    *testing.T
	dns  *testdns.Server
	port int
	// tune, when set, adjusts every prober the env builds.
	tune func(*callout.Prober)
}

func newEnv(t *testing.T, zone ...string) *env {
	return &env{t: t, dns: testdns.Start(t, zone...)}
}

func (e *env) smtp(ip string, configure func(*testsmtp.Server)) *testsmtp.Server {
	s := testsmtp.Start(e.t, ip, e.port, configure)
	e.port = s.Port()
	return s
}

func (e *env) prober() *callout.Prober {
	q := &resolver.Stub{Servers: []string{e.dns.Addr}, Timeout: time.Second, Attempts: 1}
	p := &callout.Prober{Resolver: q, Port: e.port, Helo: "probe.example.test", AllowPrivate: true, StepTimeout: time.Second}
	if e.tune != nil {
		e.tune(p)
	}
	return p
}

func (e *env) probe(addr string) *callout.Result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return e.prober().Probe(ctx, addr)
}

func TestProbeClassifications(t *testing.T) {
	e := newEnv(t,
		"a.test. 60 IN MX 10 mx.a.test.", "mx.a.test. 60 IN A 127.0.0.21",
		"catchall.test. 60 IN MX 10 mx.catchall.test.", "mx.catchall.test. 60 IN A 127.0.0.22",
		"nullmx.test. 60 IN MX 0 .",
		"implicit.test. 60 IN A 127.0.0.21",
		"nohost.test. 60 IN TXT \"no mail here\"",
		"old.test. 60 IN MX 10 mx.old.test.", "mx.old.test. 60 IN A 127.0.0.23",
	)
	srv := e.smtp("127.0.0.21", func(s *testsmtp.Server) { s.Users = map[string]bool{"alice@a.test": true, "bob@implicit.test": true} })
	e.smtp("127.0.0.22", nil)                              // accepts everyone
	old := e.smtp("127.0.0.23", func(s *testsmtp.Server) { // knows only HELO
		s.Reply = func(_ *testsmtp.Server, cmd string) string {
			if strings.HasPrefix(cmd, "EHLO") {
				return "502 5.5.2 Command not recognized"
			}
			return ""
		}
	})
	tests := []struct {
		addr     string
		catchAll bool
		want     callout.Class
		evidence string
	}{
		{"alice@a.test", false, callout.Exists, "mx.a.test: rcpt: 250 2.1.5 Ok"},
		{"nobody@a.test", false, callout.NotExists, "mx.a.test: rcpt: 550 5.1.1 <nobody@a.test>: Recipient address rejected: User unknown"},
		{"bob@implicit.test", false, callout.Exists, "implicit.test: rcpt: 250 2.1.5 Ok"},
		{"anyone@catchall.test", true, callout.CatchAll, "mx.catchall.test: rcpt: 250 2.1.5 Ok"},
		{"anyone@catchall.test", false, callout.Exists, "mx.catchall.test: rcpt: 250 2.1.5 Ok"},
		{"x@nullmx.test", false, callout.NullMX, "nullmx.test publishes a null MX"},
		{"x@nohost.test", false, callout.NoMailHost, "no address for any mail host of nohost.test"},
		{"x@nxdomain.test", false, callout.NoMailHost, "nxdomain.test does not exist"},
		{"x@old.test", false, callout.Exists, "mx.old.test: rcpt: 250 2.1.5 Ok"},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			p := e.prober()
			p.CatchAllTest = tc.catchAll
			r := p.Probe(context.Background(), tc.addr)
			if r.Class != tc.want || r.Evidence() != tc.evidence {
				t.Errorf("got %s %q, want %s %q", r.Class, r.Evidence(), tc.want, tc.evidence)
			}
		})
	}
	if got := old.Commands(); len(got) < 2 || got[1] != "HELO probe.example.test" {
		t.Errorf("no HELO fallback after a refused EHLO: %q", got)
	}
	// The dialogue: EHLO with our name, MAIL FROM:<>, RCPT, QUIT.
	cmds := srv.Commands()
	if len(cmds) < 4 || cmds[0] != "EHLO probe.example.test" || cmds[1] != "MAIL FROM:<>" || cmds[2] != "RCPT TO:<alice@a.test>" || cmds[3] != "QUIT" {
		t.Errorf("dialogue: %q", cmds)
	}
}

func TestProbeAwkwardServers(t *testing.T) {
	e := newEnv(t,
		"grey.test. 60 IN MX 10 mx.grey.test.", "mx.grey.test. 60 IN A 127.0.0.31",
		"busy.test. 60 IN MX 10 mx1.busy.test.", "busy.test. 60 IN MX 20 mx2.busy.test.",
		"mx1.busy.test. 60 IN A 127.0.0.32", "mx2.busy.test. 60 IN A 127.0.0.33",
		"dead.test. 60 IN MX 10 mx1.dead.test.", "dead.test. 60 IN MX 20 mx2.dead.test.",
		"mx1.dead.test. 60 IN A 127.0.0.34", "mx2.dead.test. 60 IN A 127.0.0.33",
		"drop.test. 60 IN MX 10 mx.drop.test.", "mx.drop.test. 60 IN A 127.0.0.35",
		"endless.test. 60 IN MX 10 mx.endless.test.", "mx.endless.test. 60 IN A 127.0.0.36",
		"huge.test. 60 IN MX 10 mx.huge.test.", "mx.huge.test. 60 IN A 127.0.0.37",
		"nonull.test. 60 IN MX 10 mx.nonull.test.", "mx.nonull.test. 60 IN A 127.0.0.38",
		"blocked.test. 60 IN MX 10 mx.blocked.test.", "mx.blocked.test. 60 IN A 127.0.0.39",
		"refuse.test. 60 IN MX 10 mx.refuse.test.", "mx.refuse.test. 60 IN A 127.0.0.40",
	)
	e.smtp("127.0.0.31", func(s *testsmtp.Server) {
		s.Reply = func(_ *testsmtp.Server, cmd string) string {
			if strings.HasPrefix(cmd, "RCPT") {
				return "450 4.7.1 Greylisted, try again later"
			}
			return ""
		}
	})
	e.smtp("127.0.0.32", func(s *testsmtp.Server) { s.Banner = "421 4.3.2 Too busy" })
	second := e.smtp("127.0.0.33", nil)
	// 127.0.0.34: nothing listens (first MX of dead.test).
	e.smtp("127.0.0.35", func(s *testsmtp.Server) {
		s.Reply = func(_ *testsmtp.Server, cmd string) string {
			if strings.HasPrefix(cmd, "MAIL") {
				return "DROP"
			}
			return ""
		}
	})
	e.smtp("127.0.0.36", func(s *testsmtp.Server) {
		s.Reply = func(_ *testsmtp.Server, cmd string) string {
			if strings.HasPrefix(cmd, "EHLO") {
				return strings.Repeat("250-more\n", 5000) + "250 end"
			}
			return ""
		}
	})
	e.smtp("127.0.0.37", func(s *testsmtp.Server) { s.RawBanner = "220 " + strings.Repeat("x", 1<<20) + "\r\n" })
	e.smtp("127.0.0.38", func(s *testsmtp.Server) {
		s.Reply = func(_ *testsmtp.Server, cmd string) string {
			if strings.HasPrefix(cmd, "MAIL") {
				return "550 5.7.1 Null sender not accepted"
			}
			return ""
		}
	})
	e.smtp("127.0.0.39", func(s *testsmtp.Server) {
		s.Reply = func(_ *testsmtp.Server, cmd string) string {
			if strings.HasPrefix(cmd, "RCPT") {
				return "550 5.7.1 Service unavailable; client host [192.0.2.1] blocked using zen.spamhaus.org"
			}
			return ""
		}
	})
	e.smtp("127.0.0.40", func(s *testsmtp.Server) { s.Banner = "554 5.7.1 You are not welcome here" })

	tests := []struct {
		addr    string
		want    callout.Class
		refused bool
		check   func(*callout.Result) string
	}{
		{"u@grey.test", callout.Unknown, false, func(r *callout.Result) string {
			if r.Reply == nil || r.Reply.Code != 450 {
				return "want the 450 as evidence"
			}
			return ""
		}},
		{"u@busy.test", callout.Exists, false, func(r *callout.Result) string {
			if r.Host != "mx2.busy.test" {
				return "want the second MX after a 421 banner"
			}
			return ""
		}},
		{"u@dead.test", callout.Exists, false, func(r *callout.Result) string {
			if r.Host != "mx2.dead.test" {
				return "want the second MX after a refused connection"
			}
			return ""
		}},
		{"u@drop.test", callout.Unknown, false, func(r *callout.Result) string {
			if r.Step != "mail" || r.Err == nil {
				return "want an error at the mail step"
			}
			return ""
		}},
		{"u@endless.test", callout.Unknown, false, func(r *callout.Result) string {
			if r.Err == nil || !strings.Contains(r.Err.Error(), "too many lines") {
				return "want too many lines"
			}
			return ""
		}},
		{"u@huge.test", callout.Unknown, false, func(r *callout.Result) string {
			if r.Err == nil || !strings.Contains(r.Err.Error(), "line too long") {
				return "want line too long"
			}
			return ""
		}},
		{"u@nonull.test", callout.Unknown, true, nil},
		{"u@blocked.test", callout.Unknown, true, nil},
		{"u@refuse.test", callout.Unknown, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			start := time.Now()
			r := e.probe(tc.addr)
			if r.Class != tc.want || r.Refused() != tc.refused {
				t.Fatalf("got %s refused=%v (%s), want %s refused=%v", r.Class, r.Refused(), r.Evidence(), tc.want, tc.refused)
			}
			if tc.check != nil {
				if msg := tc.check(r); msg != "" {
					t.Errorf("%s: %s", msg, r.Evidence())
				}
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("probe took %v", d)
			}
		})
	}
	if second.Count("RCPT") != 2 {
		t.Errorf("second MX saw %d RCPT, want 2", second.Count("RCPT"))
	}
}

func TestProbeTarpitBoundedByBudget(t *testing.T) {
	e := newEnv(t, "slow.test. 60 IN MX 10 mx.slow.test.", "mx.slow.test. 60 IN A 127.0.0.41")
	e.smtp("127.0.0.41", func(s *testsmtp.Server) { s.BannerDelay = 20 * time.Second })
	p := e.prober()
	p.StepTimeout = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	r := p.Probe(ctx, "u@slow.test")
	if d := time.Since(start); r.Class != callout.Unknown || d > 1500*time.Millisecond {
		t.Fatalf("got %s after %v (%s), want unknown within the 500ms budget", r.Class, d, r.Evidence())
	}
}

func TestPrivateAddressesNeverProbed(t *testing.T) {
	e := newEnv(t, "inside.test. 60 IN MX 10 mx.inside.test.", "mx.inside.test. 60 IN A 127.0.0.42")
	srv := e.smtp("127.0.0.42", nil)
	p := e.prober()
	p.AllowPrivate = false
	r := p.Probe(context.Background(), "u@inside.test")
	if r.Class != callout.Unknown || srv.Conns() != 0 {
		t.Fatalf("got %s with %d connections, want unknown and none", r.Class, srv.Conns())
	}
	if !strings.Contains(r.Evidence(), "non-public") {
		t.Errorf("evidence: %s", r.Evidence())
	}
}

func TestHostileSendersNeverReachTheServer(t *testing.T) {
	e := newEnv(t, "a.test. 60 IN MX 10 mx.a.test.", "mx.a.test. 60 IN A 127.0.0.43")
	srv := e.smtp("127.0.0.43", nil)
	for _, addr := range []string{
		"a@a.test>\r\nRCPT TO:<victim@elsewhere.test",
		"a\r\n@a.test",
		"a@a.test\nQUIT",
		"a\x00b@a.test",
		"a\x7f@a.test",
		"\"a\r\nb\"@a.test",
		"a b@a.test",
		"a@[127.0.0.1]",
		"a@a.test\r",
		strings.Repeat("l", 65) + "@a.test",
		"a@" + strings.Repeat("d.", 130) + "test",
		"@a.test",
		"a@",
		"a..b@a.test",
	} {
		r := e.probe(addr)
		if r.Class != callout.Unknown || !errors.Is(r.Err, callout.ErrBadAddress) {
			t.Errorf("%q: got %s (%v), want unknown with a bad-address error", addr, r.Class, r.Err)
		}
	}
	if srv.Conns() != 0 || srv.Bytes() != 0 {
		t.Errorf("server saw %d connections and %d bytes, want none", srv.Conns(), srv.Bytes())
	}
}

func TestUTF8LocalPartNeedsSMTPUTF8(t *testing.T) {
	e := newEnv(t, "a.test. 60 IN MX 10 mx.a.test.", "mx.a.test. 60 IN A 127.0.0.44",
		"b.test. 60 IN MX 10 mx.b.test.", "mx.b.test. 60 IN A 127.0.0.45",
		"xn--bcher-kva.test. 60 IN MX 10 mx.a.test.")
	withUTF8 := e.smtp("127.0.0.44", nil)
	e.smtp("127.0.0.45", func(s *testsmtp.Server) {
		s.Reply = func(_ *testsmtp.Server, cmd string) string {
			if strings.HasPrefix(cmd, "EHLO") {
				return "250-test\n250 8BITMIME"
			}
			return ""
		}
	})
	if r := e.probe("jösé@a.test"); r.Class != callout.Exists {
		t.Errorf("server with SMTPUTF8: %s %s", r.Class, r.Evidence())
	}
	if got := withUTF8.Commands()[1]; got != "MAIL FROM:<> SMTPUTF8" {
		t.Errorf("MAIL command %q", got)
	}
	if r := e.probe("jösé@b.test"); r.Class != callout.Unknown || !strings.Contains(r.Evidence(), "SMTPUTF8") {
		t.Errorf("server without SMTPUTF8: %s %s", r.Class, r.Evidence())
	}
	// An internationalized domain is probed by its A-label.
	if r := e.probe("u@bücher.test"); r.Class != callout.Exists {
		t.Errorf("IDN: %s %s", r.Class, r.Evidence())
	}
	if got := withUTF8.Commands(); !strings.Contains(fmt.Sprint(got), "RCPT TO:<u@xn--bcher-kva.test>") {
		t.Errorf("IDN RCPT not by A-label: %q", got)
	}
}

func TestProbeBoundsAttemptsPerDomain(t *testing.T) {
	zone := []string{}
	for i := 0; i < 10; i++ {
		zone = append(zone, fmt.Sprintf("many.test. 60 IN MX %d mx%d.many.test.", i, i), fmt.Sprintf("mx%d.many.test. 60 IN A 127.0.0.%d", i, 70+i))
	}
	e := newEnv(t, zone...)
	var servers []*testsmtp.Server
	for i := 0; i < 10; i++ {
		servers = append(servers, e.smtp(fmt.Sprintf("127.0.0.%d", 70+i), func(s *testsmtp.Server) { s.Banner = "421 4.3.2 busy" }))
	}
	if r := e.probe("u@many.test"); r.Class != callout.Unknown {
		t.Fatalf("got %s", r.Class)
	}
	conns := 0
	for _, s := range servers {
		conns += s.Conns()
	}
	if conns != 5 {
		t.Errorf("%d connections for one probe, want 5", conns)
	}
}
