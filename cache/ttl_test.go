package cache

import (
	"testing"
	"time"
)

func TestSizedTTLBoundsBytes(t *testing.T) {
	clock := &stepClock{now: time.Unix(1e9, 0)}
	reasons := map[string]int{}
	c, err := NewSizedTTL[string, string](100, 100, func(k, v string) int64 { return int64(len(v)) }, clock,
		Hooks{Evicted: func(r string) { reasons[r]++ }})
	if err != nil {
		t.Fatal(err)
	}
	c.Add("a", string(make([]byte, 40)), time.Minute)
	c.Add("b", string(make([]byte, 40)), time.Minute)
	if c.Bytes() != 80 || c.Len() != 2 {
		t.Fatalf("bytes %d len %d, want 80 and 2", c.Bytes(), c.Len())
	}
	c.Add("a", string(make([]byte, 10)), time.Minute) // replaced: 50 bytes
	if c.Bytes() != 50 {
		t.Fatalf("after replacing a: %d bytes, want 50", c.Bytes())
	}
	c.Add("c", string(make([]byte, 60)), time.Minute) // 110 > 100: b (oldest) goes
	if _, _, ok := c.Get("b"); ok || c.Bytes() != 70 || reasons[EvictBytes] != 1 {
		t.Fatalf("b kept=%v bytes=%d reasons=%v, want b evicted for bytes, 70 bytes", ok, c.Bytes(), reasons)
	}
	c.Add("huge", string(make([]byte, 101)), time.Minute) // larger than the bound: not kept
	if _, _, ok := c.Get("huge"); ok || c.Bytes() != 70 {
		t.Fatalf("a value over the whole bound was kept (bytes %d)", c.Bytes())
	}
	clock.now = clock.now.Add(2 * time.Minute)
	if _, _, ok := c.Get("c"); ok || c.Bytes() != 10 || reasons[EvictExpired] != 1 {
		t.Fatalf("expired c: kept=%v bytes=%d reasons=%v", ok, c.Bytes(), reasons)
	}
}

func TestSizedTTLEntryBoundReason(t *testing.T) {
	reasons := map[string]int{}
	c, err := NewSizedTTL[int, int](2, 1000, func(int, int) int64 { return 1 }, nil, Hooks{Evicted: func(r string) { reasons[r]++ }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		c.Add(i, i, time.Minute)
	}
	if reasons[EvictEntries] != 3 || c.Bytes() != 2 {
		t.Fatalf("reasons %v bytes %d, want 3 entry evictions and 2 bytes", reasons, c.Bytes())
	}
}
