package dnsbl_test

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/checks/dnsbl"
	"github.com/senderguard/senderguard/checks/resolver"
	"github.com/senderguard/senderguard/internal/testdns"
	"github.com/senderguard/senderguard/internal/testredis"
)

func TestQueryName(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"192.0.2.99", "99.2.0.192.bl.test"},
		{"::ffff:192.0.2.99", "99.2.0.192.bl.test"},
		// RFC 5782 §2.4's example.
		{"2001:db8:1:2:3:4:567:89ab", "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test"},
	} {
		if got := dnsbl.QueryName(netip.MustParseAddr(tc.addr), "bl.test."); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.addr, got, tc.want)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		answer []string
		want   dnsbl.Status
	}{
		{nil, dnsbl.Clean},
		{[]string{"127.0.0.2"}, dnsbl.Listed},
		{[]string{"127.0.0.10", "127.0.0.4"}, dnsbl.Listed},
		{[]string{"127.255.255.254"}, dnsbl.Refused}, // Spamhaus: public resolver
		{[]string{"127.255.255.252"}, dnsbl.Refused}, // Spamhaus: typo in the zone
		{[]string{"127.255.255.254", "127.0.0.2"}, dnsbl.Listed},
		{[]string{"192.0.2.1"}, dnsbl.Odd}, // NXDOMAIN rewritten by a resolver
	} {
		var addrs []netip.Addr
		for _, a := range tc.answer {
			addrs = append(addrs, netip.MustParseAddr(a))
		}
		if got := dnsbl.Classify(addrs); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.answer, got, tc.want)
		}
	}
}

type recorder struct {
	mu     sync.Mutex
	listed map[string]bool
	paused bool
}

func (r *recorder) hooks() dnsbl.WatchHooks {
	return dnsbl.WatchHooks{
		Listed: func(addr, zone string, listed bool) { r.mu.Lock(); r.listed[addr+" "+zone] = listed; r.mu.Unlock() },
		Paused: func(p bool) { r.mu.Lock(); r.paused = p; r.mu.Unlock() },
	}
}

func (r *recorder) get(k string) (bool, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.listed[k]
	return v, ok
}

// TestWatchListsPausesAndResumes: the source address is listed in one
// zone and refused (127.255.255.254) in another: listed=1 and listed=0
// with a warning; paused until the zone stops listing it.
func TestWatchListsPausesAndResumes(t *testing.T) {
	srv := testdns.Start(t,
		"77.0.0.127.bl.test. 60 IN A 127.0.0.2",
		"77.0.0.127.quota.test. 60 IN A 127.255.255.254",
	)
	q := &resolver.Stub{Servers: []string{srv.Addr}, Timeout: time.Second, Attempts: 1}
	store, _ := cache.NewMemory(100, nil, cache.Hooks{})
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	rec := &recorder{listed: map[string]bool{}}
	addr := netip.MustParseAddr("127.0.0.77")
	w := dnsbl.NewWatch(q, store, dnsbl.WatchConfig{Zones: []string{"bl.test", "quota.test", "clean.test"},
		Interval: time.Minute, Addresses: func() []netip.Addr { return []netip.Addr{addr} }, Pause: true}, rec.hooks(), log)
	w.Check(t.Context())
	for k, want := range map[string]bool{"127.0.0.77 bl.test": true, "127.0.0.77 quota.test": false, "127.0.0.77 clean.test": false} {
		if got, ok := rec.get(k); !ok || got != want {
			t.Errorf("%s: listed=%v (known %v), want %v", k, got, ok, want)
		}
	}
	why, paused := w.Paused()
	if !paused || why != "127.0.0.77 listed on bl.test" || !rec.paused {
		t.Errorf("paused=%v %q", paused, why)
	}
	out := logs.String()
	for _, want := range []string{"probe address listed", "the list refused our query", "probes paused"} {
		if strings.Count(out, want) != 1 {
			t.Errorf("log has %d %q:\n%s", strings.Count(out, want), want, out)
		}
	}
	// A lookup that fails keeps the listing.
	srv.ServFail("77.0.0.127.bl.test")
	forget(t, store, addr)
	w.Check(t.Context())
	if _, paused := w.Paused(); !paused {
		t.Fatal("a failed lookup ended the pause")
	}
	srv.Remove("77.0.0.127.bl.test")
	w.Check(t.Context())
	if _, paused := w.Paused(); paused || rec.paused {
		t.Fatal("still paused after the listing ended")
	}
	if got, _ := rec.get("127.0.0.77 bl.test"); got {
		t.Error("listed gauge still 1")
	}
	if !strings.Contains(logs.String(), "probes resumed") {
		t.Errorf("no resume warning:\n%s", logs.String())
	}
}

// forget removes the stored lookups of addr, so that the next Check
// asks DNS again instead of reusing what it stored a moment ago.
func forget(t *testing.T, store *cache.Memory, addr netip.Addr) {
	t.Helper()
	for _, z := range []string{"bl.test", "quota.test", "clean.test"} {
		if _, err := store.Delete(t.Context(), "bl:"+z+":"+addr.String()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWatchSharesLookupsThroughTheStore: a second watch on the same
// store (another replica on Redis) uses the first one's recent lookup
// and asks DNS nothing; a listed address stays watched when it is no
// longer among the addresses in use.
func TestWatchSharesLookupsThroughTheStore(t *testing.T) {
	srv := testdns.Start(t, "9.0.0.127.bl.test. 60 IN A 127.0.0.3")
	q := &resolver.Stub{Servers: []string{srv.Addr}, Timeout: time.Second, Attempts: 1}
	store, _ := cache.NewMemory(100, nil, cache.Hooks{})
	addrs := []netip.Addr{netip.MustParseAddr("127.0.0.9")}
	cfg := dnsbl.WatchConfig{Zones: []string{"bl.test"}, Interval: time.Hour, Addresses: func() []netip.Addr { return addrs }, Pause: true}
	a := dnsbl.NewWatch(q, store, cfg, dnsbl.WatchHooks{}, nil)
	a.Check(t.Context())
	b := dnsbl.NewWatch(q, store, cfg, dnsbl.WatchHooks{}, nil)
	b.Check(t.Context())
	if n := srv.Queries("9.0.0.127.bl.test", dns.TypeA); n != 1 {
		t.Errorf("%d lookups by two replicas within the interval, want 1", n)
	}
	if _, paused := b.Paused(); !paused {
		t.Error("the second replica is not paused")
	}
	addrs = nil // no probe connection lately: the listing is still watched
	b.Check(t.Context())
	if l := b.Listings(); len(l) != 1 || l[0].Address.String() != "127.0.0.9" {
		t.Errorf("listings %v", l)
	}
}

// TestWatchSharesThroughRedis: two replicas, each with its own memory in
// front of one Redis: the second one's check is answered by the first
// one's lookup, and it pauses too.
func TestWatchSharesThroughRedis(t *testing.T) {
	redis := testredis.Start(t)
	srv := testdns.Start(t, "9.0.0.127.bl.test. 60 IN A 127.0.0.2")
	q := &resolver.Stub{Servers: []string{srv.Addr}, Timeout: time.Second, Attempts: 1}
	replica := func() *dnsbl.Watch {
		local, _ := cache.NewMemory(100, nil, cache.Hooks{})
		store := cache.NewShared(func() (*cache.Redis, error) {
			return cache.NewRedis(cache.RedisOptions{URL: redis.URL(), KeyPrefix: "fleet:", Timeout: 200 * time.Millisecond})
		}, local, cache.SharedHooks{}, nil)
		t.Cleanup(store.Close)
		return dnsbl.NewWatch(q, store, dnsbl.WatchConfig{Zones: []string{"bl.test"}, Interval: time.Hour, Pause: true,
			Addresses: func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("127.0.0.9")} }}, dnsbl.WatchHooks{}, nil)
	}
	a, b := replica(), replica()
	a.Check(t.Context())
	b.Check(t.Context())
	if n := srv.Queries("9.0.0.127.bl.test", dns.TypeA); n != 1 {
		t.Errorf("%d lookups by two replicas on one Redis, want 1", n)
	}
	if _, paused := b.Paused(); !paused {
		t.Error("the second replica is not paused")
	}
}
