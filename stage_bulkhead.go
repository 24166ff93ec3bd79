package resil

import (
	"context"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// BulkheadPolicy configures a bulkhead. The zero value is valid: at most 10
// calls at once, and a call that finds no free slot is rejected at once.
type BulkheadPolicy struct {
	// MaxConcurrent is how many calls may run in the wrapped stages at
	// once. 0 means 10; values above math.MaxInt32 act as math.MaxInt32.
	// Negative is invalid.
	MaxConcurrent int
	// MaxWait is how long a call may queue for a slot before it fails with
	// ErrBulkheadFull. 0 means a call never queues: it finds a free slot or
	// is rejected at once. Negative is invalid.
	MaxWait time.Duration
}

// Validate returns nil when p is a valid policy, or an error naming the
// first invalid field and its value, with the message NewBulkhead would
// panic with. Use it for configuration loaded at run time.
func (p BulkheadPolicy) Validate() error {
	switch {
	case p.MaxConcurrent < 0:
		return configError("BulkheadPolicy.MaxConcurrent must be >= 0, got " + strconv.Itoa(p.MaxConcurrent))
	case p.MaxWait < 0:
		return configError("BulkheadPolicy.MaxWait must be >= 0, got " + p.MaxWait.String())
	}
	return nil
}

// ErrBulkheadFull is returned, as it is, for a call that found every slot
// of a bulkhead taken and could not get one within the policy's MaxWait.
// The wrapped stages did not run. IsTransient reports true for it: a slot
// may be free on a later try.
var ErrBulkheadFull error = &transientSentinel{sentinel{msg: "resil: bulkhead is full"}}

// Bulkhead limits how many calls run at once in the stages it guards, so
// that one slow dependency cannot take every goroutine (or connection) of
// its callers. Calls beyond the limit queue, first come first served, for
// up to MaxWait. Create it with NewBulkhead; the zero Bulkhead is not
// usable (Pipeline.Bulkhead refuses it). It is safe for concurrent use and may guard any number of
// pipelines of any T; they then share its slots.
//
// A call that finds a free slot and nobody queued takes it with one
// compare-and-swap and gives it back with another: no lock, no allocation.
// Only queuing takes the lock, and a freed slot then passes straight to the
// longest waiter, so a newcomer can never overtake the queue.
type Bulkhead struct {
	// state packs waiters<<32 | running. running counts slots taken (a
	// slot handed to a waiter stays taken); waiters counts the queue.
	// Invariant: waiters > 0 implies running == max, so "state < max" is
	// the whole fast-path test: no waiter and a free slot.
	state atomic.Uint64
	max   uint64        // MaxConcurrent, in [1, MaxInt32]; read-only
	wait  time.Duration // MaxWait; read-only

	mu sync.Mutex
	// Guarded by mu: the queue, oldest first. waiters in state is its
	// length and changes only under mu.
	head, tail *waiter
}

// waiter is a call queued for a slot.
type waiter struct {
	ready      chan struct{} // closed when the slot is handed over
	granted    bool          // set under mu with the hand-over
	prev, next *waiter
}

const oneWaiter = 1 << 32

// NewBulkhead returns a bulkhead with every slot free, configured by
// policy. It panics when policy is invalid (see BulkheadPolicy.Validate).
func NewBulkhead(policy BulkheadPolicy) *Bulkhead {
	mustValid(policy.Validate())
	n := policy.MaxConcurrent
	if n == 0 {
		n = 10
	}
	return &Bulkhead{max: uint64(min(n, math.MaxInt32)), wait: policy.MaxWait}
}

// tryAcquire takes a slot when one is free and nobody waits.
func (b *Bulkhead) tryAcquire() bool {
	for {
		s := b.state.Load()
		if s >= b.max { // full, or a queue to respect
			return false
		}
		if b.state.CompareAndSwap(s, s+1) {
			return true
		}
	}
}

// release gives a slot back, or hands it to the longest waiter.
func (b *Bulkhead) release() {
	for {
		s := b.state.Load()
		if s >= oneWaiter {
			b.releaseSlow()
			return
		}
		if b.state.CompareAndSwap(s, s-1) {
			return
		}
	}
}

// releaseSlow hands the slot to the oldest waiter, if one is still queued
// once the lock is held.
func (b *Bulkhead) releaseSlow() {
	b.mu.Lock()
	w := b.head
	if w == nil {
		// Every waiter left between the load and the lock: waiters is 0,
		// so no fast path will race with this decrement's meaning.
		b.state.Add(^uint64(0)) // running--
		b.mu.Unlock()
		return
	}
	b.unlink(w)
	w.granted = true
	b.state.Add(^uint64(oneWaiter - 1)) // waiters--; the slot stays taken, now w's
	b.mu.Unlock()
	close(w.ready)
}

// acquireSlow queues for a slot for up to MaxWait. It returns nil with a
// slot held, ErrBulkheadFull, or ctx.Err() when ctx ended first (its
// deadline coming as the slot is handed over or as MaxWait ends included:
// see admit).
func (b *Bulkhead) acquireSlow(ctx context.Context) error {
	if b.wait == 0 {
		// Nobody ever queues, so tryAcquire's failure was final: reject
		// without the lock.
		return ErrBulkheadFull
	}
	b.mu.Lock()
	// Under mu, waiters cannot change, and running only goes down if
	// there are no waiters (a fast release), so one CAS loop settles it.
	for {
		s := b.state.Load()
		if s < b.max {
			if b.state.CompareAndSwap(s, s+1) {
				b.mu.Unlock()
				return nil
			}
			continue
		}
		if b.state.CompareAndSwap(s, s+oneWaiter) {
			break
		}
	}
	w := &waiter{ready: make(chan struct{})}
	if b.tail == nil {
		b.head = w
	} else {
		b.tail.next = w
		w.prev = b.tail
	}
	b.tail = w
	b.mu.Unlock()

	timer := time.NewTimer(b.wait)
	defer timer.Stop()
	var err error
	select {
	case <-w.ready:
		return b.admit(ctx)
	case <-timer.C:
		err = ErrBulkheadFull
		if at, ok := deadlineAt(ctx); ok && at <= clock() {
			// The deadline came at the same instant (its timer may not
			// have fired yet): the context's end decides, as in admit.
			if err = ctx.Err(); err == nil {
				err = context.DeadlineExceeded
			}
		}
	case <-ctx.Done():
		err = ctx.Err()
	}
	b.mu.Lock()
	if w.granted {
		// The slot came at the same moment. Keep it on a timeout (it
		// arrived in time, just); give it on to the next waiter when ctx
		// ended, since the call will not run.
		b.mu.Unlock()
		if err == ErrBulkheadFull {
			return b.admit(ctx)
		}
		b.release()
		return err
	}
	b.unlink(w)
	b.state.Add(^uint64(oneWaiter - 1))
	b.mu.Unlock()
	return err
}

// admit takes the slot just handed to a waiter, unless ctx's deadline has
// come: the context then ended while the call queued, whether or not its
// timer has fired yet (the deadline and the hand-over may fall on the same
// instant, and nothing orders the two), so the slot goes on to the next
// waiter and the call returns ctx.Err(), context.DeadlineExceeded until
// the timer has set it. Only the deadline is read: a cancellation that
// comes after the hand-over finds the call running.
func (b *Bulkhead) admit(ctx context.Context) error {
	if at, ok := deadlineAt(ctx); ok && at <= clock() {
		b.release()
		if err := ctx.Err(); err != nil {
			return err
		}
		return context.DeadlineExceeded
	}
	return nil
}

// unlink removes w from the queue. b.mu must be held.
func (b *Bulkhead) unlink(w *waiter) {
	if w.prev == nil {
		b.head = w.next
	} else {
		w.prev.next = w.next
	}
	if w.next == nil {
		b.tail = w.prev
	} else {
		w.next.prev = w.prev
	}
	w.prev, w.next = nil, nil
}

type bulkheadStage[T any] struct {
	b     *Bulkhead
	inner stageFunc[T] // the stages it wraps; nil: fn itself
	_     linePad
}

// Bulkhead returns a pipeline that lets at most b's MaxConcurrent calls run
// in the stages added before it at once, across every pipeline that shares
// b. A call that finds no free slot queues for one, behind the calls
// already queued, for up to MaxWait; a freed slot goes to the call that has
// waited longest. A call that gets no slot in time fails with
// ErrBulkheadFull (reported as EventRejected); a call whose context ends
// while it queues returns ctx.Err() and leaves the queue. A deadline that
// comes at the very instant a slot is handed to the call, or at the instant
// MaxWait ends, has ended it too, though the context's timer may not have
// fired: the call returns ctx.Err() (context.DeadlineExceeded), not
// ErrBulkheadFull, and a slot handed over goes on to the next in line.
// A call whose context has already ended when it reaches the bulkhead
// returns ctx.Err() at once: it takes no slot and does not queue. None of
// these runs the wrapped stages.
//
// The slot is released however the wrapped stages end: a value, an error,
// a panic or runtime.Goexit. Calls run on the caller's goroutine. A call
// that finds a free slot and no queue takes no lock and allocates nothing.
// Bulkhead panics when b is nil or was not made by NewBulkhead (a zero
// Bulkhead).
func (p Pipeline[T]) Bulkhead(b *Bulkhead) Pipeline[T] {
	if b == nil {
		panic("resil: Bulkhead b must be non-nil, got nil")
	}
	if b.max == 0 {
		panic("resil: Bulkhead b must be made by NewBulkhead, got a zero Bulkhead")
	}
	return p.with(bulkheadStage[T]{b: b, inner: p.outer}.compile())
}

//go:noinline // see stageFunc
func (s bulkheadStage[T]) compile() stageFunc[T] {
	return func(ctx context.Context, n next[T]) (T, error) {
		b := s.b
		if err := ctx.Err(); err != nil {
			// The call could not use a slot: it takes none and does not
			// queue, as RateLimit takes no token for it.
			var zero T
			return zero, err
		}
		if !b.tryAcquire() {
			if err := b.acquireSlow(ctx); err != nil {
				if err == ErrBulkheadFull {
					n.emit(ctx, Event{Kind: EventRejected, Attempt: n.attempt, Err: err})
				}
				var zero T
				return zero, err
			}
		}
		// A deferred release also runs on a panic or runtime.Goexit. It is an
		// open-coded defer: a few nanoseconds, no allocation.
		defer b.release()
		return n.run(ctx, s.inner)
	}
}
