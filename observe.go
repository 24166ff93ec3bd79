package resil

import (
	"context"
	"strconv"
	"time"
)

// Observer receives the events of a pipeline. Observe is called
// synchronously, on the goroutine that runs the stage reporting the event,
// never while any lock of resil is held and never while a stage holds a
// permit it could lose (a panicking observer's panic reaches the caller of
// Run, and every stage's state stays consistent). An Observer shared by
// several pipelines or goroutines must be safe for concurrent use; one that
// blocks delays only the call that reports to it.
type Observer interface {
	Observe(ctx context.Context, e Event)
}

// EventKind says what an Event reports. Its zero value is EventAttempt.
type EventKind int

const (
	// EventAttempt: an attempt is about to call fn. Attempt is its number.
	EventAttempt EventKind = iota
	// EventRetry: an attempt failed with Err and will be retried after
	// Delay. Attempt is the number of the attempt that failed.
	EventRetry
	// EventSuccess: the call (one Run) returned without error.
	EventSuccess
	// EventFailure: the call (one Run) returned Err.
	EventFailure
	// EventTimeout: a Timeout stage's own deadline ended the stages it
	// wraps; Err is the error it returned.
	EventTimeout
	// EventRejected: a stage refused the call without running what it
	// wraps; Err says which (ErrBreakerOpen, ErrBulkheadFull, ...).
	EventRejected
	// EventFallback: a Fallback stage served the call; Err is the error it
	// replaced.
	EventFallback
	// EventStateChange: a circuit breaker moved From a state To another
	// during this call.
	EventStateChange
)

var eventNames = [...]string{
	EventAttempt:     "attempt",
	EventRetry:       "retry",
	EventSuccess:     "success",
	EventFailure:     "failure",
	EventTimeout:     "timeout",
	EventRejected:    "rejected",
	EventFallback:    "fallback",
	EventStateChange: "state-change",
}

// String returns the kind's lower-case name ("attempt", "retry", "success",
// "failure", "timeout", "rejected", "fallback", "state-change"), or
// "EventKind(N)" for an unknown value.
func (k EventKind) String() string {
	if k >= 0 && int(k) < len(eventNames) {
		return eventNames[k]
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event is one thing a pipeline did. It is passed by value; fields that do
// not apply to its Kind are zero.
type Event struct {
	Pipeline string        // the name given with Named; "" when unnamed
	Kind     EventKind     // what happened
	Attempt  int           // the attempt, from 1, where it applies
	Err      error         // the error, where there is one
	Delay    time.Duration // the wait before the next attempt (EventRetry)
	Elapsed  time.Duration // time spent in the call (this Run) so far
	From, To BreakerState  // EventStateChange
}

// Named returns a copy of p whose events carry name in Event.Pipeline. It
// changes nothing else. The zero name is "".
func (p Pipeline[T]) Named(name string) Pipeline[T] {
	m := meta{name: name}
	if p.meta != nil {
		m.obs = p.meta.obs
	}
	p.meta = &m
	return p
}

// Observe returns a copy of p whose stages, those added before and those
// added after, report their events to o. A nil o removes the observer. A
// pipeline without an observer pays nothing for events: no clock read and
// no allocation.
func (p Pipeline[T]) Observe(o Observer) Pipeline[T] {
	m := meta{obs: o}
	if p.meta != nil {
		m.name = p.meta.name
	}
	p.meta = &m
	return p
}
