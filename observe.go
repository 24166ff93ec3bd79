package resil

import (
	"context"
	"strconv"
	"time"
)

// Observer receives the events of a pipeline. Observe is called
// synchronously, on the goroutine that runs the stage reporting the event
// (for the core stages, the caller of Run), before that stage goes on: the
// events of a call whose stages run on one goroutine arrive in the order
// they happened. It is never called while a lock of resil is held, nor
// where a panic could lose what a stage holds: a panicking observer's panic
// reaches the caller of Run with every stage's state consistent (a
// breaker's trial place is given back, a timeout's timer stopped). An
// observer that blocks delays the call that reports to it, which keeps what
// it holds meanwhile (a half-open breaker's trial place, a bulkhead's slot,
// so calls queued for that slot wait too), and takes no lock other calls
// need. Events of concurrent calls
// interleave and carry no call identity, so an Observer shared by several
// pipelines or goroutines must be safe for concurrent use and should treat
// each event on its own. Events are passed by value; an Observer may keep
// them. Stages inside a Hedge report from the attempts' goroutines, and an
// attempt that lost the race may still report after Run has returned (see
// EventSuccess). A nil Observer is no observer: Observe(nil) removes one.
type Observer interface {
	// Observe receives e, reported by a stage of a call made with ctx (the
	// context the reporting stage received).
	Observe(ctx context.Context, e Event)
}

// EventKind says what an Event reports. Its zero value is EventAttempt.
type EventKind int

const (
	// EventAttempt: an attempt is about to call fn (every stage has let it
	// through). Attempt is its number as the nearest Retry or Hedge around
	// it counts them (a Hedge inside a Retry numbers its attempts from 1
	// within each of the Retry's); 1 when there is none.
	EventAttempt EventKind = iota
	// EventRetry: an attempt failed with Err and will be retried after
	// Delay, OnRetry having run: it is reported once the retry is granted
	// and fits its bounds. The retry is still not made when the context
	// ends during the wait, or when the observer itself takes the time the
	// wait had left. Attempt is the number of the attempt that failed.
	EventRetry
	// EventSuccess: the call (one Run) returned without error. It is the
	// call's last event, except for the events of stages inside a Hedge
	// whose attempt lost the race and was still running when Run returned:
	// they arrive when that attempt ends (a Breaker inside the Hedge may
	// report its late failure, and an EventStateChange it causes, though it
	// ignores an unmarked error of an attempt the Hedge cancelled: see
	// ErrHedgeLost), from the attempt's goroutine.
	EventSuccess
	// EventFailure: the call (one Run) returned Err. It is the call's last
	// event, with the same exception as EventSuccess for stages inside a
	// Hedge. A call ended by a panic reports neither EventSuccess nor
	// EventFailure.
	EventFailure
	// EventTimeout: a Timeout stage's own deadline ended the stages it
	// wraps; Err is the error it returned (it matches ErrTimeout). Attempt
	// is the attempt it cut short when a Retry or Hedge is around the
	// Timeout (numbered as for EventAttempt), and 0 when none is (the
	// Timeout bounds the whole call).
	EventTimeout
	// EventRejected: a stage refused the call without running what it
	// wraps, or a Retry stage's budget refused a retry; Err says which
	// (ErrBreakerOpen, ErrBulkheadFull, ErrRateLimited,
	// ErrRetryBudgetExhausted, a Chaos fault). Attempt is the attempt
	// refused when a Retry or Hedge is around the stage (numbered as for
	// EventAttempt) and 0 when none is; for a refused retry, the attempt
	// whose retry it was.
	EventRejected
	// EventFallback: a Fallback stage served the call; Err is the error it
	// replaced.
	EventFallback
	// EventStateChange: a circuit breaker moved From a state To another,
	// and this call made the move, or the breaker's fleet made it (a
	// breaker made by NewSharedBreaker, moved through its BreakerLink) and
	// this call is the breaker's first since, which reports the fleet's
	// moves before its own events. It is reported to the pipeline of that
	// call only: a move made by another pipeline sharing the breaker, or by
	// Breaker.State, is not (BreakerPolicy.OnStateChange sees every move).
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

// Event is one thing a pipeline did. It is passed by value (an Observer may
// keep it, and sharing it between goroutines is safe); fields that do not
// apply to its Kind are zero. The zero Event is an EventAttempt of an
// unnamed pipeline with nothing else set.
type Event struct {
	Pipeline string        // the name given with Named; "" when unnamed
	Kind     EventKind     // what happened
	Attempt  int           // the attempt, from 1, where it applies
	Err      error         // the error, where there is one
	Delay    time.Duration // the wait before the next attempt (EventRetry)
	Elapsed  time.Duration // time spent in the call (this Run) so far
	From, To BreakerState  // EventStateChange
	// Seq numbers an EventStateChange's move among the moves of every
	// breaker in the process, from 1: a later move has a larger Seq (of the
	// same breaker always; of two breakers, as their moves were made).
	// Calls report their moves after making them, each on its own
	// goroutine, so reports of concurrent calls may arrive in another
	// order than the moves: an observer that keeps a breaker's current
	// state (a gauge) keeps the report with the largest Seq. Moves that
	// undo each other before any call reports them (a fleet's, see
	// EventStateChange) are not reported, so numbers may be skipped. 0 for
	// other kinds.
	Seq uint64
}

// Named returns a copy of p whose events carry name in Event.Pipeline,
// leaving p unchanged, as every stage method does. It changes nothing else:
// without an observer, the name goes nowhere. A pipeline's name is "" until
// Named sets it.
func (p Pipeline[T]) Named(name string) Pipeline[T] {
	m := meta{name: name}
	if p.meta != nil {
		m.obs = p.meta.obs
	}
	p.meta = &m
	return p
}

// Observe returns a copy of p whose stages, those added before and those
// added after, report their events to o, in place of any observer p had. A
// nil o removes the observer. A pipeline without an observer pays nothing
// for events: no clock read and no allocation. With one, each event costs
// a clock read and the call to o, and allocates nothing of its own.
func (p Pipeline[T]) Observe(o Observer) Pipeline[T] {
	m := meta{obs: o}
	if p.meta != nil {
		m.name = p.meta.name
	}
	p.meta = &m
	return p
}

// MultiObserver returns an Observer that passes each event to every one of
// obs, in the order given, synchronously on the goroutine that reports it:
// a pipeline has one observer (Observe replaces it), and this is how it
// reports to several, such as SlogObserver and a metrics observer. Nil
// entries are skipped, and a MultiObserver among obs is flattened into the
// new one. With no non-nil entry the result is nil, which Observe takes as
// no observer (so the pipeline pays nothing for events); with one, it is
// that observer itself. A panic in one observer propagates as it would from
// a single observer, and the observers after it do not see that event.
func MultiObserver(obs ...Observer) Observer {
	var all multiObserver
	for _, o := range obs {
		switch o := o.(type) {
		case nil:
		case multiObserver:
			all = append(all, o...)
		default:
			all = append(all, o)
		}
	}
	switch len(all) {
	case 0:
		return nil
	case 1:
		return all[0]
	}
	return all
}

// multiObserver is what MultiObserver returns for two or more observers.
// It is never modified after MultiObserver builds it.
type multiObserver []Observer

func (m multiObserver) Observe(ctx context.Context, e Event) {
	for _, o := range m {
		o.Observe(ctx, e)
	}
}
