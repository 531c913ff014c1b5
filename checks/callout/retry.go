package callout

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// retryJob is one background probe to run later.
type retryJob struct {
	a       Address
	key     string
	refresh bool
}

// retryQueue holds delayed background probes (greylist re-probes) in one
// timer queue served by one goroutine, however many are pending.
type retryQueue struct {
	ctx    context.Context
	launch func(retryJob)
	mu     sync.Mutex
	items  retryHeap
	wake   chan struct{}
	done   chan struct{}
}

type retryItem struct {
	at  time.Time
	job retryJob
}

type retryHeap []retryItem

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(retryItem)) }
func (h *retryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

func newRetryQueue(ctx context.Context, launch func(retryJob)) *retryQueue {
	q := &retryQueue{ctx: ctx, launch: launch, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go q.run()
	return q
}

func (q *retryQueue) push(at time.Time, j retryJob) {
	q.mu.Lock()
	heap.Push(&q.items, retryItem{at, j})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pending is the number of jobs waiting.
func (q *retryQueue) pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

func (q *retryQueue) run() {
	defer close(q.done)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		q.mu.Lock()
		now := time.Now()
		var due []retryJob
		for len(q.items) > 0 && !q.items[0].at.After(now) {
			due = append(due, heap.Pop(&q.items).(retryItem).job)
		}
		next := time.Hour
		if len(q.items) > 0 {
			next = q.items[0].at.Sub(now)
		}
		q.mu.Unlock()
		for _, j := range due {
			q.launch(j)
		}
		t.Reset(next)
		select {
		case <-q.ctx.Done():
			return
		case <-q.wake:
		case <-t.C:
		}
	}
}

// wait returns once the queue's goroutine has stopped (after ctx ended).
func (q *retryQueue) wait() { <-q.done }
