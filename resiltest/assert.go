package resiltest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/resil-go/resil"
)

// TB is the part of testing.TB the assertions use. *testing.T,
// *testing.B and *testing.F satisfy it, as does any type with these two
// methods. The assertions report with Errorf and return whether they
// passed, as testify's assert functions do: stop with t.FailNow when a
// check must hold for the rest of a test. The assertions need a non-nil
// TB: they panic when given nil.
type TB interface {
	// Helper marks the calling assertion as a test helper, so that a
	// failure is reported at the line of the test that called it.
	Helper()
	// Errorf reports a failed check, formatted as fmt.Sprintf does, and
	// lets the test go on.
	Errorf(format string, args ...any)
}

// Transition is one state change of a circuit breaker, as a BreakerLog
// recorded it. The zero Transition records no change (closed to closed at
// the zero time).
type Transition struct {
	At   time.Time          // when OnStateChange reported it
	From resil.BreakerState // the state the breaker left
	To   resil.BreakerState // the state the breaker entered

	seq uint64 // its order among call starts, see Call.seq
}

// BreakerLog records the state changes of a resil.Breaker: pass its
// OnStateChange method as BreakerPolicy.OnStateChange. Its zero value is
// an empty log, ready to use; it is safe for concurrent use. It must not be
// copied after first use.
type BreakerLog struct {
	mu sync.Mutex
	ts []Transition
}

// OnStateChange records the transition from → to, at time.Now(). Its
// signature is that of BreakerPolicy.OnStateChange.
func (l *BreakerLog) OnStateChange(from, to resil.BreakerState) {
	l.mu.Lock()
	// Dated and numbered under the lock, so that transitions are kept in
	// the order they were recorded (see Fake.Call).
	t := Transition{At: time.Now(), From: from, To: to, seq: seq.Add(1)}
	l.ts = append(l.ts, t)
	l.mu.Unlock()
}

// Transitions returns a copy of the transitions recorded so far, in order.
func (l *BreakerLog) Transitions() []Transition {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Transition(nil), l.ts...)
}

// States returns the states the breaker moved to, in order.
func (l *BreakerLog) States() []resil.BreakerState {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]resil.BreakerState, len(l.ts))
	for i, t := range l.ts {
		out[i] = t.To
	}
	return out
}

// Waits returns the pauses between consecutive calls of r: the i-th is the
// time from the end of call i to the start of call i+1 (for a Retry, its
// backoff). A call still running ends the list. It is meant for calls made
// one after another. It panics when r is nil.
func Waits(r Recorder) []time.Duration {
	if r == nil {
		panic("resiltest: Waits r must be non-nil, got nil")
	}
	calls := r.Calls()
	var out []time.Duration
	for i := 0; i+1 < len(calls); i++ {
		if calls[i].End.IsZero() {
			break
		}
		out = append(out, calls[i+1].Start.Sub(calls[i].End))
	}
	return out
}

// AssertAttempts checks that r was called want times, and reports an error
// to t when not. It returns whether the check passed. It panics when t or
// r is nil.
func AssertAttempts(t TB, r Recorder, want int) bool {
	if t == nil {
		panic("resiltest: AssertAttempts t must be non-nil, got nil")
	}
	if r == nil {
		panic("resiltest: AssertAttempts r must be non-nil, got nil")
	}
	t.Helper()
	if got := len(r.Calls()); got != want {
		t.Errorf("resiltest: want %d attempts, got %d", want, got)
		return false
	}
	return true
}

// AssertWaits checks that the pauses between consecutive calls of r (see
// Waits) are exactly want, in order, and reports an error to t when not.
// Exact waits are what a testing/synctest bubble gives, where time is fake
// and a backoff of 100ms is a pause of 100ms; outside a bubble, compare
// Waits(r) with a tolerance instead. It returns whether the check passed.
// It panics when t or r is nil.
func AssertWaits(t TB, r Recorder, want ...time.Duration) bool {
	if t == nil {
		panic("resiltest: AssertWaits t must be non-nil, got nil")
	}
	if r == nil {
		panic("resiltest: AssertWaits r must be non-nil, got nil")
	}
	t.Helper()
	got := Waits(r)
	if !slices.Equal(got, want) {
		t.Errorf("resiltest: want waits %v between attempts, got %v", fmtDurations(want), fmtDurations(got))
		return false
	}
	return true
}

func fmtDurations(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

// AssertBreakerStates checks that the breaker l records moved to the states
// want, in that order (StateOpen, StateHalfOpen, StateClosed for a trip and
// a recovery), and reports an error to t when not. It returns whether the
// check passed. It panics when t or l is nil.
func AssertBreakerStates(t TB, l *BreakerLog, want ...resil.BreakerState) bool {
	if t == nil {
		panic("resiltest: AssertBreakerStates t must be non-nil, got nil")
	}
	if l == nil {
		panic("resiltest: AssertBreakerStates l must be non-nil, got nil")
	}
	t.Helper()
	got := l.States()
	if !slices.Equal(got, want) {
		t.Errorf("resiltest: want breaker states %v, got %v", want, got)
		return false
	}
	return true
}

// AssertNoCallWhileOpen checks that no call of r started while the breaker
// l records was open, that is after a transition to StateOpen and before
// the next transition, and reports each such call to t. It returns whether
// the check passed. It panics when t, r or l is nil.
//
// Call starts and transitions are compared by the order in which they were
// recorded, not by their times, so calls made in the same instant of a
// synctest bubble are ordered right. The check is exact for calls made one
// after another; with concurrent calls, a call admitted just before the
// breaker opened may start its function just after and be reported, and
// so may a half-open trial admitted while another call is still reporting
// the open → half-open transition (the log records a transition when
// OnStateChange is called, and other calls do not wait for that).
func AssertNoCallWhileOpen(t TB, r Recorder, l *BreakerLog) bool {
	if t == nil {
		panic("resiltest: AssertNoCallWhileOpen t must be non-nil, got nil")
	}
	if r == nil {
		panic("resiltest: AssertNoCallWhileOpen r must be non-nil, got nil")
	}
	if l == nil {
		panic("resiltest: AssertNoCallWhileOpen l must be non-nil, got nil")
	}
	t.Helper()
	calls, ts := r.Calls(), l.Transitions()
	ok := true
	for _, c := range calls {
		// The last transition recorded before the call started.
		i := -1
		for j, tr := range ts {
			if before(tr, c) {
				i = j
			}
		}
		if i >= 0 && ts[i].To == resil.StateOpen {
			ok = false
			t.Errorf("resiltest: attempt %d started %v after the breaker opened, while it was open",
				c.Attempt, c.Start.Sub(ts[i].At))
		}
	}
	return ok
}

// before reports whether tr was recorded before c started: by order when
// both come from this package, else by time (a transition at the instant a
// call starts comes first, as the breaker reports it before admitting).
func before(tr Transition, c Call) bool {
	if tr.seq != 0 && c.seq != 0 {
		return tr.seq < c.seq
	}
	return !tr.At.After(c.Start)
}

// String returns the transition as "closed→open".
func (t Transition) String() string { return fmt.Sprintf("%v→%v", t.From, t.To) }
