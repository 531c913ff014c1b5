package callout

import (
	"fmt"
	"testing"
	"time"
)

func TestKeyedLimiter(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := newKeyedLimiter(2, 3, func() time.Time { return now })
	steps := []struct {
		op, key string
		want    string
	}{
		{"acquire", "a", ""},
		{"acquire", "a", ""},
		{"acquire", "a", limitConcurrency},
		{"release", "a", ""},
		{"acquire", "a", ""},
		{"release", "a", ""},
		{"acquire", "a", limitRate}, // 3 started this minute
		{"acquire", "b", ""},        // another key is not limited
		{"tick", "", ""},            // a minute later: a new window
		{"release", "a", ""},
		{"acquire", "a", ""},
	}
	for i, s := range steps {
		got := ""
		switch s.op {
		case "acquire":
			got = l.acquire(s.key)
		case "release":
			l.release(s.key)
		case "tick":
			now = now.Add(time.Minute)
		}
		if got != s.want {
			t.Fatalf("step %d %s %s: got %q, want %q", i, s.op, s.key, got, s.want)
		}
	}
}

func TestKeyedLimiterForgetsIdleKeys(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := newKeyedLimiter(1, 1, func() time.Time { return now })
	for i := range 5000 {
		l.acquire(fmt.Sprint(i))
		l.release(fmt.Sprint(i))
	}
	l.acquire("busy") // still in flight when its window ends
	now = now.Add(time.Minute)
	l.acquire("new")
	if n := l.size(); n != 2 {
		t.Fatalf("%d keys remembered, want busy and new", n)
	}
	l.release("busy")
	if n := l.size(); n != 1 {
		t.Fatalf("%d keys after busy ended, want 1", n)
	}
}

// BenchmarkLimiterBurst is a probe-heavy flood: every probe at its own
// domain, three successive bursts of 100,000 domains a minute apart's
// worth of clock. ns/op must stay flat from burst to burst (it grew with
// the number of domains when each new one swept the whole map).
func BenchmarkLimiterBurst(b *testing.B) {
	for burst := range 3 {
		b.Run(fmt.Sprintf("burst%d", burst+1), func(b *testing.B) {
			now := time.Unix(1e9, 0)
			l := newKeyedLimiter(2, 20, func() time.Time { return now })
			keys := make([]string, 100000)
			for i := range keys {
				keys[i] = fmt.Sprintf("d%d.burst.test", i)
			}
			// Earlier bursts fill the limiter as a running service's would.
			for range burst {
				for _, k := range keys {
					l.acquire(k)
					l.release(k)
				}
				now = now.Add(30 * time.Second)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				k := keys[i%len(keys)]
				l.acquire(k)
				l.release(k)
				i++
				if i%len(keys) == 0 {
					now = now.Add(30 * time.Second)
				}
			}
		})
	}
}
