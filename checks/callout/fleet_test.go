package callout_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/internal/testredis"
	"github.com/senderguard/senderguard/internal/testsmtp"
)

// replica is one verifier of a fleet sharing srv.
func (e *env) replica(srv *testredis.Server, cfg callout.VerifierConfig, hooks callout.Hooks, gate ...callout.GateConfig) *callout.Verifier {
	return e.replicaOn(e.sharedStore(srv), cfg, hooks, gate...)
}

// sharedStore is a replica's store: Redis srv in front of memory.
func (e *env) sharedStore(srv *testredis.Server) *cache.Shared {
	local, _ := cache.NewMemory(1000, nil, cache.Hooks{})
	store := cache.NewShared(func() (*cache.Redis, error) {
		return cache.NewRedis(cache.RedisOptions{URL: srv.URL(), KeyPrefix: "fleet:", Timeout: 200 * time.Millisecond})
	}, local, cache.SharedHooks{}, nil)
	e.t.Cleanup(store.Close)
	return store
}

// replicaOn is a verifier on store, with the tests' defaults for what
// cfg leaves zero.
func (e *env) replicaOn(store cache.Store, cfg callout.VerifierConfig, hooks callout.Hooks, gate ...callout.GateConfig) *callout.Verifier {
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = 5 * time.Second
	}
	for _, f := range []*time.Duration{&cfg.TTLExists, &cfg.TTLNotExists, &cfg.TTLUnknown, &cfg.GreylistRetry} {
		if *f == 0 {
			*f = time.Hour
		}
	}
	for _, f := range []*int{&cfg.GlobalConcurrency, &cfg.PerDomainConcurrency, &cfg.PerDomainRatePerMinute} {
		if *f == 0 {
			*f = 50
		}
	}
	return e.wire(store, cfg, hooks, gate)
}

// TestFleetProbesEachAddressOnce: lookups of one address on three replicas
// at once make one SMTP probe; a replica started later answers from
// Redis.
func TestFleetProbesEachAddressOnce(t *testing.T) {
	redis := testredis.Start(t)
	e := newEnv(t, "f.test. 60 IN MX 10 mx.f.test.", "mx.f.test. 60 IN A 127.0.0.91")
	srv := e.smtp("127.0.0.91", func(s *testsmtp.Server) {
		s.Users = map[string]bool{"alice@f.test": true}
		s.BannerDelay = 0
	})
	var waits sync.Map
	hooks := callout.Hooks{FleetWait: func(found bool) { waits.Store(time.Now().UnixNano(), found) }}
	fleet := []*callout.Verifier{e.replica(redis, callout.VerifierConfig{}, hooks), e.replica(redis, callout.VerifierConfig{}, hooks), e.replica(redis, callout.VerifierConfig{}, hooks)}
	var wg sync.WaitGroup
	results := make(chan callout.Class, 30)
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			results <- fleet[i%3].Verify(ctx, "alice@f.test").Class
		}()
	}
	wg.Wait()
	close(results)
	for c := range results {
		if c != callout.Exists {
			t.Errorf("a lookup got %s", c)
		}
	}
	if n := srv.Count("RCPT"); n != 1 {
		t.Errorf("%d RCPT probes for one address on three replicas, want 1", n)
	}
	late := e.replica(redis, callout.VerifierConfig{}, callout.Hooks{})
	if r := late.Verify(context.Background(), "alice@f.test"); r.Class != callout.Exists || !r.Cached || srv.Count("RCPT") != 1 {
		t.Errorf("restarted replica: %s cached=%v, %d RCPT", r.Class, r.Cached, srv.Count("RCPT"))
	}
}

// TestFleetSharesTheDomainRate: the per-domain rate is a fleet total.
func TestFleetSharesTheDomainRate(t *testing.T) {
	redis := testredis.Start(t)
	e := newEnv(t, "r2.test. 60 IN MX 10 mx.r2.test.", "mx.r2.test. 60 IN A 127.0.0.92")
	srv := e.smtp("127.0.0.92", nil)
	skips := map[string]int{}
	var mu sync.Mutex
	hooks := callout.Hooks{Skip: func(r string) { mu.Lock(); skips[r]++; mu.Unlock() }}
	cfg := callout.VerifierConfig{PerDomainRatePerMinute: 3}
	a, b := e.replica(redis, cfg, hooks), e.replica(redis, cfg, hooks)
	for i := range 6 {
		v := a
		if i%2 == 1 {
			v = b
		}
		v.Verify(context.Background(), fmt.Sprintf("u%d@r2.test", i))
	}
	mu.Lock()
	defer mu.Unlock()
	if srv.Count("RCPT") != 3 || skips["domain_rate"] != 3 {
		t.Errorf("6 addresses over two replicas at 3/min: %d RCPT, skips %v; want 3 and 3 domain_rate", srv.Count("RCPT"), skips)
	}
}

// TestFleetRidesOutARedisOutage: with Redis killed the replicas probe on
// their own within the budget; when it is back they share again.
func TestFleetRidesOutARedisOutage(t *testing.T) {
	redis := testredis.Start(t)
	e := newEnv(t, "o.test. 60 IN MX 10 mx.o.test.", "mx.o.test. 60 IN A 127.0.0.93")
	srv := e.smtp("127.0.0.93", nil)
	a, b := e.replica(redis, callout.VerifierConfig{}, callout.Hooks{}), e.replica(redis, callout.VerifierConfig{}, callout.Hooks{})
	redis.Stop()
	for i, v := range []*callout.Verifier{a, b} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		start := time.Now()
		r := v.Verify(ctx, fmt.Sprintf("down%d@o.test", i))
		cancel()
		if r.Class != callout.Exists || time.Since(start) > 2*time.Second {
			t.Errorf("replica %d during the outage: %s (%s) after %v", i, r.Class, r.Evidence(), time.Since(start))
		}
	}
	redis.Restart()
	time.Sleep(1500 * time.Millisecond) // the health checks find it
	before := srv.Count("RCPT")
	a.Verify(context.Background(), "back@o.test")
	if r := b.Verify(context.Background(), "back@o.test"); r.Class != callout.Exists || !r.Cached || srv.Count("RCPT") != before+1 {
		t.Errorf("after recovery: %s cached=%v, %d new RCPT (want one, shared)", r.Class, r.Cached, srv.Count("RCPT")-before)
	}
}

// BenchmarkFleetVerifyHit is the MAIL FROM path's cache hit with the
// store shared through Redis: the near-cache answers, Redis is not asked.
func BenchmarkFleetVerifyHit(b *testing.B) {
	v := benchReplica(b, testredis.Start(b))
	ctx := context.Background()
	v.Store().Set(ctx, "a:alice@example.com", cache.Entry{Kind: string(callout.Exists), Code: 250, Enhanced: "2.1.5", Stored: 1 << 40}, time.Hour)
	time.Sleep(2100 * time.Millisecond) // past the replica's own read-your-writes window
	if r := v.Verify(ctx, "alice@example.com"); !r.Cached || r.Class != callout.Exists {
		b.Fatalf("not a cache hit: %+v", r)
	}
	b.ReportAllocs()
	for b.Loop() {
		v.Verify(ctx, "alice@example.com")
	}
}

// BenchmarkFleetStoreMiss is one look-up that goes to Redis: a key no
// replica has seen (a new key each time, so the near-cache cannot answer).
func BenchmarkFleetStoreMiss(b *testing.B) {
	redis := testredis.Start(b)
	r, err := cache.NewRedis(cache.RedisOptions{URL: redis.URL(), Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		r.Get(ctx, fmt.Sprintf("a:user%d@miss.test", i))
	}
}

// BenchmarkFleetSixteenConcurrent: four replicas in one process sharing
// one Redis, 16 goroutines looking up 1,000 known senders.
func BenchmarkFleetSixteenConcurrent(b *testing.B) {
	redis := testredis.Start(b)
	var fleet []*callout.Verifier
	for range 4 {
		fleet = append(fleet, benchReplica(b, redis))
	}
	ctx := context.Background()
	for i := range 1000 {
		fleet[0].Store().Set(ctx, fmt.Sprintf("a:u%d@example.com", i), cache.Entry{Kind: "exists", Code: 250}, time.Hour)
	}
	b.SetParallelism(8) // 2 cores x 8 = 16 goroutines
	b.ReportAllocs()
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		i := int(n.Add(1))
		for pb.Next() {
			i++
			if r := fleet[i%4].Verify(ctx, fmt.Sprintf("u%d@example.com", i%1000)); r.Class != callout.Exists {
				b.Errorf("lookup: %s", r.Class)
				return
			}
		}
	})
}

// benchReplica is a verifier on a store shared through redis, with no
// prober: benchmarks of the cache path.
func benchReplica(b *testing.B, redis *testredis.Server) *callout.Verifier {
	m, err := cache.NewMemory(100000, nil, cache.Hooks{})
	if err != nil {
		b.Fatal(err)
	}
	store := cache.NewShared(func() (*cache.Redis, error) {
		return cache.NewRedis(cache.RedisOptions{URL: redis.URL(), Timeout: time.Second})
	}, m, cache.SharedHooks{}, nil)
	v := callout.NewVerifier(&callout.Prober{}, store, callout.VerifierConfig{GlobalConcurrency: 1, PerDomainConcurrency: 1, PerDomainRatePerMinute: 1}, callout.Hooks{}, nil)
	b.Cleanup(func() { v.Close(); store.Close() })
	return v
}

// staleNearCache is a replica's shared store whose reads of addresses
// miss, as when its near-cache still holds a miss whose invalidation has
// not arrived; leases, limits and fresh reads go to Redis.
type staleNearCache struct{ *cache.Shared }

func (s staleNearCache) Get(ctx context.Context, key string) (cache.Entry, time.Duration, bool, error) {
	if strings.HasPrefix(key, "a:") {
		return cache.Entry{}, 0, false, nil
	}
	return s.Shared.Get(ctx, key)
}

// TestFleetLeaseAfterAFinishedProbeReadsRedis is the interleaving that
// made a fleet probe one sender twice: replica A probes, stores the result
// and releases the lease; replica B, whose read missed on a stale
// near-cache, then wins the lease. B must read Redis itself and not probe.
func TestFleetLeaseAfterAFinishedProbeReadsRedis(t *testing.T) {
	redis := testredis.Start(t)
	e := newEnv(t, "st.test. 60 IN MX 10 mx.st.test.", "mx.st.test. 60 IN A 127.0.0.94")
	srv := e.smtp("127.0.0.94", func(s *testsmtp.Server) {
		s.Users = map[string]bool{"alice@st.test": true}
		s.BannerDelay = 0
	})
	a := e.replica(redis, callout.VerifierConfig{}, callout.Hooks{})
	if r := a.Verify(context.Background(), "alice@st.test"); r.Class != callout.Exists {
		t.Fatalf("replica A: %s", r.Class)
	}
	b := e.replicaOn(staleNearCache{e.sharedStore(redis)}, callout.VerifierConfig{}, callout.Hooks{})
	r := b.Verify(context.Background(), "alice@st.test")
	if r.Class != callout.Exists || !r.Cached || r.Step != "fleet" {
		t.Errorf("replica B: %s cached=%v step=%s, want exists from the fleet", r.Class, r.Cached, r.Step)
	}
	if n := srv.Count("RCPT"); n != 1 {
		t.Errorf("%d RCPT probes, want 1: replica B probed again after winning the lease", n)
	}
}

// TestFleetSharesThePerHostLimits: the per-host rate and concurrency are
// fleet totals, so two replicas give one mail host the budget the
// operator set, not twice it.
func TestFleetSharesThePerHostLimits(t *testing.T) {
	redis := testredis.Start(t)
	e := newEnv(t, sharedMX(8, "127.0.0.95")...)
	srv := e.smtp("127.0.0.95", func(s *testsmtp.Server) { s.BannerDelay = 0 })
	skips := map[string]int{}
	var mu sync.Mutex
	hooks := callout.Hooks{Skip: func(r string) { mu.Lock(); skips[r]++; mu.Unlock() }}
	gate := callout.GateConfig{PerHostRatePerMinute: 3, PerHostConcurrency: 1}
	a, b := e.replica(redis, callout.VerifierConfig{}, hooks, gate), e.replica(redis, callout.VerifierConfig{}, hooks, gate)
	for i := range 6 {
		v := a
		if i%2 == 1 {
			v = b
		}
		v.Verify(context.Background(), fmt.Sprintf("u@d%d.test", i))
	}
	mu.Lock()
	if srv.Conns() != 3 || skips["host_rate"] != 3 {
		t.Errorf("6 domains on one host over two replicas at 3/min: %d connections, skips %v; want 3 and 3 host_rate", srv.Conns(), skips)
	}
	mu.Unlock()

	// Concurrency: a host that holds its banner keeps the one slot; the
	// other replica's probe of another domain on it is refused meanwhile.
	e2 := newEnv(t, sharedMX(2, "127.0.0.96")...)
	slow := e2.smtp("127.0.0.96", func(s *testsmtp.Server) { s.BannerDelay = 700 * time.Millisecond })
	redis2 := testredis.Start(t) // the first part's results are cached in the first
	gate = callout.GateConfig{PerHostConcurrency: 1}
	c, d := e2.replica(redis2, callout.VerifierConfig{}, hooks, gate), e2.replica(redis2, callout.VerifierConfig{}, hooks, gate)
	done := make(chan struct{})
	go func() { defer close(done); c.Verify(context.Background(), "u@d0.test") }()
	for deadline := time.Now().Add(5 * time.Second); slow.Conns() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first replica never connected")
		}
	}
	d.Verify(context.Background(), "u@d1.test")
	<-done
	mu.Lock()
	defer mu.Unlock()
	if slow.Conns() != 1 || skips["host_concurrency"] != 1 {
		t.Errorf("one slot per host over two replicas: %d connections, skips %v; want 1 and one host_concurrency", slow.Conns(), skips)
	}
}
