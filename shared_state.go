package resil

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Sharing a breaker's state between processes.
//
// The replicas of a service each hold their own *Breaker. A share (an
// implementation of BreakerShare, such as the redisstore module's) lets
// them act as one breaker: the failure ratio and MinCalls count the whole
// fleet's outcomes, a trip on one replica opens all of them, and half-open
// trials are admitted fleet-wide. The division of labour keeps the cost of
// a call where it is for a local breaker:
//
//   - A closed call that succeeds never touches the share: no I/O, no
//     allocation, no lock. A failure, whose trip decision is taken under the
//     breaker's lock, adds the fleet's counts that the share last delivered
//     (a read of two integers) and tells the share when it trips (a call
//     that must not block).
//   - Half-open trials are rare: AcquireTrial and SettleTrial may each make
//     one round trip to the store, bounded in time.
//   - Everything else flows from the share's own background work into the
//     breaker through a BreakerLink: the breaker's own counts out
//     (Snapshot), the rest of the fleet's counts in (SetFleet), and the
//     fleet's state in (Force).
//
// When the store cannot answer, the share says ShareUnavailable and the
// breaker decides as a local breaker would: nothing fails because the store
// does.

// BreakerShare is the state a breaker shares with other processes, seen
// from one breaker. A Breaker made by NewSharedBreaker calls it only on its
// rare paths, never on a closed call that succeeds and never while the
// breaker's lock is held. Implementations must be safe for concurrent use:
// the methods are called from the goroutines that call the breaker. There
// is no nil BreakerShare: NewSharedBreaker panics on one.
type BreakerShare interface {
	// Tripped tells the share that the breaker opened because of its own
	// failures (a trip, or a failed half-open trial), so that it can tell
	// the rest of the fleet. It is called on
	// the failing call's goroutine and must return at once, without I/O:
	// hand the news to background work.
	Tripped()
	// AcquireTrial asks for one of the fleet's HalfOpenCalls trial places
	// before the half-open breaker admits a trial: ShareYes admits the
	// trial, ShareNo rejects the call with ErrBreakerOpen (the places are
	// taken, or the fleet is still open), ShareUnavailable lets the breaker
	// decide alone. It may make one round trip, and must return within a
	// short, bounded time.
	AcquireTrial() ShareAnswer
	// SettleTrial reports how a trial admitted after ShareYes ended, and
	// gives its place back when the outcome is TrialIgnored. A trial that
	// outlived the breaker's half-open period (the breaker made a
	// transition while it ran) is not settled: its outcome is ignored, and
	// its place belongs to a period the fleet has left or will leave. A
	// place granted after the trial's period ended is given back at once
	// (TrialIgnored), before the trial runs. For
	// TrialSucceeded the answer says whether the breaker closes: ShareYes
	// when the fleet has now seen HalfOpenCalls trials succeed (the breaker
	// closes), ShareNo when it has not yet (the breaker stays half-open,
	// gives the trial's local place back, since the fleet holds the count
	// and the places, and goes on admitting the trials the fleet grants;
	// the fleet's close arrives through Force or a later ShareYes),
	// ShareUnavailable to count
	// the success as a local breaker would. A failed trial reopens the
	// breaker whatever the answer. It may make one round trip, and must
	// return within a short, bounded time.
	SettleTrial(o TrialOutcome) ShareAnswer
}

// ShareAnswer is a BreakerShare's answer to a breaker. The zero value is
// ShareUnavailable.
type ShareAnswer int

const (
	// ShareUnavailable: the store could not answer (in time); the breaker
	// decides as a local breaker would.
	ShareUnavailable ShareAnswer = iota
	// ShareYes: the fleet agrees (a trial place is granted, or the fleet
	// closes).
	ShareYes
	// ShareNo: the fleet refuses (no trial place), or has not decided yet
	// (more trials must succeed elsewhere).
	ShareNo
)

// TrialOutcome is how a half-open trial ended. The zero value is not a
// valid outcome.
type TrialOutcome int

const (
	// TrialSucceeded: the trial returned without error.
	TrialSucceeded TrialOutcome = iota + 1
	// TrialFailed: the trial returned an error the breaker counts as a
	// failure.
	TrialFailed
	// TrialIgnored: the trial brought no outcome (an ignored error, a
	// panic); its place is given back.
	TrialIgnored
)

// BreakerSnapshot is what BreakerLink.Snapshot reports of a breaker: a
// plain value, a copy taken under the breaker's lock. The zero value is a
// closed breaker's first generation with no outcomes.
type BreakerSnapshot struct {
	// State is the breaker's state (an open breaker whose OpenFor has
	// passed is reported half-open).
	State BreakerState
	// Gen identifies the state: it changes with every transition (and
	// ClearWindow). Pass it back to SetFleet, Force and ClearWindow, which
	// act only while it is current.
	Gen uint64
	// Successes and Failures are the breaker's own outcomes in its window
	// (zero unless closed), without the fleet's.
	Successes, Failures uint64
	// Remaining is what is left of the open period (zero unless open).
	Remaining time.Duration
	// Trips counts the times the breaker opened on its own failures (a
	// trip, a failed half-open trial) since it was made, the one that
	// made State included: each Tripped call comes after its trip is
	// counted here. Opens by Force do not count.
	Trips uint64
	// SinceTrip is how long ago the last of Trips was made (zero when
	// Trips is): taken with Trips, so a share can time the trip it
	// proposes even when its Tripped call has not come yet.
	SinceTrip time.Duration
}

// BreakerLink is how a share's background work drives a breaker made by
// NewSharedBreaker. Its methods are safe for concurrent use and take the
// breaker's lock briefly. They never call OnStateChange: the transitions
// they make are reported, in order, by the breaker's next call or State,
// on that caller's goroutine, as the breaker's own open → half-open
// transition is (so a panic in the callback reaches a caller of the
// breaker, never the share's goroutine). The breaker's next call also
// reports them to its pipeline's observer (EventStateChange), before its
// own events; State, which has no pipeline, leaves them to that call.
// While no call comes they wait; past 64 waiting, the newest are condensed
// (x → y, y → z is reported as x → z; x → y, y → x not at all).
//
// The zero BreakerLink is not usable: its methods panic, naming the method
// and NewSharedBreaker.
type BreakerLink struct{ b *Breaker }

// breaker returns the linked breaker, or panics naming method when l is
// the zero BreakerLink.
func (l BreakerLink) breaker(method string) *Breaker {
	if l.b == nil {
		panic("resil: BreakerLink." + method + " called on a zero BreakerLink: make it with NewSharedBreaker")
	}
	return l.b
}

// NewSharedBreaker returns a closed breaker configured by policy whose
// state is shared through share, and the link through which the share's
// background work drives it. It panics when policy is invalid (see
// BreakerPolicy.Validate) or share is nil. The breaker is used like any
// other: per call it costs what a local breaker does.
func NewSharedBreaker(policy BreakerPolicy, share BreakerShare) (*Breaker, BreakerLink) {
	if share == nil {
		panic("resil: NewSharedBreaker share must be non-nil, got nil")
	}
	b := NewBreaker(policy)
	b.share = &breakerShare{s: share}
	return b, BreakerLink{b: b}
}

// Breaker returns the linked breaker.
func (l BreakerLink) Breaker() *Breaker { return l.breaker("Breaker") }

// Policy returns the linked breaker's policy with defaults filled in
// (FailureRatio, MinCalls, OpenFor, HalfOpenCalls; Window is rounded to
// its buckets; the callbacks are not returned).
func (l BreakerLink) Policy() BreakerPolicy {
	b := l.breaker("Policy")
	b.mu.Lock()
	defer b.mu.Unlock()
	return BreakerPolicy{
		FailureRatio:  b.ratio,
		MinCalls:      int(b.minCalls),
		Window:        time.Duration(b.width * b.span),
		OpenFor:       time.Duration(b.openFor),
		HalfOpenCalls: b.halfOpenCalls,
	}
}

// Snapshot brings the breaker's window up to date (and makes a due open →
// half-open transition) and returns its state and its own counts.
func (l BreakerLink) Snapshot() BreakerSnapshot {
	b := l.breaker("Snapshot")
	b.mu.Lock()
	now := clock()
	tail := b.linkTail
	if tr, changed := b.advance(now); changed {
		b.leave(tail, tr)
	}
	w := b.word.Load()
	s := BreakerSnapshot{State: BreakerState(w & stateMask), Gen: w >> genShift, Trips: b.trips}
	if b.trips > 0 {
		s.SinceTrip = time.Duration(max(now-b.tripAt, 0))
	}
	if s.State == StateOpen {
		s.Remaining = time.Duration(max(b.openUntil.Load()-now, 0))
	}
	if s.State == StateClosed {
		b.fold(now, noTrigger)
		for _, r := range b.ring {
			s.Successes += r.ok
			s.Failures += r.fail
		}
	}
	b.mu.Unlock()
	return s
}

// SetFleet delivers the rest of the fleet's window counts (the fleet's
// without this breaker's own) for the breaker's trip decisions, while gen
// is current; it reports whether they were taken. Counts stay until the
// next SetFleet or transition (every transition clears them with the
// window): a share that loses its store should deliver zeros, so that the
// breaker decides on its own counts.
func (l BreakerLink) SetFleet(gen uint64, successes, failures uint64) bool {
	b := l.breaker("SetFleet")
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.word.Load()>>genShift != gen {
		return false
	}
	b.share.ok, b.share.fail = successes, failures
	return true
}

// ClearWindow empties a closed breaker's window while gen is current, as a
// transition does, without making one (there is nothing to report): for a
// fleet that went through transitions the breaker missed (it opened and
// closed again between two syncs) and whose state the breaker is in
// already, so that outcomes of calls admitted before the fleet's
// transitions never count after them. It starts a new generation (calls
// admitted before it count nowhere) and drops the fleet's counts, and
// returns the breaker's generation after it and whether it cleared: false
// when gen is not current or the breaker is not closed.
func (l BreakerLink) ClearWindow(gen uint64) (uint64, bool) {
	b := l.breaker("ClearWindow")
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.word.Load()
	if w>>genShift != gen || BreakerState(w&stateMask) != StateClosed {
		return w >> genShift, false
	}
	b.renew(StateClosed, clock())
	return b.word.Load() >> genShift, true
}

// Force puts the breaker in the fleet's state while gen is current, and
// returns the breaker's generation after it and whether gen was current. A
// breaker already in state to stays in it (no transition); otherwise the
// transition is made as the breaker's own are (a new generation, a clear
// window), and reported by the breaker's next caller (see BreakerLink). For
// StateOpen, the breaker stays open for openFor from now (<= 0: it is
// half-open at the next look), also when it was open already. It panics
// when to is not one of the three states.
func (l BreakerLink) Force(gen uint64, to BreakerState, openFor time.Duration) (uint64, bool) {
	if to < StateClosed || to > StateHalfOpen {
		panic("resil: BreakerLink.Force to must be StateClosed, StateOpen or StateHalfOpen, got " + to.String())
	}
	b := l.breaker("Force")
	b.mu.Lock()
	w := b.word.Load()
	if w>>genShift != gen {
		b.mu.Unlock()
		return w >> genShift, false
	}
	now := clock()
	if BreakerState(w&stateMask) != to {
		tail := b.linkTail
		b.leave(tail, b.setState(to, now))
	}
	if to == StateOpen {
		b.openUntil.Store(addSat(now, max(int64(openFor), 0)))
	}
	gen = b.word.Load() >> genShift
	b.mu.Unlock()
	return gen, true
}

// breakerShare is a shared breaker's view of its fleet. s is fixed; the
// counts are guarded by the breaker's mu. The methods accept a nil
// receiver (a local breaker), so that each hook in stage_breaker.go is one
// line.
type breakerShare struct {
	s        BreakerShare
	ok, fail uint64 // the rest of the fleet's window counts, from SetFleet
}

// fleet adds the rest of the fleet's counts to the breaker's own. Called
// with mu held.
func (s *breakerShare) fleet(ok, fail uint64) (uint64, uint64) {
	if s == nil {
		return ok, fail
	}
	return ok + s.ok, fail + s.fail
}

// clear drops the fleet's counts at a transition. Called with mu held.
func (s *breakerShare) clear() {
	if s != nil {
		s.ok, s.fail = 0, 0
	}
}

// tripped tells the share the breaker opened. Called without mu.
func (s *breakerShare) tripped() {
	if s != nil {
		s.s.Tripped()
	}
}

// acquireTrial asks the fleet for a trial place for a trial the breaker
// admitted in generation gen. It reports whether the trial may run, and
// whether the fleet granted it a place (to be settled with SettleTrial),
// and gives the local place back when the fleet refuses. Called without
// mu.
func (s *breakerShare) acquireTrial(b *Breaker, gen uint64) (ok, leased bool) {
	if s == nil {
		return true, false
	}
	switch s.s.AcquireTrial() {
	case ShareYes:
		return true, true
	case ShareNo:
		b.releaseTrial(gen)
		return false, false
	}
	return true, false // unavailable: the breaker decides alone
}

// settle reports a trial's outcome to the fleet. Called without mu.
func (s *breakerShare) settle(o outcome) ShareAnswer {
	if s == nil {
		return ShareUnavailable
	}
	switch o {
	case success:
		return s.s.SettleTrial(TrialSucceeded)
	case failure:
		return s.s.SettleTrial(TrialFailed)
	}
	return s.s.SettleTrial(TrialIgnored)
}

// Sharing a rate limiter's bucket between processes.
//
// A rate limiter made by NewSharedRateLimiter asks its share for every
// call's turn: the fleet's bucket lives in the store, so each call costs
// the store's round trip (unlike a breaker's). When the store cannot
// answer, the limiter falls back to its local share: a bucket of its own
// with the policy's Rate and Burst scaled by the fraction the share's
// background work sets with RateLimiterLink.SetLocalShare (1/replicas is
// the natural choice), so that the fleet as a whole stays near its limit
// while the store is away.

// RateLimitShare is the bucket a rate limiter shares with other processes,
// seen from one limiter. Implementations must be safe for concurrent use:
// Reserve is called on the goroutine of every call through the limiter.
// There is no nil RateLimitShare: NewSharedRateLimiter panics on one.
type RateLimitShare interface {
	// Reserve asks the fleet's bucket for the turn of one call that may
	// wait up to maxWait. ShareYes: the turn is claimed, and the call
	// passes after wait (0: at once). ShareNo: nothing is claimed, and a
	// call would pass without waiting after wait (> 0). ShareUnavailable:
	// the store could not answer, and the limiter decides with its local
	// share. It may make one round trip, and must return within a short,
	// bounded time. A claimed turn is not given back when the caller's
	// context ends during the wait.
	Reserve(maxWait time.Duration) (wait time.Duration, answer ShareAnswer)
}

// RateLimiterLink is how a share's background work adjusts a rate limiter
// made by NewSharedRateLimiter. Its methods are safe for concurrent use.
// The zero RateLimiterLink is not usable: its methods panic, naming the
// method and NewSharedRateLimiter.
type RateLimiterLink struct{ l *RateLimiter }

// limiter returns the linked limiter, or panics naming method when k is
// the zero RateLimiterLink.
func (k RateLimiterLink) limiter(method string) *RateLimiter {
	if k.l == nil {
		panic("resil: RateLimiterLink." + method + " called on a zero RateLimiterLink: make it with NewSharedRateLimiter")
	}
	return k.l
}

// NewSharedRateLimiter returns a rate limiter configured by policy whose
// bucket is shared through share, and its link. Until SetLocalShare is
// called its local share is the whole policy. It panics when policy is
// invalid (see RateLimitPolicy.Validate) or share is nil.
func NewSharedRateLimiter(policy RateLimitPolicy, share RateLimitShare) (*RateLimiter, RateLimiterLink) {
	if share == nil {
		panic("resil: NewSharedRateLimiter share must be non-nil, got nil")
	}
	l := NewRateLimiter(policy)
	rs := &rateShare{s: share, policy: policy, fraction: 1}
	rs.local.Store(NewRateLimiter(policy))
	l.share = rs
	return l, RateLimiterLink{l: l}
}

// RateLimiter returns the linked limiter.
func (k RateLimiterLink) RateLimiter() *RateLimiter { return k.limiter("RateLimiter") }

// Policy returns the policy the linked limiter was made with, Burst's
// default filled in.
func (k RateLimiterLink) Policy() RateLimitPolicy {
	p := k.limiter("Policy").share.policy
	p.Burst = max(p.Burst, 1)
	return p
}

// SetLocalShare sets the part of the policy the limiter allows on its own
// when the store cannot answer: Rate·fraction calls per second, with a
// bucket of Burst·fraction rounded up (at least 1; a product that differs
// from a whole number only by float rounding is that number, so with
// 1/replicas the local buckets add up to Burst rounded up per replica),
// which starts full. A fraction outside (0, 1] or NaN is taken as 1.
// Setting the fraction it already has keeps the local bucket as it is.
func (k RateLimiterLink) SetLocalShare(fraction float64) {
	rs := k.limiter("SetLocalShare").share
	if !(fraction > 0 && fraction <= 1) {
		fraction = 1
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if fraction == rs.fraction {
		return
	}
	rs.fraction = fraction
	p := rs.policy
	p.Rate = max(p.Rate*fraction, math.SmallestNonzeroFloat64) // > 0 even when the product underflows
	p.Burst = localBurst(max(p.Burst, 1), fraction)
	rs.local.Store(NewRateLimiter(p))
}

// localBurst returns burst·fraction rounded up, at least 1. The product
// of a whole burst and a fraction such as 1/n may land a hair above the
// whole number it stands for (297·(1/99) is 3.0000000000000004): a
// product within a few float roundings of a whole number is that number,
// so the fleet's local shares add up to its Burst, not n tokens more.
func localBurst(burst int, fraction float64) int {
	x := float64(burst) * fraction
	if x >= math.MaxInt {
		// float64(math.MaxInt) is 2^63, which int() does not hold: a
		// burst within 512 of MaxInt, times a fraction of 1, is itself.
		return burst
	}
	if r := math.Round(x); math.Abs(x-r) <= 4*0x1p-52*r {
		return max(int(r), 1)
	}
	return max(int(math.Ceil(x)), 1)
}

// rateShare is a shared limiter's view of its fleet.
type rateShare struct {
	s      RateLimitShare
	policy RateLimitPolicy
	local  atomic.Pointer[RateLimiter] // the local share, for when the store cannot answer

	mu       sync.Mutex // serialises SetLocalShare
	fraction float64    // of the current local share; 1 until SetLocalShare
}

// admit is RateLimiter.admit for a shared limiter: the fleet's bucket
// decides, or the local share when the store cannot answer. The local
// share decides as of the clock read after the store's answer (which may
// have taken the store's whole timeout), the time the round trip took
// counting against the call's wait, and is the bucket a cancelled wait
// gives its turn back to, even if SetLocalShare has replaced it since.
func (rs *rateShare) admit(now, maxWait int64) (at, wait int64, by *RateLimiter, ok bool) {
	w, answer := rs.s.Reserve(time.Duration(maxWait))
	switch answer {
	case ShareYes:
		return now, max(int64(w), 0), nil, true
	case ShareNo:
		return now, max(int64(w), 1), nil, false
	}
	fresh := max(clock(), now)
	return rs.local.Load().admitLocal(fresh, max(maxWait-(fresh-now), 0))
}
