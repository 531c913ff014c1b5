package callout_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/internal/testsmtp"
)

func (e *env) verifier(cfg callout.VerifierConfig, hooks callout.Hooks, gate ...callout.GateConfig) *callout.Verifier {
	store, err := cache.NewMemory(1000, nil, cache.Hooks{})
	if err != nil {
		e.t.Fatal(err)
	}
	def := callout.VerifierConfig{TTLExists: time.Hour, TTLNotExists: time.Hour, TTLUnknown: time.Minute,
		GreylistRetry: time.Hour, ProbeTimeout: 5 * time.Second,
		GlobalConcurrency: 10, PerDomainConcurrency: 10, PerDomainRatePerMinute: 100}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = def.ProbeTimeout
	}
	for _, f := range []struct {
		dst *time.Duration
		d   time.Duration
	}{{&cfg.TTLExists, def.TTLExists}, {&cfg.TTLNotExists, def.TTLNotExists},
		{&cfg.TTLUnknown, def.TTLUnknown}, {&cfg.GreylistRetry, def.GreylistRetry}} {
		if *f.dst == 0 {
			*f.dst = f.d
		}
	}
	for _, f := range []struct {
		dst *int
		d   int
	}{{&cfg.GlobalConcurrency, 10}, {&cfg.PerDomainConcurrency, 10}, {&cfg.PerDomainRatePerMinute, 100}} {
		if *f.dst == 0 {
			*f.dst = f.d
		}
	}
	return e.wire(store, cfg, hooks, gate)
}

// wire builds a verifier on store as cmd/senderguard does: its prober's
// gate on the same store (gate, when given, sets its limits).
func (e *env) wire(store cache.Store, cfg callout.VerifierConfig, hooks callout.Hooks, gate []callout.GateConfig) *callout.Verifier {
	var g callout.GateConfig
	if len(gate) > 0 {
		g = gate[0]
	}
	if g.BreakerTTL == 0 {
		g.BreakerTTL = time.Hour
	}
	if g.Tarpits == 0 {
		g.Tarpits = max(cfg.GlobalConcurrency/2, 1)
	}
	g.Hold = cfg.ProbeTimeout + callout.FleetMargin
	p := e.prober()
	p.Gate = callout.NewGate(store, g, hooks, nil)
	v := callout.NewVerifier(p, store, cfg, hooks, nil)
	e.t.Cleanup(v.Close)
	return v
}

func TestVerifierMergesAndCaches(t *testing.T) {
	e := newEnv(t, "a.test. 60 IN MX 10 mx.a.test.", "mx.a.test. 60 IN A 127.0.0.51")
	srv := e.smtp("127.0.0.51", func(s *testsmtp.Server) {
		s.Users = map[string]bool{"alice@a.test": true}
		s.Reply = func(_ *testsmtp.Server, cmd string) string {
			if strings.HasPrefix(cmd, "RCPT") {
				time.Sleep(200 * time.Millisecond) // let concurrent callers pile up
			}
			return ""
		}
	})
	var probes atomic.Int32
	v := e.verifier(callout.VerifierConfig{}, callout.Hooks{Probe: func(callout.Class, time.Duration) { probes.Add(1) }})
	var wg sync.WaitGroup
	results := make([]*callout.Result, 20)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = v.Verify(context.Background(), "alice@a.test")
		}()
	}
	wg.Wait()
	for i := 0; i < 5; i++ {
		results = append(results, v.Verify(context.Background(), "alice@a.test"))
	}
	// BATV tags collapse into the same entry.
	results = append(results, v.Verify(context.Background(), "prvs=1234abcdef=alice@a.test"))
	for i, r := range results {
		if r.Class != callout.Exists {
			t.Errorf("result %d: %s %s", i, r.Class, r.Evidence())
		}
	}
	if !results[len(results)-1].Cached {
		t.Errorf("BATV variant not answered from the cache")
	}
	if n := srv.Count("RCPT"); n != 1 || probes.Load() != 1 {
		t.Errorf("server saw %d RCPT and %d probes ran, want 1 and 1", n, probes.Load())
	}
}

func TestVerifierAsyncAnswersInProgressThenFromCache(t *testing.T) {
	e := newEnv(t, "slow.test. 60 IN MX 10 mx.slow.test.", "mx.slow.test. 60 IN A 127.0.0.52")
	srv := e.smtp("127.0.0.52", func(s *testsmtp.Server) { s.BannerDelay = 700 * time.Millisecond; s.Users = map[string]bool{} })
	v := e.verifier(callout.VerifierConfig{Async: true}, callout.Hooks{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if r := v.Verify(ctx, "ghost@slow.test"); r.Class != callout.InProgress || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("first: %s after %v, want in-progress within the budget", r.Class, time.Since(start))
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		r := v.Verify(context.Background(), "ghost@slow.test")
		if r.Cached {
			if r.Class != callout.NotExists || r.Reply == nil || r.Reply.Code != 550 {
				t.Fatalf("cached: %s %s", r.Class, r.Evidence())
			}
			if srv.Count("RCPT") != 1 {
				t.Errorf("RCPT count %d, want 1", srv.Count("RCPT"))
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("background probe never filled the cache")
}

func TestVerifierGreylistReprobeFillsCache(t *testing.T) {
	e := newEnv(t, "grey.test. 60 IN MX 10 mx.grey.test.", "mx.grey.test. 60 IN A 127.0.0.53")
	var rcpts atomic.Int32
	e.smtp("127.0.0.53", func(s *testsmtp.Server) {
		s.Reply = func(_ *testsmtp.Server, cmd string) string {
			if strings.HasPrefix(cmd, "RCPT") && rcpts.Add(1) == 1 {
				return "450 4.2.0 Greylisted"
			}
			return ""
		}
	})
	v := e.verifier(callout.VerifierConfig{GreylistRetry: 300 * time.Millisecond}, callout.Hooks{})
	if r := v.Verify(context.Background(), "u@grey.test"); r.Class != callout.Unknown {
		t.Fatalf("first: %s", r.Class)
	}
	time.Sleep(1 * time.Second)
	r := v.Verify(context.Background(), "u@grey.test")
	if r.Class != callout.Exists || !r.Cached || rcpts.Load() != 2 {
		t.Fatalf("after retry: %s cached=%v rcpts=%d", r.Class, r.Cached, rcpts.Load())
	}
}

func TestVerifierBreakerAndLimits(t *testing.T) {
	e := newEnv(t, "refuse.test. 60 IN MX 10 mx.refuse.test.", "mx.refuse.test. 60 IN A 127.0.0.54",
		"other.test. 60 IN MX 10 mx.refuse.test.",
		"rate.test. 60 IN MX 10 mx.rate.test.", "mx.rate.test. 60 IN A 127.0.0.55")
	refusing := e.smtp("127.0.0.54", func(s *testsmtp.Server) { s.Banner = "554 5.7.1 Go away" })
	rate := e.smtp("127.0.0.55", nil)
	var trips atomic.Int32
	skips := map[string]int{}
	var mu sync.Mutex
	v := e.verifier(callout.VerifierConfig{PerDomainRatePerMinute: 2}, callout.Hooks{
		Breaker: func() { trips.Add(1) },
		Skip:    func(r string) { mu.Lock(); skips[r]++; mu.Unlock() },
	})
	if r := v.Verify(context.Background(), "a@refuse.test"); r.Class != callout.Unknown {
		t.Fatalf("refused: %s", r.Class)
	}
	// The domain and its host are left alone now: other addresses, and
	// other domains on the same host, make no connection.
	for _, a := range []string{"b@refuse.test", "c@other.test"} {
		if r := v.Verify(context.Background(), a); r.Class != callout.Unknown {
			t.Errorf("%s: %s", a, r.Class)
		}
	}
	if refusing.Conns() != 1 || trips.Load() != 1 {
		t.Errorf("refusing host: %d connections, %d breaker trips; want 1 and 1", refusing.Conns(), trips.Load())
	}
	for _, a := range []string{"1@rate.test", "2@rate.test", "3@rate.test"} {
		v.Verify(context.Background(), a)
	}
	mu.Lock()
	defer mu.Unlock()
	if rate.Count("RCPT") != 2 || skips["domain_rate"] != 1 {
		t.Errorf("rate-limited domain: %d RCPT, skips %v; want 2 and one domain_rate", rate.Count("RCPT"), skips)
	}
}

func TestVerifierRefreshKeepsPositiveOnTemporaryFailure(t *testing.T) {
	e := newEnv(t, "r.test. 60 IN MX 10 mx.r.test.", "mx.r.test. 60 IN A 127.0.0.56")
	var mode atomic.Value
	mode.Store("")
	srv := e.smtp("127.0.0.56", func(s *testsmtp.Server) {
		s.Reply = func(_ *testsmtp.Server, cmd string) string {
			if strings.HasPrefix(cmd, "RCPT") {
				return mode.Load().(string)
			}
			return ""
		}
	})
	v := e.verifier(callout.VerifierConfig{RefreshAfter: time.Second}, callout.Hooks{})
	ctx := context.Background()
	if r := v.Verify(ctx, "u@r.test"); r.Class != callout.Exists {
		t.Fatalf("first: %s", r.Class)
	}
	waitRCPT := func(n int) {
		t.Helper()
		for i := 0; i < 50 && srv.Count("RCPT") < n; i++ {
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond) // let the refresh store its result
		if got := srv.Count("RCPT"); got != n {
			t.Fatalf("%d RCPT, want %d", got, n)
		}
	}
	// An old positive entry is served and refreshed in the background; a
	// refresh that fails temporarily keeps it.
	mode.Store("451 4.3.0 try later")
	time.Sleep(2100 * time.Millisecond)
	if r := v.Verify(ctx, "u@r.test"); r.Class != callout.Exists || !r.Cached {
		t.Fatalf("old entry: %s cached=%v", r.Class, r.Cached)
	}
	waitRCPT(2)
	// A refresh that learns the address is gone replaces it. The entry is
	// still old, so this look-up answers from it and refreshes again.
	mode.Store("550 5.1.1 gone")
	if r := v.Verify(ctx, "u@r.test"); r.Class != callout.Exists {
		t.Fatalf("after failed refresh: %s", r.Class)
	}
	waitRCPT(3)
	if r := v.Verify(ctx, "u@r.test"); r.Class != callout.NotExists {
		t.Fatalf("after refresh: %s", r.Class)
	}
}

func TestVerifierConcurrencyLimits(t *testing.T) {
	e := newEnv(t, "c.test. 60 IN MX 10 mx.c.test.", "mx.c.test. 60 IN A 127.0.0.57",
		"d.test. 60 IN MX 10 mx.c.test.")
	srv := e.smtp("127.0.0.57", func(s *testsmtp.Server) {
		s.Reply = func(_ *testsmtp.Server, cmd string) string {
			if strings.HasPrefix(cmd, "RCPT") {
				time.Sleep(300 * time.Millisecond)
			}
			return ""
		}
	})
	skips := map[string]int{}
	var mu sync.Mutex
	v := e.verifier(callout.VerifierConfig{PerDomainConcurrency: 1, GlobalConcurrency: 2}, callout.Hooks{
		Skip: func(r string) { mu.Lock(); skips[r]++; mu.Unlock() },
	})
	var wg sync.WaitGroup
	// Two different addresses at c.test at once: one probe, one skipped;
	// then a third domain-distinct probe fills the global limit of 2 and a
	// fourth is refused by it.
	addrs := []string{"1@c.test", "2@c.test", "3@d.test"}
	for i, a := range addrs {
		wg.Add(1)
		go func() { defer wg.Done(); v.Verify(context.Background(), a) }()
		time.Sleep(time.Duration(i+1) * 30 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if r := v.Verify(context.Background(), "4@e.test"); r.Class != callout.Unknown || !strings.Contains(r.Evidence(), "global_concurrency") {
		t.Errorf("fourth probe: %s %s", r.Class, r.Evidence())
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if skips["domain_concurrency"] != 1 || skips["global_concurrency"] != 1 || srv.Count("RCPT") != 2 {
		t.Errorf("skips %v, %d RCPT; want one of each and 2 RCPT", skips, srv.Count("RCPT"))
	}
}
