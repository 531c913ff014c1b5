package callout

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestRetryQueueOneGoroutineInOrder(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var ran []string
	q := newRetryQueue(ctx, func(j retryJob) { mu.Lock(); ran = append(ran, j.key); mu.Unlock() })
	before := runtime.NumGoroutine()
	for i := range 10000 {
		q.push(time.Now().Add(time.Hour+time.Duration(i)), retryJob{key: "later"})
	}
	now := time.Now()
	q.push(now.Add(200*time.Millisecond), retryJob{key: "second"})
	q.push(now.Add(100*time.Millisecond), retryJob{key: "first"})
	if g := runtime.NumGoroutine() - before; g > 2 {
		t.Errorf("%d goroutines for 10,002 pending re-probes", g)
	}
	time.Sleep(400 * time.Millisecond)
	mu.Lock()
	got := append([]string(nil), ran...)
	mu.Unlock()
	if len(got) != 2 || got[0] != "first" || got[1] != "second" || q.pending() != 10000 {
		t.Errorf("ran %v with %d pending; want first, second and 10000 pending", got, q.pending())
	}
	cancel()
	q.wait()
}
