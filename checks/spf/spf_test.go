package spf_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/checks/resolver"
	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/internal/testdns"
)

// realistic is a policy of the common shape: ten terms, an include chain
// three deep, the client authorized at the bottom.
var realistic = []string{
	`example.com. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.0/24 a mx include:_spf1.example.com include:_spf2.example.com ip6:2001:db8::/32 ?exists:%{l}.x.example.com ~all"`,
	`example.com. 300 IN A 192.0.2.80`,
	`example.com. 300 IN MX 10 mx1.example.com.`,
	`example.com. 300 IN MX 20 mx2.example.com.`,
	`mx1.example.com. 300 IN A 192.0.2.25`,
	`mx2.example.com. 300 IN A 192.0.2.26`,
	`_spf1.example.com. 300 IN TXT "v=spf1 ip4:203.0.113.0/26 include:_spf3.example.com -all"`,
	`_spf3.example.com. 300 IN TXT "v=spf1 ip4:203.0.113.64/26 ip4:100.64.1.0/24 -all"`,
	`_spf2.example.com. 300 IN TXT "v=spf1 ip4:233.252.0.0/24 -all"`,
}

func newChecker(t testing.TB, q resolver.Querier) *spf.Checker {
	return &spf.Checker{Resolver: q, Receiver: "mx.test"}
}

func TestColdCacheAsksExactlyWhatTheRFCRequires(t *testing.T) {
	srv := testdns.Start(t, realistic...)
	q := &resolver.Stub{Servers: []string{srv.Addr}, Timeout: time.Second, Attempts: 1}
	c, err := resolver.NewCached(q, resolver.CacheConfig{}, nil, cache.Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	r := newChecker(t, c).CheckMailFrom(context.Background(), netip.MustParseAddr("100.64.1.7"), "h.example.com", "u@example.com")
	if r.Status != spf.Pass || r.Mechanism != "include:_spf1.example.com" || r.Lookups != 4 {
		t.Fatalf("got %+v", r)
	}
	// TXT of the three records on the path, the a and mx terms (A of the
	// domain, MX, A of both hosts): the ip terms, _spf2 and exists are
	// never reached.
	want := map[string]uint16{"example.com": dns.TypeTXT, "_spf1.example.com": dns.TypeTXT, "_spf3.example.com": dns.TypeTXT,
		"mx1.example.com": dns.TypeA, "mx2.example.com": dns.TypeA}
	for name, qt := range want {
		if n := srv.Queries(name, qt); n != 1 {
			t.Errorf("%s %s: %d queries, want 1", name, dns.TypeToString[qt], n)
		}
	}
	if srv.Queries("example.com", dns.TypeA) != 1 || srv.Queries("example.com", dns.TypeMX) != 1 {
		t.Errorf("a/mx terms: A %d, MX %d", srv.Queries("example.com", dns.TypeA), srv.Queries("example.com", dns.TypeMX))
	}
	if n := srv.TotalQueries(); n != 7 {
		t.Errorf("%d queries in all, want 7", n)
	}
	// A second evaluation is answered from the cache.
	srv.ResetCounts()
	newChecker(t, c).CheckMailFrom(context.Background(), netip.MustParseAddr("100.64.1.7"), "h.example.com", "u@example.com")
	if n := srv.TotalQueries(); n != 0 {
		t.Errorf("warm cache: %d queries", n)
	}
}

func TestResultsAndEvidence(t *testing.T) {
	srv := testdns.Start(t, append(realistic,
		`fail.test. 300 IN TXT "v=spf1 -all exp=exp.fail.test"`,
		`exp.fail.test. 300 IN TXT "%{i} may not send for %{d} (%{h})"`,
		`two.test. 300 IN TXT "v=spf1 -all"`, `two.test. 300 IN TXT "v=spf1 +all"`,
		`loop.test. 300 IN TXT "v=spf1 include:loop.test -all"`,
		`bad.test. 300 IN TXT "v=spf1 ip4:300.1.1.1 -all"`,
		`void.test. 300 IN TXT "v=spf1 a:n1.void.test a:n2.void.test a:n3.void.test -all"`,
		`v6.test. 300 IN TXT "v=spf1 ip6:2001:db8::/64 -all"`,
	)...)
	srv.ServFail("temp.test")
	c := newChecker(t, &resolver.Stub{Servers: []string{srv.Addr}, Timeout: time.Second, Attempts: 1})
	ip := netip.MustParseAddr("192.0.2.99")
	tests := []struct {
		sender, helo string
		ip           netip.Addr
		status       spf.Status
		mech, expl   string
		problem      string
	}{
		{"u@example.com", "h", ip, spf.Pass, "ip4:192.0.2.0/24", "", ""},
		{"u@fail.test", "helo.test", ip, spf.Fail, "-all", "192.0.2.99 may not send for fail.test (helo.test)", ""},
		{"u@two.test", "h", ip, spf.PermError, "", "", "more than one v=spf1 record"},
		{"u@loop.test", "h", ip, spf.PermError, "include:loop.test", "", "more than 10 DNS-querying terms"},
		{"u@bad.test", "h", ip, spf.PermError, "", "", "bad ip4 address"},
		{"u@void.test", "h", ip, spf.PermError, "a:n3.void.test", "", "more than 2 void lookups"},
		{"u@temp.test", "h", ip, spf.TempError, "", "", "SERVFAIL"},
		{"u@nowhere.test", "h", ip, spf.None, "", "", ""},
		{"u@v6.test", "h", netip.MustParseAddr("2001:db8::5"), spf.Pass, "ip6:2001:db8::/64", "", ""},
		{"u@v6.test", "h", netip.MustParseAddr("::ffff:192.0.2.1"), spf.Fail, "-all", spf.DefaultExplanation, ""},
		{"", "example.com", ip, spf.Pass, "ip4:192.0.2.0/24", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.sender+"/"+tc.helo, func(t *testing.T) {
			r := c.CheckMailFrom(context.Background(), tc.ip, tc.helo, tc.sender)
			problem := ""
			if r.Problem != nil {
				problem = r.Problem.Error()
			}
			if r.Status != tc.status || r.Mechanism != tc.mech || r.Explanation != tc.expl || !strings.Contains(problem, tc.problem) {
				t.Errorf("got %s mech=%q expl=%q problem=%q", r.Status, r.Mechanism, r.Explanation, problem)
			}
			if tc.sender == "" && (r.Identity != spf.HELO || r.Sender != "postmaster@"+tc.helo) {
				t.Errorf("null sender: identity %s sender %s", r.Identity, r.Sender)
			}
		})
	}
}

func TestTraceExplainsSteps(t *testing.T) {
	srv := testdns.Start(t, realistic...)
	c := newChecker(t, &resolver.Stub{Servers: []string{srv.Addr}, Timeout: time.Second, Attempts: 1})
	var lines []string
	c.CheckMailFrom(context.Background(), netip.MustParseAddr("100.64.1.7"), "h", "u@example.com", spf.WithTrace(func(s string) { lines = append(lines, s) }))
	got := strings.Join(lines, "\n")
	for _, want := range []string{"example.com: ip4:192.0.2.0/24: match=false", "_spf3.example.com: ip4:100.64.1.0/24: match=true", "result pass (lookups 4, void 0)"} {
		if !strings.Contains(got, want) {
			t.Errorf("trace lacks %q:\n%s", want, got)
		}
	}
}

func TestReceivedSPFHeader(t *testing.T) {
	r := spf.Result{Status: spf.Fail, Identity: spf.MailFrom, IP: netip.MustParseAddr("192.0.2.1"),
		Sender: "a b@example.com", Domain: "example.com", Mechanism: "-all"}
	got := r.ReceivedSPF("mx.test", "helo.test")
	want := `fail (mx.test: domain of a b@example.com does not designate 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="a b@example.com"; helo=helo.test; receiver=mx.test; identity=mailfrom; mechanism=-all`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// BenchmarkWarmCache is one evaluation of the realistic policy with every
// answer cached (target: under 20µs).
func BenchmarkWarmCache(b *testing.B) {
	srv := testdns.Start(b, realistic...)
	q, err := resolver.NewCached(&resolver.Stub{Servers: []string{srv.Addr}, Timeout: time.Second}, resolver.CacheConfig{}, nil, cache.Hooks{})
	if err != nil {
		b.Fatal(err)
	}
	c := newChecker(b, q)
	ip := netip.MustParseAddr("100.64.1.7")
	ctx := context.Background()
	if r := c.CheckMailFrom(ctx, ip, "h", "u@example.com"); r.Status != spf.Pass {
		b.Fatal(r.Status)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c.CheckMailFrom(ctx, ip, "h", "u@example.com")
	}
}

// TestDomainSpecEndingInAnEscape: RFC 7208 §7.1 lets a domain-spec end in
// "%%", "%_" or "%-"; the expanded names do not exist, so the records
// fail (they were permerror).
func TestDomainSpecEndingInAnEscape(t *testing.T) {
	srv := testdns.Start(t,
		`a1.example. 300 IN TXT "v=spf1 exists:%{i}._spf.a1.example%_ -all"`,
		`a1b.example. 300 IN TXT "v=spf1 a:mail.a1b.example%% -all"`,
		`a1c.example. 300 IN TXT "v=spf1 mx:mail.a1c.example%- -all"`,
		`a1d.example. 300 IN TXT "v=spf1 include:inc.a1d.example%_ -all"`,
		`inc.a1d.example. 300 IN TXT "v=spf1 +all"`,
	)
	c := newChecker(t, &resolver.Stub{Servers: []string{srv.Addr}, Timeout: time.Second, Attempts: 1})
	cases := []struct {
		sender string
		want   spf.Status
	}{
		{"john@a1.example", spf.Fail},
		{"john@a1b.example", spf.Fail},
		{"john@a1c.example", spf.Fail},
		// include of a name that does not exist: no record there (§5.2).
		{"john@a1d.example", spf.PermError},
	}
	for _, tc := range cases {
		r := c.CheckMailFrom(context.Background(), netip.MustParseAddr("192.0.2.1"), "h.example", tc.sender)
		if r.Status != tc.want {
			t.Errorf("%s: %s (%v), want %s", tc.sender, r.Status, r.Problem, tc.want)
		}
	}
}

// TestVoidLimitAndNoMail: the void-lookup limit is configurable (RFC 7208
// §4.6.4's 2 by default), and a domain whose record is exactly
// "v=spf1 -all" is marked as sending no mail.
func TestVoidLimitAndNoMail(t *testing.T) {
	srv := testdns.Start(t,
		`void.test. 300 IN TXT "v=spf1 a:n1.void.test a:n2.void.test a:n3.void.test -all"`,
		`nomail.test. 300 IN TXT "v=spf1 -all"`,
		`almost.test. 300 IN TXT "v=spf1 -all exp=x.almost.test"`,
		`redir.test. 300 IN TXT "v=spf1 redirect=nomail.test"`,
	)
	q := &resolver.Stub{Servers: []string{srv.Addr}, Timeout: time.Second, Attempts: 1}
	ip := netip.MustParseAddr("192.0.2.1")
	for _, tc := range []struct {
		limit   int
		status  spf.Status
		problem string
	}{{0, spf.PermError, "more than 2 void lookups"}, {2, spf.PermError, "more than 2 void lookups"}, {3, spf.Fail, ""}, {1, spf.PermError, "more than 1 void lookups"}} {
		c := &spf.Checker{Resolver: q, VoidLimit: tc.limit}
		r := c.CheckMailFrom(t.Context(), ip, "h", "u@void.test")
		if r.Status != tc.status || (tc.problem != "" && (r.Problem == nil || r.Problem.Error() != "void.test: "+tc.problem && !strings.HasSuffix(r.Problem.Error(), tc.problem))) {
			t.Errorf("limit %d: %s %v, want %s %q", tc.limit, r.Status, r.Problem, tc.status, tc.problem)
		}
	}
	c := &spf.Checker{Resolver: q}
	for domain, want := range map[string]bool{"nomail.test": true, "almost.test": false, "redir.test": false, "void.test": false} {
		if r := c.CheckMailFrom(t.Context(), ip, "h", "u@"+domain); r.NoMail != want {
			t.Errorf("%s: NoMail %v, want %v", domain, r.NoMail, want)
		}
	}
}
