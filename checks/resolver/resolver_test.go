package resolver_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/senderguard/senderguard/checks/resolver"
	"github.com/senderguard/senderguard/internal/testdns"
)

func stub(servers ...string) *resolver.Stub {
	return &resolver.Stub{Servers: servers, Timeout: 300 * time.Millisecond, Attempts: 1}
}

// bigTXT is a TXT RRset of over 4 KB: dozens of verification strings beside
// the SPF record, as large domains publish.
func bigTXT() []string {
	rrs := []string{`big.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`}
	for i := 0; i < 60; i++ {
		rrs = append(rrs, fmt.Sprintf(`big.test. 300 IN TXT "site-verification=%064d"`, i))
	}
	return rrs
}

func TestAnswerKinds(t *testing.T) {
	srv := testdns.Start(t, append(bigTXT(),
		`a.test. 300 IN A 192.0.2.1`,
		`a.test. 300 IN AAAA 2001:db8::1`,
		`mx.test. 300 IN MX 10 mail.a.test.`,
		`null.test. 300 IN MX 0 .`,
		`alias.test. 300 IN CNAME a.test.`,
		`esc.test. 300 IN TXT "v=spf1 a:\239\187\191x.test -all"`,
	)...)
	srv.ServFail("broken.test")
	q := stub(srv.Addr)
	ctx := context.Background()
	tests := []struct {
		name  string
		qtype uint16
		check func(a *resolver.Answer, err error) string
	}{
		{"a.test", dns.TypeA, func(a *resolver.Answer, err error) string {
			if err != nil || len(a.Addrs) != 1 || a.Addrs[0].String() != "192.0.2.1" || a.TTL != 300*time.Second {
				return fmt.Sprintf("%+v %v", a, err)
			}
			return ""
		}},
		{"alias.test", dns.TypeA, func(a *resolver.Answer, err error) string {
			if err != nil || len(a.Addrs) != 1 {
				return fmt.Sprintf("CNAME not followed: %+v %v", a, err)
			}
			return ""
		}},
		{"a.test", dns.TypeTXT, func(a *resolver.Answer, err error) string {
			if err != nil || a.Rcode != resolver.Success || !a.Void() || a.TTL != 60*time.Second {
				return fmt.Sprintf("want NODATA with the SOA's TTL: %+v %v", a, err)
			}
			return ""
		}},
		{"nowhere.test", dns.TypeA, func(a *resolver.Answer, err error) string {
			if err != nil || a.Rcode != resolver.NXDomain || !a.Void() {
				return fmt.Sprintf("want NXDOMAIN: %+v %v", a, err)
			}
			return ""
		}},
		{"broken.test", dns.TypeTXT, func(a *resolver.Answer, err error) string {
			if !errors.Is(err, resolver.ErrTemporary) {
				return fmt.Sprintf("want a temporary error: %v", err)
			}
			return ""
		}},
		{"mx.test", dns.TypeMX, func(a *resolver.Answer, err error) string {
			if err != nil || len(a.MX) != 1 || a.MX[0] != (resolver.MX{Pref: 10, Host: "mail.a.test"}) {
				return fmt.Sprintf("%+v %v", a, err)
			}
			return ""
		}},
		{"null.test", dns.TypeMX, func(a *resolver.Answer, err error) string {
			if err != nil || len(a.MX) != 1 || a.MX[0].Host != "" {
				return fmt.Sprintf("null MX: %+v %v", a, err)
			}
			return ""
		}},
		{"big.test", dns.TypeTXT, func(a *resolver.Answer, err error) string {
			if err != nil || len(a.TXT) != 61 || !strings.HasPrefix(a.TXT[0], "v=spf1 ") {
				return fmt.Sprintf("want 61 TXT over TCP: %d %v", len(a.TXT), err)
			}
			return ""
		}},
		{"esc.test", dns.TypeTXT, func(a *resolver.Answer, err error) string {
			if err != nil || len(a.TXT) != 1 || a.TXT[0] != "v=spf1 a:\xef\xbb\xbfx.test -all" {
				return fmt.Sprintf("want the raw octets: %q %v", a.TXT, err)
			}
			return ""
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name+"/"+dns.TypeToString[tc.qtype], func(t *testing.T) {
			a, err := q.Query(ctx, tc.name, tc.qtype)
			if msg := tc.check(a, err); msg != "" {
				t.Error(msg)
			}
		})
	}
	if srv.Queries("big.test", dns.TypeTXT) != 2 {
		t.Errorf("big.test: %d queries, want 2 (UDP truncated, then TCP)", srv.Queries("big.test", dns.TypeTXT))
	}
}

func TestTruncatedAnswerFromServerRefusingTCPFallsOver(t *testing.T) {
	refusing := testdns.Start(t, bigTXT()...)
	refusing.RefuseTCP()
	good := testdns.Start(t, bigTXT()...)
	a, err := stub(refusing.Addr, good.Addr).Query(context.Background(), "big.test", dns.TypeTXT)
	if err != nil || len(a.TXT) != 61 {
		t.Fatalf("got %v, %v", a, err)
	}
	if good.Queries("big.test", dns.TypeTXT) != 2 || refusing.Queries("big.test", dns.TypeTXT) != 1 {
		t.Errorf("queries: refusing %d, good %d", refusing.Queries("big.test", dns.TypeTXT), good.Queries("big.test", dns.TypeTXT))
	}
}

func TestSilentServerIsTemporaryWithinDeadline(t *testing.T) {
	srv := testdns.Start(t)
	srv.Drop("quiet.test")
	q := &resolver.Stub{Servers: []string{srv.Addr}, Timeout: 5 * time.Second, Attempts: 3}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := q.Query(ctx, "quiet.test", dns.TypeTXT)
	if !errors.Is(err, resolver.ErrTemporary) || time.Since(start) > time.Second {
		t.Fatalf("got %v after %v", err, time.Since(start))
	}
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func TestCacheRespectsTTLsAndMerges(t *testing.T) {
	srv := testdns.Start(t, `a.test. 30 IN A 192.0.2.1`, `slow.test. 300 IN A 192.0.2.2`)
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	c, err := resolver.NewCached(stub(srv.Addr), resolver.CacheConfig{Size: 100, MaxTTL: time.Hour, NegativeTTL: 10 * time.Minute}, clock, cacheHooks())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ask := func(name string, qtype uint16) {
		if _, err := c.Query(ctx, name, qtype); err != nil {
			t.Fatal(err)
		}
	}
	ask("a.test", dns.TypeA)
	ask("A.TEST.", dns.TypeA) // same question
	clock.Add(29 * time.Second)
	ask("a.test", dns.TypeA)
	if n := srv.Queries("a.test", dns.TypeA); n != 1 {
		t.Errorf("within TTL: %d queries, want 1", n)
	}
	clock.Add(2 * time.Second)
	ask("a.test", dns.TypeA)
	if n := srv.Queries("a.test", dns.TypeA); n != 2 {
		t.Errorf("after TTL: %d queries, want 2", n)
	}
	// Negative answers live for the SOA minimum (60s in testdns).
	ask("none.test", dns.TypeA)
	clock.Add(59 * time.Second)
	ask("none.test", dns.TypeA)
	clock.Add(2 * time.Second)
	ask("none.test", dns.TypeA)
	if n := srv.Queries("none.test", dns.TypeA); n != 2 {
		t.Errorf("negative caching: %d queries, want 2", n)
	}
	// Concurrent identical questions become one query.
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); ask("slow.test", dns.TypeA) }()
	}
	wg.Wait()
	if n := srv.Queries("slow.test", dns.TypeA); n != 1 {
		t.Errorf("merged: %d queries, want 1", n)
	}
}

func TestCacheIsBounded(t *testing.T) {
	srv := testdns.Start(t)
	c, err := resolver.NewCached(stub(srv.Addr), resolver.CacheConfig{Size: 10}, nil, cacheHooks())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		c.Query(context.Background(), fmt.Sprintf("n%d.test", i), dns.TypeA)
	}
	if c.Len() != 10 {
		t.Errorf("cache holds %d, want 10", c.Len())
	}
}

// hostileServer answers every UDP question with whatever reply builds.
func hostileServer(t *testing.T, reply func(q *dns.Msg) []byte) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			if b := reply(q); b != nil {
				pc.WriteTo(b, addr)
			}
		}
	}()
	return pc.LocalAddr().String()
}

func TestHostileServersAreSkipped(t *testing.T) {
	good := testdns.Start(t, `a.test. 300 IN A 192.0.2.1`)
	hostile := map[string]func(q *dns.Msg) []byte{
		"garbage": func(*dns.Msg) []byte { return []byte("\x00\x01not dns at all") },
		"other question": func(q *dns.Msg) []byte {
			m := new(dns.Msg)
			m.SetQuestion("evil.test.", dns.TypeA)
			m.Id, m.Response = q.Id, true
			rr, _ := dns.NewRR("evil.test. 300 IN A 203.0.113.66")
			m.Answer = []dns.RR{rr}
			b, _ := m.Pack()
			return b
		},
		"wrong id": func(q *dns.Msg) []byte {
			m := new(dns.Msg)
			m.SetReply(q)
			m.Id++
			rr, _ := dns.NewRR("a.test. 300 IN A 203.0.113.66")
			m.Answer = []dns.RR{rr}
			b, _ := m.Pack()
			return b
		},
		"refused": func(q *dns.Msg) []byte {
			m := new(dns.Msg)
			m.SetRcode(q, dns.RcodeRefused)
			b, _ := m.Pack()
			return b
		},
	}
	for name, reply := range hostile {
		t.Run(name, func(t *testing.T) {
			q := stub(hostileServer(t, reply), good.Addr)
			a, err := q.Query(context.Background(), "a.test", dns.TypeA)
			if err != nil || len(a.Addrs) != 1 || a.Addrs[0].String() != "192.0.2.1" {
				t.Fatalf("got %+v, %v; want the good server's answer", a, err)
			}
		})
	}
}

type panicky struct{}

func (panicky) Query(context.Context, string, uint16) (*resolver.Answer, error) { panic("boom") }

func TestPanicBelowCacheIsTemporary(t *testing.T) {
	c, err := resolver.NewCached(panicky{}, resolver.CacheConfig{}, nil, cacheHooks())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Query(context.Background(), "a.test", dns.TypeA); !errors.Is(err, resolver.ErrTemporary) {
		t.Fatalf("got %v", err)
	}
}

func TestCacheFloorsAndCaps(t *testing.T) {
	srv := testdns.Start(t, `short.test. 5 IN A 192.0.2.1`, `long.test. 86400 IN A 192.0.2.2`)
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	c, err := resolver.NewCached(stub(srv.Addr), resolver.CacheConfig{MinTTL: time.Minute, MaxTTL: time.Hour, NegativeTTL: 30 * time.Second}, clock, cacheHooks())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"short.test", "long.test", "none.test"} {
		c.Query(context.Background(), n, dns.TypeA)
	}
	clock.Add(59 * time.Second) // short (5s) is floored to 1m; none (SOA 60s) is floored too
	for _, n := range []string{"short.test", "long.test", "none.test"} {
		c.Query(context.Background(), n, dns.TypeA)
	}
	clock.Add(time.Hour) // long (1 day) is capped to 1h
	c.Query(context.Background(), "long.test", dns.TypeA)
	for n, want := range map[string]int{"short.test": 1, "none.test": 1, "long.test": 2} {
		if got := srv.Queries(n, dns.TypeA); got != want {
			t.Errorf("%s: %d queries, want %d", n, got, want)
		}
	}
}

// silentServer reads DNS questions on loopback and never answers; it
// counts them.
func silentServer(t *testing.T) (string, func() int) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var mu sync.Mutex
	n := 0
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			mu.Lock()
			n++
			mu.Unlock()
		}
	}()
	return pc.LocalAddr().String(), func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// TestDeadFirstServerIsLearned: with the first nameserver silent, only
// the first question waits for its timeout; the rest go to the second
// server at once, until the first one's penalty ends.
func TestDeadFirstServerIsLearned(t *testing.T) {
	dead, asked := silentServer(t)
	good := testdns.Start(t, `a.test. 300 IN A 192.0.2.1`)
	var events []string
	var mu sync.Mutex
	s := &resolver.Stub{Servers: []string{dead, good.Addr}, Timeout: 200 * time.Millisecond, Attempts: 1,
		DownFor: 600 * time.Millisecond,
		OnServerHealth: func(server string, up bool) {
			mu.Lock()
			events = append(events, fmt.Sprint(server == dead, up))
			mu.Unlock()
		}}
	query := func() time.Duration {
		ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
		defer cancel()
		start := time.Now()
		if _, err := s.Query(ctx, "a.test", dns.TypeA); err != nil {
			t.Fatalf("query failed (would be a tempfail): %v", err)
		}
		return time.Since(start)
	}
	if d := query(); d < 200*time.Millisecond {
		t.Errorf("first query took %v: the dead server was not asked first", d)
	}
	for i := range 20 {
		if d := query(); d > 100*time.Millisecond {
			t.Fatalf("query %d took %v after the dead server was learned", i, d)
		}
	}
	if n := asked(); n != 1 {
		t.Errorf("dead server asked %d times, want 1", n)
	}
	time.Sleep(700 * time.Millisecond) // its penalty ends: asked again, first
	query()
	if n := asked(); n != 2 {
		t.Errorf("dead server asked %d times after its penalty, want 2", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(events, ",") != "true false" {
		t.Errorf("health events %v, want one 'down' for the dead server", events)
	}
}

func TestTruncatedAnswersReuseOneTCPConnection(t *testing.T) {
	srv := testdns.Start(t, bigTXT()...)
	s := stub(srv.Addr)
	defer s.CloseIdle()
	for i := range 50 {
		a, err := s.Query(context.Background(), "big.test", dns.TypeTXT)
		if err != nil || len(a.TXT) != 61 {
			t.Fatalf("query %d: %v, %v", i, a, err)
		}
	}
	if n := srv.TCPConns(); n != 1 {
		t.Errorf("50 truncated answers took %d TCP connections, want 1", n)
	}
}
