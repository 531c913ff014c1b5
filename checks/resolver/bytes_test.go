package resolver_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/checks/resolver"
	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/internal/testdns"
)

// wideTXT is a wildcard zone whose every name has a 61 x 255-byte TXT
// RRset (15.6 KB, read over TCP) with one SPF record among them: all an
// attacker needs to fill a cache counted in entries.
func wideTXT() []string {
	rrs := []string{`*.wide.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`}
	for i := range 60 {
		rrs = append(rrs, fmt.Sprintf(`*.wide.test. 300 IN TXT "%0255d"`, i))
	}
	return rrs
}

func TestCacheBytesBoundedUnderLargeRRsets(t *testing.T) {
	srv := testdns.Start(t, wideTXT()...)
	cases := []struct {
		name     string
		domains  int
		maxBytes int64
		keep     func(string) bool
		// what must hold at the end
		maxPerAnswer int64 // bytes one cached answer may take; 0: unchecked
		bytesEvicted bool
	}{
		// Production: only the SPF record of each RRset is kept, so 10,000
		// answers take little room.
		{name: "spf-only", domains: 10000, maxBytes: 64 << 20, keep: spf.IsRecord, maxPerAnswer: 200},
		// Keeping whole RRsets: the byte bound holds and evicts.
		{name: "whole-rrsets", domains: 2000, maxBytes: 4 << 20, bytesEvicted: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			evicted := map[string]int{}
			c, err := resolver.NewCached(&resolver.Stub{Servers: []string{srv.Addr}, Timeout: 5 * time.Second, Attempts: 1},
				resolver.CacheConfig{MaxBytes: tc.maxBytes, KeepTXT: tc.keep}, nil,
				cache.Hooks{Evicted: func(r string) { evicted[r]++ }})
			if err != nil {
				t.Fatal(err)
			}
			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for i := range tc.domains {
				a, err := c.Query(context.Background(), fmt.Sprintf("d%d.wide.test", i), dns.TypeTXT)
				if err != nil {
					t.Fatal(err)
				}
				if len(a.TXT)+a.OtherTXT != 61 {
					t.Fatalf("answer has %d kept + %d other TXT records, want 61", len(a.TXT), a.OtherTXT)
				}
				if tc.keep != nil && (len(a.TXT) != 1 || !strings.HasPrefix(a.TXT[0], "v=spf1 ")) {
					t.Fatalf("kept %d strings, want only the SPF record", len(a.TXT))
				}
			}
			var after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&after)
			grew := int64(after.HeapInuse) - int64(before.HeapInuse)
			t.Logf("%d answers cached, %d bytes counted, heap grew %.1f MiB, evictions %v", c.Len(), c.Bytes(), float64(grew)/(1<<20), evicted)
			if c.Bytes() > tc.maxBytes {
				t.Errorf("cache counts %d bytes, bound %d", c.Bytes(), tc.maxBytes)
			}
			if tc.maxPerAnswer > 0 && c.Bytes() > tc.maxPerAnswer*int64(c.Len()) {
				t.Errorf("%d bytes for %d answers: more than %d each", c.Bytes(), c.Len(), tc.maxPerAnswer)
			}
			if tc.bytesEvicted && evicted[cache.EvictBytes] == 0 {
				t.Errorf("no eviction for bytes: %v", evicted)
			}
			// The heap follows the count: at most twice the bound, plus
			// what the test itself holds.
			if grew > 2*tc.maxBytes+8<<20 {
				t.Errorf("heap grew %d MiB with a %d MiB bound", grew>>20, tc.maxBytes>>20)
			}
		})
	}
}
