package callout_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/internal/testsmtp"
)

// sharedMX is a zone of n sender domains that all use one mail host.
func sharedMX(n int, ip string) []string {
	zone := []string{"mx.shared.test. 60 IN A " + ip}
	for i := range n {
		zone = append(zone, fmt.Sprintf("d%d.test. 60 IN MX 10 mx.shared.test.", i))
	}
	return zone
}

func TestVerifierPerHostRateAcrossDomains(t *testing.T) {
	e := newEnv(t, sharedMX(5, "127.0.0.71")...)
	srv := e.smtp("127.0.0.71", nil)
	skips := map[string]int{}
	var mu sync.Mutex
	v := e.verifier(callout.VerifierConfig{}, callout.Hooks{
		Skip: func(r string) { mu.Lock(); skips[r]++; mu.Unlock() },
	}, callout.GateConfig{PerHostRatePerMinute: 3})
	for i := range 5 {
		v.Verify(context.Background(), fmt.Sprintf("u@d%d.test", i))
	}
	mu.Lock()
	defer mu.Unlock()
	if srv.Conns() != 3 || skips["host_rate"] != 2 {
		t.Errorf("5 domains on one host: %d connections, skips %v; want 3 and two host_rate", srv.Conns(), skips)
	}
}

func TestVerifierBreakerOpensOnSilentFailures(t *testing.T) {
	e := newEnv(t, sharedMX(6, "127.0.0.72")...)
	srv := e.smtp("127.0.0.72", func(s *testsmtp.Server) {
		s.Reply = func(*testsmtp.Server, string) string { return "DROP" } // drops after the banner
	})
	var trips atomic.Int32
	v := e.verifier(callout.VerifierConfig{}, callout.Hooks{Breaker: func() { trips.Add(1) }})
	for i := range 6 {
		if r := v.Verify(context.Background(), fmt.Sprintf("u@d%d.test", i)); r.Class != callout.Unknown {
			t.Fatalf("dropping host: %s", r.Class)
		}
	}
	if srv.Conns() != 3 || trips.Load() != 1 {
		t.Errorf("dropping host: %d connections, %d breaker trips; want 3 and 1", srv.Conns(), trips.Load())
	}
}

// TestVerifierTarpitsKeepHalfTheSlots: probes waiting for a banner past
// their patience hold at most half the global slots; more are cut off,
// and a host that answers is still probed.
func TestVerifierTarpitsKeepHalfTheSlots(t *testing.T) {
	zone := []string{"ok.test. 60 IN MX 10 mx.ok.test.", "mx.ok.test. 60 IN A 127.0.0.80"}
	for i := range 3 {
		zone = append(zone, fmt.Sprintf("pit%d.test. 60 IN MX 10 mx.pit%d.test.", i, i), fmt.Sprintf("mx.pit%d.test. 60 IN A 127.0.0.%d", i, 81+i))
	}
	e := newEnv(t, zone...)
	ok := e.smtp("127.0.0.80", nil)
	for i := range 3 {
		e.smtp(fmt.Sprintf("127.0.0.%d", 81+i), func(s *testsmtp.Server) { s.BannerDelay = 3 * time.Second })
	}
	skips := map[string]int{}
	var mu sync.Mutex
	v := e.verifier(callout.VerifierConfig{GlobalConcurrency: 3}, callout.Hooks{
		Skip: func(r string) { mu.Lock(); skips[r]++; mu.Unlock() },
	}, callout.GateConfig{BannerPatience: 100 * time.Millisecond})
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			v.Verify(ctx, fmt.Sprintf("u@pit%d.test", i))
		}()
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(150 * time.Millisecond) // all three past their patience
	r := v.Verify(context.Background(), "u@ok.test")
	if r.Class != callout.Exists || ok.Count("RCPT") != 1 {
		t.Errorf("answering host while tarpits wait: %s %s", r.Class, r.Evidence())
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	// Three slots: without the share, three tarpits would hold them all.
	if skips["unanswered_hosts"] != 2 {
		t.Errorf("skips %v, want two tarpits cut off (unanswered_hosts), one kept", skips)
	}
}

func TestGreylistAtRcptDoesNotTryTheNextHost(t *testing.T) {
	e := newEnv(t, "g2.test. 60 IN MX 10 mx1.g2.test.", "g2.test. 60 IN MX 20 mx2.g2.test.",
		"mx1.g2.test. 60 IN A 127.0.0.73", "mx2.g2.test. 60 IN A 127.0.0.74")
	e.smtp("127.0.0.73", func(s *testsmtp.Server) {
		s.Reply = func(_ *testsmtp.Server, cmd string) string {
			if strings.HasPrefix(cmd, "RCPT") {
				return "451 4.7.1 Greylisted, try later"
			}
			return ""
		}
	})
	second := e.smtp("127.0.0.74", nil)
	if r := e.probe("u@g2.test"); r.Class != callout.Unknown || r.Step != "rcpt" {
		t.Fatalf("greylisted: %s at %s", r.Class, r.Step)
	}
	if second.Conns() != 0 {
		t.Errorf("second MX got %d connections after a 4xx at RCPT", second.Conns())
	}
}
