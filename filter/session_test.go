package filter_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/checks/resolver"
	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/config"
	"github.com/senderguard/senderguard/filter"
	"github.com/senderguard/senderguard/internal/testdns"
)

var zone = []string{
	`pass.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"`,
	`fail.test. 300 IN TXT "v=spf1 -all"`,
	`client.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
	`soft.test. 300 IN TXT "v=spf1 ~all"`,
	`open.test. 300 IN TXT "v=spf1 +all"`,
	`open4.test. 300 IN TXT "v=spf1 ip4:0.0.0.0/0 -all"`,
	`openinc.test. 300 IN TXT "v=spf1 include:open.test -all"`,
}

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }
func (l *logBuf) Reset()                      { l.mu.Lock(); defer l.mu.Unlock(); l.b.Reset() }

type rig struct {
	t      testing.TB
	addr   string
	dns    *testdns.Server
	log    *logBuf
	srv    *filter.Server
	f      *filter.Filter
	client *milter.Client
}

// newRig serves a filter on network ("tcp" or "unix") and returns a
// go-milter client for it, playing the MTA (milter protocol 6).
func newRig(t testing.TB, network string, edit func(*config.Config)) *rig {
	return newRigWith(t, network, edit, nil)
}

// newRigWith also lets the test set dependencies (a callout verifier).
func newRigWith(t testing.TB, network string, edit func(*config.Config), deps func(*filter.Deps)) *rig {
	r := &rig{t: t, dns: testdns.Start(t, zone...), log: &logBuf{}}
	cfg := config.Default()
	cfg.Hostname = "mx.test"
	cfg.StageBudget = config.Duration(500 * time.Millisecond)
	cfg.Callout.Enabled = false
	if edit != nil {
		edit(cfg)
	}
	q := &resolver.Stub{Servers: []string{r.dns.Addr}, Timeout: 5 * time.Second, Attempts: 1}
	d := filter.Deps{SPF: &spf.Checker{Resolver: q, Receiver: "mx.test"}, Log: slog.New(slog.NewTextHandler(r.log, nil))}
	if deps != nil {
		deps(&d)
	}
	r.f = filter.New(cfg, d)
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "milter.sock")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.srv = filter.NewServer(r.f, filter.ServerOptions{})
	done := make(chan error, 1)
	go func() { done <- r.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r.srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	r.client = newClient(network, r.addr)
	return r
}

// newClient plays the MTA: protocol 6, the actions Postfix allows, the
// queue ID at end of headers as Postfix sends it.
func newClient(network, addr string) *milter.Client {
	return milter.NewClient(network, addr,
		milter.WithActions(milter.OptAddHeader|milter.OptChangeHeader|milter.OptQuarantine),
		milter.WithReadTimeout(5*time.Second), milter.WithWriteTimeout(5*time.Second),
		milter.WithMacroRequest(milter.StageEOH, []string{"i"}))
}

func (r *rig) listenAddr() string { return r.addr }

// open starts a milter session whose macros the test may set.
func (r *rig) open() (*milter.ClientSession, *milter.MacroBag) {
	r.t.Helper()
	macros := milter.NewMacroBag()
	macros.Set("j", "mx.test")
	macros.Set("{daemon_name}", "smtpd")
	s, err := r.client.Session(macros)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { s.Close() })
	return s, macros
}

func (r *rig) session(ip string) *milter.ClientSession {
	s, _ := r.sessionMacros(ip)
	return s
}

func (r *rig) sessionMacros(ip string) (*milter.ClientSession, *milter.MacroBag) {
	r.t.Helper()
	s, macros := r.open()
	fam := milter.FamilyInet
	if strings.Contains(ip, ":") {
		fam = milter.FamilyInet6
	}
	r.want(s.Conn("client.test", fam, 25025, ip))
	r.want(s.Helo("client.test"))
	return s, macros
}

func (r *rig) must(err error) {
	r.t.Helper()
	if err != nil {
		r.t.Fatal(err)
	}
}

// want checks for continue (accept at end of message).
func (r *rig) want(a *milter.Action, err error) {
	r.t.Helper()
	if err != nil {
		r.t.Fatal(err)
	}
	if a.Type != milter.ActionContinue && a.Type != milter.ActionAccept {
		r.t.Fatalf("got %s, want continue", a)
	}
}

// end sends what is left of a message after its recipients: DATA, end of
// headers, a body line, end of message.
func (r *rig) end(s *milter.ClientSession) ([]milter.ModifyAction, *milter.Action, error) {
	r.t.Helper()
	r.want(s.DataStart())
	r.want(s.HeaderEnd())
	return s.BodyReadFrom(strings.NewReader("body\r\n"))
}

// reply checks for a custom reply.
func (r *rig) reply(a *milter.Action, err error, code int, prefix string) {
	r.t.Helper()
	if err != nil {
		r.t.Fatal(err)
	}
	if a.Type != milter.ActionRejectWithCode || int(a.SMTPCode) != code || !strings.HasPrefix(a.SMTPReply, strconv.Itoa(code)+" "+prefix) {
		r.t.Fatalf("got %s, want %d %q...", a, code, prefix)
	}
}

func TestSessionCleanMessageHeaders(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			r := newRig(t, network, nil)
			s, macros := r.sessionMacros("192.0.2.10")
			macros.Set("{mail_addr}", "a@pass.test")
			r.want(s.Mail("a@pass.test", "SIZE=100 BODY=8BITMIME"))
			r.want(s.Rcpt("u@example.test", ""))
			r.want(s.DataStart())
			r.want(s.HeaderField("Authentication-Results", "other.example; dkim=pass", nil))
			r.want(s.HeaderField("Authentication-Results", " mx.test; spf=pass smtp.mailfrom=forged@pass.test", nil))
			r.want(s.HeaderField("Received-SPF", " pass (forged) client-ip=192.0.2.10", nil))
			macros.Set("i", "QID123")
			r.want(s.HeaderEnd())
			mods, act, err := s.BodyReadFrom(strings.NewReader("body\r\n"))
			r.want(act, err)
			var got []string
			for _, m := range mods {
				got = append(got, fmt.Sprintf("%d %s[%d]: %s", m.Type, m.HeaderName, m.HeaderIndex, m.HeaderValue))
			}
			want := []string{
				"7 Authentication-Results[2]: ",
				"7 Received-SPF[1]: ",
				"8 Received-SPF[1]:  pass (mx.test: domain of a@pass.test designates 192.0.2.10 as permitted sender) client-ip=192.0.2.10; envelope-from=a@pass.test; helo=client.test; receiver=mx.test; identity=mailfrom; mechanism=ip4:192.0.2.0/24",
				"8 Authentication-Results[1]:  mx.test; spf=pass smtp.mailfrom=pass.test; spf=pass smtp.helo=client.test",
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("modifications:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			l := r.log.String()
			for _, w := range []string{"queue_id=QID123", `esmtp_args="SIZE=100 BODY=8BITMIME"`, "spf_mailfrom=pass", "client_ip=192.0.2.10"} {
				if !strings.Contains(l, w) {
					t.Errorf("decision line lacks %s:\n%s", w, l)
				}
			}
		})
	}
}

func TestSessionRejectsAtRcptButNotPostmaster(t *testing.T) {
	r := newRig(t, "tcp", nil)
	s := r.session("192.0.2.10")
	r.want(s.Mail("bob@fail.test", ""))
	a, err := s.Rcpt("u@example.test", "")
	r.reply(a, err, 550, "5.7.23 SPF fail: sender bob@fail.test is not allowed to be sent from 192.0.2.10: see ")
	r.want(s.Rcpt("Postmaster@example.test", ""))
	r.want(s.Rcpt("abuse", ""))
	if _, _, err := r.end(s); err != nil {
		t.Fatal(err)
	}
	// Delivered to postmaster: the line says so, and names the refusal.
	if n := strings.Count(r.log.String(), "msg=decision"); n != 1 || !lineWith(r.log.String(), "sender=bob@fail.test outcome=accept",
		"verdict=reject decided_by=spf_mailfrom", "stage=rcpt", "rcpt_outcomes=example.test:reject") {
		t.Errorf("%d decision lines, want 1 with the refusal at RCPT:\n%s", n, r.log.String())
	}
	// Refused for every recipient: the line's outcome is the refusal,
	// however the transaction ends.
	r.want(s.Mail("carol@fail.test", ""))
	a, err = s.Rcpt("u@example.test", "")
	r.reply(a, err, 550, "5.7.23 ")
	a, err = s.Rcpt("v@other.test", "")
	r.reply(a, err, 550, "5.7.23 ")
	if err := s.Abort(nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		return lineWith(r.log.String(), "sender=carol@fail.test outcome=reject", `rcpt_outcomes="example.test:reject other.test:reject"`)
	}, "no refused line for carol:\n%s", r.log)
}

func TestSessionRejectAtMail(t *testing.T) {
	r := newRig(t, "tcp", func(c *config.Config) { c.RejectAt = "mail" })
	s := r.session("2001:db8::1")
	a, err := s.Mail("bob@fail.test", "")
	r.reply(a, err, 550, "5.7.23 ")
}

func TestSessionXclientSecondConnectWins(t *testing.T) {
	r := newRig(t, "tcp", nil)
	// Postfix sends a second connect in the same milter session after
	// XCLIENT; go-milter's client cannot, so the packets are written here.
	c := dialRaw(t, r.addr)
	c.send('C', "localhost\x004\x00\x19127.0.0.1\x00") // trusted
	c.expect('c')
	c.send('C', "[UNAVAILABLE]\x004\x00\x00192.0.2.77\x00")
	c.expect('c')
	c.send('H', "client.test\x00")
	c.expect('c')
	c.send('M', "<bob@fail.test>\x00")
	c.expect('c')
	c.send('R', "<u@example.test>\x00")
	if got := c.expect('y'); !strings.HasPrefix(got, "550 5.7.23 ") {
		t.Errorf("RCPT reply %q", got)
	}
}

func TestSessionSeveralMessagesAndAbort(t *testing.T) {
	r := newRig(t, "tcp", nil)
	s := r.session("192.0.2.10")
	r.want(s.Mail("bob@fail.test", ""))
	a, err := s.Rcpt("u@example.test", "")
	r.reply(a, err, 550, "5.7.23 ")
	r.must(s.Abort(nil))
	for i := 0; i < 2; i++ {
		r.want(s.Mail("a@pass.test", ""))
		r.want(s.Rcpt("u@example.test", ""))
		mods, act, err := r.end(s)
		r.want(act, err)
		if len(mods) != 2 {
			t.Errorf("message %d: %d modifications, want 2", i, len(mods))
		}
	}
	if n := strings.Count(r.log.String(), "msg=decision"); n != 3 {
		t.Errorf("%d decision lines, want 3:\n%s", n, r.log.String())
	}
}

func TestSessionAuthenticatedAndTrustedNotJudged(t *testing.T) {
	r := newRig(t, "tcp", nil)
	s, macros := r.sessionMacros("192.0.2.10")
	macros.Set("{auth_authen}", "carol")
	r.want(s.Mail("carol@fail.test", ""))
	r.want(s.Rcpt("u@example.test", ""))
	mods, act, err := r.end(s)
	r.want(act, err)
	if len(mods) != 0 {
		t.Errorf("authenticated message modified: %+v", mods)
	}
	s2 := r.session("127.0.0.1")
	r.want(s2.Mail("dave@fail.test", ""))
	r.want(s2.Rcpt("u@example.test", ""))
	l := r.log.String()
	if !strings.Contains(l, "skipped=authenticated") || !strings.Contains(l, "auth=carol") {
		t.Errorf("log: %s", l)
	}
}

func TestSessionBudgetBoundsTheWait(t *testing.T) {
	r := newRig(t, "tcp", nil)
	r.dns.Drop("slow.test")
	s := r.session("192.0.2.10")
	start := time.Now()
	r.want(s.Mail("a@slow.test", ""))
	a, err := s.Rcpt("u@example.test", "")
	took := time.Since(start)
	r.reply(a, err, 451, "4.7.24 SPF temperror")
	if took > 900*time.Millisecond {
		t.Errorf("MTA waited %v with a 500ms budget", took)
	}
}

func TestSessionDryRun(t *testing.T) {
	r := newRig(t, "tcp", func(c *config.Config) { c.DryRun = true })
	s := r.session("192.0.2.10")
	r.want(s.Mail("bob@fail.test", ""))
	r.want(s.Rcpt("u@example.test", ""))
	mods, act, err := r.end(s)
	r.want(act, err)
	found := false
	for _, m := range mods {
		if m.HeaderName == filter.OurHeader && strings.HasPrefix(m.HeaderValue, " dry-run=would-reject (550 5.7.23 ") {
			found = true
		}
	}
	if !found {
		t.Errorf("no dry-run header in %+v", mods)
	}
}

func TestShutdownDrainsThenCloses(t *testing.T) {
	r := newRig(t, "tcp", nil)
	s := r.session("192.0.2.10")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := r.srv.Shutdown(ctx)
	if err == nil || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("Shutdown returned %v after %v, want the grace period to end with a session open", err, time.Since(start))
	}
	if _, err := s.Mail("a@pass.test", ""); err == nil {
		t.Errorf("session still served after the grace period")
	}
}

func TestSessionWhitelists(t *testing.T) {
	r := newRig(t, "tcp", func(c *config.Config) {
		c.SPF.Whitelist.SenderDomains = []string{"fail.test"}
		c.SPF.Whitelist.HeloNames = []string{"friend.test"}
		c.SPF.Whitelist.Networks, _ = config.ParseNetworks("198.51.100.0/24")
	})
	cases := []struct{ ip, helo, sender, reason string }{
		{"192.0.2.10", "client.test", "x@sub.fail.test", "whitelist-sender"},
		{"192.0.2.10", "FRIEND.test", "y@fail.test2", "whitelist-helo"},
		{"198.51.100.9", "client.test", "z@other.test", "whitelist-network"},
	}
	for _, c := range cases {
		s, _ := r.open()
		r.want(s.Conn("h", milter.FamilyInet, 1, c.ip))
		r.want(s.Helo(c.helo))
		r.want(s.Mail(c.sender, ""))
		r.want(s.Rcpt("u@example.test", ""))
		s.Close()
		waitFor(t, func() bool {
			return lineWith(r.log.String(), "sender="+c.sender+" outcome=disconnected", "skipped="+c.reason)
		},
			"%s skipped as %s:\n%s", c.sender, c.reason, r.log)
	}
	// A sender domain only whitelists itself and its subdomains.
	s := r.session("192.0.2.10")
	r.want(s.Mail("x@notfail.test", ""))
	s.Close()
	waitFor(t, func() bool {
		return lineWith(r.log.String(), "sender=x@notfail.test outcome=disconnected mta=mx.test daemon=smtpd spf_mailfrom=none")
	}, "x@notfail.test judged:\n%s", r.log)
	if lineWith(r.log.String(), "sender=x@notfail.test", "skipped") {
		t.Error("notfail.test matched fail.test")
	}
}

// BenchmarkMilterSession is one whole milter conversation for a message
// (connect, HELO, MAIL, RCPT, header, EOH, EOM with two header insertions)
// over loopback TCP, SPF answered from a warm DNS cache.
func BenchmarkMilterSession(b *testing.B) {
	srv := testdns.Start(b, zone...)
	q, err := resolver.NewCached(&resolver.Stub{Servers: []string{srv.Addr}, Timeout: time.Second}, resolver.CacheConfig{}, nil, cacheHooks())
	if err != nil {
		b.Fatal(err)
	}
	cfg := config.Default()
	cfg.Hostname, cfg.Callout.Enabled = "mx.test", false
	f := filter.New(cfg, filter.Deps{SPF: &spf.Checker{Resolver: q, Receiver: "mx.test"}})
	client := benchServer(b, f)
	if mods := conversation(b, client); len(mods) != 2 {
		b.Fatalf("%d modifications, want 2", len(mods))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		conversation(b, client)
	}
}

func cacheHooks() cache.Hooks { return cache.Hooks{} }

// benchServer serves f on loopback TCP until the benchmark ends and
// returns a client of it.
func benchServer(b *testing.B, f *filter.Filter) *milter.Client {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := filter.NewServer(f, filter.ServerOptions{})
	go s.Serve(ln)
	b.Cleanup(func() { s.Shutdown(context.Background()) })
	return newClient("tcp", ln.Addr().String())
}

// BenchmarkColdMilterSession is the same conversation from a sender
// whose domain was never seen: SPF (TXT, then the a and mx terms) and the
// null-MX check each ask a loopback DNS server (no added latency), as a
// cold cache does for every new sender domain.
func BenchmarkColdMilterSession(b *testing.B) {
	srv := testdns.Start(b, append(zone,
		`*.cold.test. 300 IN TXT "v=spf1 a mx ip4:192.0.2.0/24 -all"`,
		`*.cold.test. 300 IN A 198.51.100.7`,
		`*.cold.test. 300 IN MX 10 mx.hosted.test.`,
		`mx.hosted.test. 300 IN A 198.51.100.25`)...)
	q, err := resolver.NewCached(&resolver.Stub{Servers: []string{srv.Addr}, Timeout: time.Second}, resolver.CacheConfig{}, nil, cacheHooks())
	if err != nil {
		b.Fatal(err)
	}
	store, err := cache.NewMemory(1000, nil, cache.Hooks{})
	if err != nil {
		b.Fatal(err)
	}
	v := callout.NewVerifier(&callout.Prober{Resolver: q}, store, callout.VerifierConfig{GlobalConcurrency: 1, PerDomainConcurrency: 1, PerDomainRatePerMinute: 1}, callout.Hooks{}, nil)
	defer v.Close()
	cfg := config.Default()
	cfg.Hostname = "mx.test"
	f := filter.New(cfg, filter.Deps{SPF: &spf.Checker{Resolver: q, Receiver: "mx.test"}, Callout: v})
	client := benchServer(b, f)
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		n++
		if mods := conversationFrom(b, client, fmt.Sprintf("a@d%d.cold.test", n)); len(mods) != 2 {
			b.Fatalf("%d modifications, want 2", len(mods))
		}
	}
	if got := srv.TotalQueries(); got < 3*n {
		b.Fatalf("%d DNS queries for %d cold sessions: the cache was not cold", got, n)
	}
}

func waitFor(t *testing.T, cond func() bool, format string, args ...any) {
	t.Helper()
	for i := 0; i < 100 && !cond(); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if !cond() {
		t.Errorf("timed out waiting: "+format, args...)
	}
}

// BenchmarkNoOpMilterSession is the same conversation with go-milter's
// do-nothing milter: the floor set by the protocol and the library.
func BenchmarkNoOpMilterSession(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ms := milter.NewServer(milter.WithMilter(func() milter.Milter { return milter.NoOpMilter{} }),
		milter.WithActions(milter.OptAddHeader|milter.OptChangeHeader), milter.WithProtocols(milter.OptNoBody))
	go ms.Serve(ln)
	defer ms.Close()
	client := newClient("tcp", ln.Addr().String())
	b.ReportAllocs()
	for b.Loop() {
		conversation(b, client)
	}
}

// conversation is the milter side of one SMTP session with one message,
// as both benchmarks run it; it returns the end-of-message modifications.
func conversation(b *testing.B, client *milter.Client) []milter.ModifyAction {
	return conversationFrom(b, client, "a@pass.test")
}

// conversationFrom is one message's conversation from sender.
func conversationFrom(b *testing.B, client *milter.Client, sender string) []milter.ModifyAction {
	cs, err := client.Session(nil)
	if err != nil {
		b.Fatal(err)
	}
	defer cs.Close()
	cs.Conn("client.test", milter.FamilyInet, 1, "192.0.2.10")
	cs.Helo("client.test")
	cs.Mail(sender, "")
	cs.Rcpt("u@example.test", "")
	cs.DataStart()
	cs.HeaderField("Subject", "x", nil)
	cs.HeaderEnd()
	mods, act, err := cs.BodyReadFrom(strings.NewReader("body\r\n"))
	if err != nil || (act.Type != milter.ActionContinue && act.Type != milter.ActionAccept) {
		b.Fatalf("end: %v %+v", err, act)
	}
	return mods
}

// lineWith reports whether one line of log contains every part.
func lineWith(log string, parts ...string) bool {
	for _, l := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			return true
		}
	}
	return false
}

func TestMalformedMilterTrafficDoesNotHurt(t *testing.T) {
	r := newRig(t, "tcp", nil)
	for _, junk := range [][]byte{
		{0, 0x40, 0, 0, 'L'},             // a 4 MiB header announced: refused before it is read
		{0, 0, 0, 0},                     // zero-length packet
		{0xff, 0xff, 0xff, 0xff},         // 4 GiB packet
		{0, 0, 0, 2, 'C', 0},             // truncated connect
		{0, 0, 0, 1, 'Z'},                // unknown command
		{0, 0, 0, 3, 'M', 0, 0},          // MAIL with nothing
		[]byte("GET / HTTP/1.0\r\n\r\n"), // not milter at all
	} {
		c, err := net.Dial("tcp", r.listenAddr())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(junk)
		drainUntilClosed(c)
	}
	// The same after a valid negotiation, where the library parses each
	// command: go-milter v0.10.1 panicked (and ended the process) on a
	// CONNECT whose host name lacks its NUL, and on MAIL or RCPT without
	// one (third_party/go-milter/README.md).
	for _, junk := range [][]byte{
		pkt('C', "hostwithoutnul"),
		pkt('C', "host\x00"),
		pkt('M', "<a@pass.test>"),
		pkt('R', "<u@pass.test>"),
		{0, 0, 0, 0},
	} {
		c, err := net.Dial("tcp", r.listenAddr())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(negotiation())
		c.Write(junk)
		drainUntilClosed(c)
	}
	// Still serving.
	s := r.session("192.0.2.10")
	r.want(s.Mail("a@pass.test", ""))
}

// pkt frames one milter command.
func pkt(code byte, data string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)+1))
	return append(append(b, code), data...)
}

// drainUntilClosed reads until the filter hangs up (or 2 s pass) and
// closes c.
func drainUntilClosed(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	c.Close()
}

func TestSessionNullSenderChecksHELO(t *testing.T) {
	for _, checkHELO := range []bool{true, false} {
		r := newRig(t, "tcp", func(c *config.Config) { c.SPF.CheckHELO = checkHELO })
		s := r.session("192.0.2.10")
		r.want(s.Mail("", ""))
		r.want(s.Rcpt("u@example.test", ""))
		mods, act, err := r.end(s)
		r.want(act, err)
		found := false
		for _, m := range mods {
			if m.HeaderName == "Received-SPF" && strings.Contains(m.HeaderValue, "identity=helo") && strings.HasPrefix(m.HeaderValue, " pass ") {
				found = true
			}
		}
		if !found {
			t.Errorf("check_helo=%v: no Received-SPF for the HELO identity in %+v", checkHELO, mods)
		}
	}
}
