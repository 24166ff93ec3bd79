package resil

import (
	"context"
	"math"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe" // go:linkname and Sizeof, for the per-P success counters

	"github.com/resil-go/resil/internal/errchain"
)

// BreakerPolicy configures a circuit breaker. The zero value is valid: trip
// when at least half of at least 10 calls in the last 10s failed, stay open
// 5s, then admit 1 trial call.
type BreakerPolicy struct {
	// FailureRatio trips the breaker when failures/calls in Window reach
	// it. 0 means 0.5. Valid: [0, 1], not NaN.
	FailureRatio float64
	// MinCalls is how many calls Window must hold before the ratio counts.
	// 0 means 10. Negative is invalid.
	MinCalls int
	// Window is how long an outcome counts. Outcomes are kept in 20 buckets
	// of Window/20, so one may drop out up to Window/20 early (a success up
	// to Window/10: see Breaker for how successes are timed). 0 means 10s.
	// Negative is invalid.
	Window time.Duration
	// OpenFor is how long the breaker rejects calls before it admits
	// trials. 0 means 5s. Negative is invalid.
	OpenFor time.Duration
	// HalfOpenCalls is how many trial calls the half-open breaker admits in
	// all; all of them must succeed to close it. 0 means 1. Negative is
	// invalid.
	HalfOpenCalls int
	// FailureIf decides which unmarked errors count as failures (an error
	// marked Transient always does, one marked Permanent never does); the
	// others are ignored. nil means IsTransient, which ignores
	// context.Canceled; with it, the cause of the cancellation of a call's
	// context is ignored too when the call's error matches it (a
	// context.WithCancelCause, which errgroup makes: net/http returns its
	// cause in place of context.Canceled), and so is any unmarked error of
	// an attempt that a Hedge outside the Breaker cancelled because another
	// answered first (see ErrHedgeLost).
	FailureIf func(error) bool
	// OnStateChange, if set, is called once per transition, in the order of
	// the transitions, on a goroutine that called the breaker, never while
	// the breaker's lock is held. A panic in it reaches that caller; the
	// breaker's state is already consistent. A shared breaker's transitions
	// that its fleet brings are reported by its next call (see BreakerLink).
	OnStateChange func(from, to BreakerState)
}

// Validate returns nil when p is a valid policy, or an error naming the
// first invalid field and its value, with the message NewBreaker would
// panic with.
func (p BreakerPolicy) Validate() error {
	switch {
	case math.IsNaN(p.FailureRatio) || p.FailureRatio < 0 || p.FailureRatio > 1:
		return configError("BreakerPolicy.FailureRatio must be in [0, 1], got " + strconv.FormatFloat(p.FailureRatio, 'g', -1, 64))
	case p.MinCalls < 0:
		return configError("BreakerPolicy.MinCalls must be >= 0, got " + strconv.Itoa(p.MinCalls))
	case p.Window < 0:
		return configError("BreakerPolicy.Window must be >= 0, got " + p.Window.String())
	case p.OpenFor < 0:
		return configError("BreakerPolicy.OpenFor must be >= 0, got " + p.OpenFor.String())
	case p.HalfOpenCalls < 0:
		return configError("BreakerPolicy.HalfOpenCalls must be >= 0, got " + strconv.Itoa(p.HalfOpenCalls))
	}
	return nil
}

// BreakerState is the state of a circuit breaker. The zero value is
// StateClosed.
type BreakerState int

const (
	// StateClosed: calls run; failures are counted.
	StateClosed BreakerState = iota
	// StateOpen: calls are rejected with ErrBreakerOpen.
	StateOpen
	// StateHalfOpen: a limited number of trial calls run; the rest are
	// rejected.
	StateHalfOpen
)

// String returns "closed", "open" or "half-open", or "BreakerState(N)" for
// an unknown value.
func (s BreakerState) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateOpen:
		return "open"
	case StateHalfOpen:
		return "half-open"
	}
	return "BreakerState(" + strconv.Itoa(int(s)) + ")"
}

const (
	windowBuckets = 20  // the window is kept in buckets of Window/20
	maxBatch      = 512 // most successes a per-P counter collects unfolded
	staleEvery    = 64  // a P's unfolded batch looks at the clock every staleEvery successes
	cacheLine     = 128
)

// Breaker is a circuit breaker: it counts the outcomes of the calls it
// guards over a sliding time window, opens (rejects calls with
// ErrBreakerOpen) when too many fail, and after a while admits trial calls
// to decide whether to close again. It is safe for concurrent use and may
// guard any number of pipelines of any T. Create it with NewBreaker; the
// zero Breaker is not usable (Pipeline.Breaker refuses it).
//
// State moves only when calls (or State) look at it: there is no timer and
// no goroutine. The closed path takes no lock and makes no locked
// (read-modify-write) memory operation on a success: a success is added to
// a counter that only the P (the scheduler's CPU slot) running the call
// writes, and the counters are folded into the window by the next failure,
// or once a counter holds a batch of successes. The batch grows (up to 512)
// only while folds come less than a quarter bucket apart, and shrinks to 1
// when traffic slows, so at low rates every success is timed exactly. The
// first success a P counts after a fold reads the clock: it dates the P's
// batch, and it folds at once when it comes more than half a bucket after
// the last fold. Every 64th success after it reads the clock again, and
// folds when the batch is more than a quarter bucket old (traffic slowed
// while the P held it). So a batch of 512 reads the clock 8 times: about
// one read per 64 successes.
//
// Precision: counts are exact (batching moves when a success is dated,
// never whether it counts), and no outcome counts late (one at least Window
// old never counts). A failure may leave the window up to Window/20 early
// (its bucket). A success is dated at the first unfolded success on its P:
// in steady traffic, where a batch fills within a quarter bucket, it leaves
// the window at most Window/10 early. When traffic pauses, the successes a
// P counts after the pause and before its next look at the clock (at most
// 63 per P) may carry the date of its batch from before the pause: early by
// up to the pause. A failure folds everything first, so a success is never
// dated before the last failure that preceded it. Where a P has no
// counter of its own (32-bit platforms, or a P added by raising GOMAXPROCS
// after NewBreaker), its successes share one counter (a compare-and-swap
// each) that dates what it holds at the last fold and looks at the clock
// at its first and every 64th success, folding when that fold is more than
// half a bucket old: a success held there is dated up to Window/40 earlier
// than a P's own counter dates it (steady traffic still leaves at most
// Window/10 early), and after a pause up to 63 of them by the pause.
//
// An open breaker reads the clock on each rejected call, the one cost of
// its rejected path: OpenFor ends without a timer, so only the time can say
// that the first call after it must become a trial.
type Breaker struct {
	// Read on every call, written only on transitions and batch changes.
	word      atomic.Uint64                    // generation<<genShift | pendBit | BreakerState
	openUntil atomic.Int64                     // clock() at which an open period ends
	shards    []shard                          // per-P success counters, one per P at NewBreaker
	batch     atomic.Uint32                    // successes a counter collects before a fold
	_         [cacheLine - 8 - 8 - 24 - 4]byte // keeps mu's line apart

	// spill counts the successes of calls whose P has no shard (GOMAXPROCS
	// grew after NewBreaker, or a 32-bit platform): generation<<32 | count,
	// shared, so updated with compare-and-swap and reset by the fold.
	spill atomic.Uint64
	// foldBy is the clock() after which a P's first success since a fold
	// folds at once. Written by every fold, read once per batch: kept off
	// the line every call reads.
	foldBy atomic.Int64
	_      [cacheLine - 8 - 8]byte

	mu sync.Mutex
	// Guarded by mu.
	ratio         float64
	minCalls      uint64
	openFor       int64
	halfOpenCalls int
	width         int64 // bucket width in ns
	span          int64 // buckets in the window: windowBuckets, or fewer for a tiny Window (see NewBreaker)
	failureIf     func(error) bool
	defaultIf     bool // FailureIf was nil: see classify
	onChange      func(from, to BreakerState)
	ring          [windowBuckets]bucket
	cur           int64  // absolute index of the newest bucket
	lastFold      int64  // clock() of the last fold
	trials        int    // half-open trials admitted and not given back
	passed        int    // half-open trials that succeeded
	trips         uint64 // opens on the breaker's own failures (trips, failed trials): see BreakerSnapshot.Trips
	tripAt        int64  // clock() of the last of them
	queue         []transition
	linkTail      int          // of queue's last entries, how many a BreakerLink queued (at most len(queue))
	linkSeen      []transition // a BreakerLink's transitions that no call has reported to its pipeline yet (see takeLinkSeen)
	condensed     uint64       // transitions leave condensed away, never reported
	reporting     bool
	share         *breakerShare // nil unless made by NewSharedBreaker (shared_state.go)
}

// The layout of Breaker.word. Every write of it is made with mu held.
const (
	stateMask = 3 // the BreakerState
	// pendBit: transitions a BreakerLink made wait for a caller of the
	// breaker to report them, to OnStateChange (in queue) or to its
	// pipeline's observer (in linkSeen; see BreakerLink). It sends the
	// next call off the closed fast path, to report them.
	pendBit  = 4
	genShift = 3 // the generation, which every transition increments
)

// maxLinkPending bounds the transitions a BreakerLink leaves queued for
// callers: beyond it the link condenses the newest ones (see BreakerLink).
const maxLinkPending = 64

// shard counts the successes of the closed state on one P.
//
// w is generation<<32 | count (the generation's low 32 bits; the count
// modulo 2^32). Only a goroutine running on the shard's P, pinned to it
// (runtime.procPin: not preempted, so no other goroutine runs there), ever
// writes w, so a success is a plain load and store: no lock prefix, no
// compare-and-swap, which on the closed path would cost more than the rest
// of the stage. The fold reads w with an atomic load while its owner may be
// writing it: a race by design, harmless because w is one aligned machine
// word (the Go memory model guarantees that such a read returns a value that
// was written, never a torn one; on 32-bit platforms, where it is two
// words, the shards are not used and every success goes to spill). The
// race detector cannot know this: succeedClosed is marked go:norace, and
// shard.count, its common case, uses atomic operations in race builds, so
// that the detector checks everything else.
//
// A count belongs to the generation in its tag: the owner restarts the
// count at 1 when a call admitted in a newer generation succeeds, and drops
// the success of a call admitted in an older one, so a success of a call
// admitted before a transition never counts in the new window. The fold
// never writes w: it keeps in folded how much of the count it has already
// moved into the window, and takes the difference (modulo 2^32, so the
// count may wrap).
//
// since dates the shard's unfolded successes: the owner writes it (the same
// way as w, before w) when it counts the first success after a fold, and
// the fold dates them all there (never before the last fold). A success is
// never dated after it happened; how much earlier is the Breaker's
// documented precision.
type shard struct {
	w      uint64
	since  int64         // clock() of the first success counted after the shard's last fold; owner-written like w
	folded atomic.Uint32 // the count up to which the fold has taken successes; written under mu
	_      [cacheLine - 8 - 8 - 4]byte
}

// wordAtomic reports whether a plain uint64 store is one indivisible write,
// which the per-P shards need (see shard).
const wordAtomic = unsafe.Sizeof(uintptr(0)) == 8

type bucket struct{ ok, fail uint64 }

type transition struct {
	from, to BreakerState
	seq      uint64 // the move's number among every breaker's: see Event.Seq
}

// moves numbers the transitions of every breaker in the process, for
// Event.Seq. A transition takes its number under its breaker's lock, so a
// breaker's later move has a larger one.
var moves atomic.Uint64

type outcome uint8

const (
	ignored outcome = iota
	success
	failure
)

//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()

// NewBreaker returns a closed breaker configured by policy. It panics when
// policy is invalid (see BreakerPolicy.Validate).
func NewBreaker(policy BreakerPolicy) *Breaker {
	mustValid(policy.Validate())
	b := &Breaker{
		ratio:         policy.FailureRatio,
		minCalls:      uint64(policy.MinCalls),
		openFor:       int64(policy.OpenFor),
		halfOpenCalls: policy.HalfOpenCalls,
		failureIf:     policy.FailureIf,
		onChange:      policy.OnStateChange,
	}
	if b.ratio == 0 {
		b.ratio = 0.5
	}
	if b.minCalls == 0 {
		b.minCalls = 10
	}
	window := policy.Window
	if window == 0 {
		window = 10 * time.Second
	}
	// Buckets of 1ns when Window is shorter than windowBuckets ns, and
	// only Window of them: no outcome may count once Window old.
	w := int64(window)
	b.width = max(w/windowBuckets, 1)
	b.span = min(w/b.width, windowBuckets)
	// An outcome drops out up to a bucket and what the buckets leave of
	// Window early. When Window is not a multiple of windowBuckets ns, that
	// rest may exceed Window/10 for a tiny Window: then fewer, wider
	// buckets (of Window/20 rounded up) keep it closer.
	if wc := w/windowBuckets + min(w%windowBuckets, 1); wc != b.width { // (w+windowBuckets-1)/windowBuckets, which overflows near MaxInt64
		if sc := w / wc; w-sc*wc+wc < w-b.span*b.width+b.width {
			b.width, b.span = wc, sc
		}
	}
	if b.openFor == 0 {
		b.openFor = int64(5 * time.Second)
	}
	if b.halfOpenCalls == 0 {
		b.halfOpenCalls = 1
	}
	if b.failureIf == nil {
		b.failureIf = IsTransient
		b.defaultIf = true
	}
	if wordAtomic {
		b.shards = make([]shard, runtime.GOMAXPROCS(0))
	}
	b.batch.Store(1)
	now := clock()
	b.cur = floorDiv(now, b.width)
	b.lastFold = now
	b.foldBy.Store(now + b.width/2)
	return b
}

// State returns the breaker's state. An open breaker whose OpenFor has
// passed becomes half-open here, as on a call.
func (b *Breaker) State() BreakerState {
	w := b.word.Load()
	if w&pendBit != 0 { // a BreakerLink's transitions wait for a caller
		b.report()
		w = b.word.Load()
	}
	if BreakerState(w&stateMask) == StateOpen && clock() >= b.openUntil.Load() {
		b.mu.Lock()
		b.advance(clock())
		w = b.word.Load()
		b.mu.Unlock()
		b.report()
	}
	return BreakerState(w & stateMask)
}

// classify returns the outcome err stands for, for a call that ran with
// ctx: marks first, then FailureIf. With the default FailureIf, an
// unmarked error that is the cause of ctx's cancellation is ignored as
// context.Canceled is: the caller gave up (a context.WithCancelCause, as
// errgroup makes; net/http returns the cause in place of
// context.Canceled).
func (b *Breaker) classify(ctx context.Context, err error) outcome {
	switch markOf(err) {
	case markPermanent:
		return ignored
	case markTransient:
		return failure
	}
	if !b.failureIf(err) {
		return ignored
	}
	if b.defaultIf && ctx.Err() == context.Canceled {
		switch cause := context.Cause(ctx); {
		case cause == ErrHedgeLost: // a Hedge outside gave up on this attempt
			return ignored
		case cause != context.Canceled && errchain.Is(err, cause):
			return ignored
		}
	}
	return failure
}

// succeedClosed records a success of a call admitted closed in generation
// gen. No lock and no locked instruction: a plain increment of this P's
// counter (see shard for why that is safe, and why the race detector is
// told to look away). The clock is read only by the first success a P
// counts after a fold, which dates the P's batch; the others read none.
//
//go:norace
func (b *Breaker) succeedClosed(gen uint64) {
	pid := procPin()
	if pid >= len(b.shards) {
		procUnpin()
		b.succeedSpill(gen)
		return
	}
	sh := &b.shards[pid]
	w, g := sh.w, uint32(gen)
	switch tag := uint32(w >> 32); {
	case tag == g:
		w = w&^math.MaxUint32 | uint64(uint32(w)+1)
	case int32(g-tag) > 0: // the first success of a newer generation here
		w = uint64(g)<<32 | 1
	default: // admitted before a transition that this P has already seen
		procUnpin()
		return
	}
	// Unfolded successes of this shard, modulo 2^32 (setState zeroes
	// folded for a new generation).
	pending := uint32(w) - sh.folded.Load()
	var now, since int64
	looked := (pending-1)%staleEvery == 0
	if looked {
		now = clock()
		if pending == 1 {
			sh.since = now // before w: the fold reads w, then since
		}
		since = sh.since
	}
	sh.w = w
	procUnpin()
	switch {
	case pending == 1:
		// The P's first unfolded success: folded at once when it completes
		// a batch of 1, or when it comes more than half a bucket after the
		// last fold (traffic paused: it must not wait for a batch that may
		// take long to fill).
		if b.batch.Load() <= 1 || now > b.foldBy.Load() {
			b.foldAt(gen, now, pid)
		}
	case pending >= b.batch.Load():
		if !looked {
			now = clock()
		}
		b.foldAt(gen, now, pid)
	case looked && now-since > b.width/4:
		// Every staleEvery successes, a batch that has waited more than a
		// quarter bucket since its date is folded: traffic slowed while the
		// P held it, and what it counts next must not be dated back there.
		b.foldAt(gen, now, pid)
	}
}

// count is the common case of succeedClosed, small enough to be inlined
// into the stage: called by the goroutine pinned to the shard's P
// (procPin), it counts a success of generation gen and reports true, when
// the shard already counts gen and the success is neither the shard's first
// unfolded one (which must be dated), nor one of every staleEvery after it
// (which look at the clock: see succeedClosed), nor one that fills its
// batch of batch (which must fold). Otherwise it changes nothing and reports false, and
// the caller, once unpinned, calls succeedClosed.
//
// It reads and writes w as succeedClosed does, plainly (see shard); with
// atomic operations under the race detector, which cannot know that only
// the pinned owner writes w.
func (sh *shard) count(gen, batch uint32) bool {
	var w uint64
	if raceEnabled {
		w = atomic.LoadUint64(&sh.w)
	} else {
		w = sh.w
	}
	if uint32(w>>32) != gen {
		return false
	}
	n := uint32(w) + 1
	if pending := n - sh.folded.Load(); (pending-1)%staleEvery == 0 || pending >= batch {
		return false // the first, or one that looks at the clock, or the last
	}
	if raceEnabled {
		atomic.StoreUint64(&sh.w, w&^math.MaxUint32|uint64(n))
	} else {
		sh.w = w&^math.MaxUint32 | uint64(n)
	}
	return true
}

// succeedSpill is succeedClosed for a P without a shard: a
// compare-and-swap on the shared spill counter, whose successes are dated
// at the last fold.
func (b *Breaker) succeedSpill(gen uint64) {
	tag := uint64(uint32(gen)) << 32
	var n uint32
	for {
		w := b.spill.Load()
		if w&^math.MaxUint32 != tag {
			return // a transition came in between: the outcome is stale
		}
		if b.spill.CompareAndSwap(w, w+1) {
			n = uint32(w) + 1
			break
		}
	}
	if n >= b.batch.Load() {
		b.foldAt(gen, clock(), spillTrigger)
		return
	}
	if n%staleEvery == 1 { // the first since the last fold, or one that looks again
		if now := clock(); now > b.foldBy.Load() {
			b.foldAt(gen, now, spillTrigger)
		}
	}
}

// Triggers of a fold besides a shard's index (see fold).
const (
	spillTrigger = -1 // a success counted in spill
	noTrigger    = -2 // a failure, a transition or a sync: no success
)

// foldAt folds the counters for the success that trigger counted at now
// (a shard's index or spillTrigger), if gen is still current.
func (b *Breaker) foldAt(gen uint64, now int64, trigger int) {
	b.mu.Lock()
	if b.word.Load()>>genShift == gen {
		b.fold(max(now, b.lastFold), trigger)
	}
	b.mu.Unlock()
}

// fold moves the successes counted since the last fold into the window and
// adapts the batch size to the time between folds. A shard's successes are
// dated at its first unfolded success (since), never before the last fold;
// the spill's at the last fold; the one success that triggered the fold
// (trigger: a shard's index, spillTrigger or noTrigger) at now. Called with
// mu held, in the closed state.
func (b *Breaker) fold(now int64, trigger int) {
	gen := uint32(b.word.Load() >> genShift)
	b.roll(now)
	for i := range b.shards {
		sh := &b.shards[i]
		w := atomic.LoadUint64(&sh.w) // races with the owner by design: see shard
		if uint32(w>>32) != gen {
			continue // nothing counted in this generation yet
		}
		d := uint32(w) - sh.folded.Load()
		if d == 0 {
			continue
		}
		sh.folded.Store(uint32(w))
		if i == trigger {
			b.add(now, success, 1)
			d--
		}
		// since is the time of the shard's first unfolded success (older
		// if a fold raced with it, and then clamped to the last fold): no
		// success is dated after it happened. The owner writes since only
		// when it has nothing unfolded, so a since newer than w's count
		// comes with nothing of it to date.
		t := max(atomic.LoadInt64(&sh.since), b.lastFold)
		b.add(min(t, now), success, uint64(d))
	}
	tag := uint64(gen) << 32
	for {
		w := b.spill.Load()
		if uint32(w) == 0 || w&^math.MaxUint32 != tag {
			break
		}
		if b.spill.CompareAndSwap(w, tag) {
			n := uint64(uint32(w))
			if trigger == spillTrigger {
				b.add(now, success, 1)
				n--
			}
			b.add(b.lastFold, success, n)
			break
		}
	}
	dt, k := now-b.lastFold, b.batch.Load()
	switch {
	case dt < b.width/4 && k < maxBatch:
		b.batch.Store(k * 2)
	case dt > b.width/2 && k > 1:
		b.batch.Store(k / 2)
	}
	b.lastFold = now
	b.foldBy.Store(now + b.width/2)
}

// made reports whether b was made by NewBreaker (or NewSharedBreaker):
// the zero Breaker has no window.
func (b *Breaker) made() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.width != 0
}

// addSat returns now+d for d >= 0, or math.MaxInt64 when that overflows
// (an OpenFor of centuries means open until the process ends).
func addSat(now, d int64) int64 {
	if now > 0 && d > math.MaxInt64-now {
		return math.MaxInt64
	}
	return now + d
}

// roll advances the ring to now, clearing the buckets that expired.
func (b *Breaker) roll(now int64) {
	idx := floorDiv(now, b.width)
	if idx <= b.cur {
		return
	}
	if idx-b.cur >= b.span {
		b.ring = [windowBuckets]bucket{}
	} else {
		for i := b.cur + 1; i <= idx; i++ {
			b.ring[floorMod(i, b.span)] = bucket{}
		}
	}
	b.cur = idx
}

// add counts n outcomes at time t (at or before the last roll).
func (b *Breaker) add(t int64, o outcome, n uint64) {
	idx := floorDiv(t, b.width)
	if idx <= b.cur-b.span {
		return // already older than the window
	}
	r := &b.ring[floorMod(idx, b.span)]
	if o == success {
		r.ok += n
	} else {
		r.fail += n
	}
}

// failClosed records a failure of a call admitted closed in generation gen
// and opens the breaker when the window says so.
func (b *Breaker) failClosed(gen uint64) (transition, bool) {
	b.mu.Lock()
	if b.word.Load()>>genShift != gen {
		b.mu.Unlock()
		return transition{}, false
	}
	now := clock()
	b.fold(now, noTrigger)
	b.add(now, failure, 1)
	var ok, fail uint64
	for _, r := range b.ring {
		ok += r.ok
		fail += r.fail
	}
	ok, fail = b.share.fleet(ok, fail) // the fleet's counts, if shared: no I/O
	var tr transition
	tripped := ok+fail >= b.minCalls && float64(fail)/float64(ok+fail) >= b.ratio
	if tripped {
		tr = b.setState(StateOpen, now)
		b.trips, b.tripAt = b.trips+1, now
	}
	b.mu.Unlock()
	if tripped {
		// Reported also should Tripped panic: OnStateChange hears of the
		// trip before this call returns, as of any other.
		defer b.report()
		b.share.tripped() // non-blocking: the share tells the fleet in the background
	}
	return tr, tripped
}

// setState makes a transition: a new generation, a clear window and fresh
// trials. Called with mu held.
func (b *Breaker) setState(to BreakerState, now int64) transition {
	from := BreakerState(b.word.Load() & stateMask)
	b.renew(to, now)
	tr := transition{from: from, to: to, seq: moves.Add(1)}
	if b.onChange != nil {
		b.queue = append(b.queue, tr)
		b.linkTail = 0 // a caller's, unless the link's leave says otherwise
	}
	return tr
}

// renew starts a new generation in state to: a clear window and fresh
// trials, and for StateOpen a full open period. It is setState without
// the transition (BreakerLink.ClearWindow makes none). Called with mu held.
func (b *Breaker) renew(to BreakerState, now int64) {
	old := b.word.Load()
	gen := old>>genShift + 1
	// The counters take the new generation before the word does, so that a
	// call admitted in it never finds a counter of the old one. A shard
	// takes it from its first success in the new generation (see shard):
	// nothing of it is folded yet.
	for i := range b.shards {
		b.shards[i].folded.Store(0)
	}
	b.spill.Store(uint64(uint32(gen)) << 32)
	if to == StateOpen {
		b.openUntil.Store(addSat(now, b.openFor))
	}
	b.word.Store(gen<<genShift | old&pendBit | uint64(to))
	b.ring = [windowBuckets]bucket{}
	b.cur = floorDiv(now, b.width)
	b.lastFold = now
	b.foldBy.Store(now + b.width/2)
	b.batch.Store(1)
	b.trials, b.passed = 0, 0
	b.share.clear()
}

// advance makes the open → half-open transition once OpenFor has passed.
// Called with mu held.
func (b *Breaker) advance(now int64) (transition, bool) {
	if BreakerState(b.word.Load()&stateMask) == StateOpen && now >= b.openUntil.Load() {
		return b.setState(StateHalfOpen, now), true
	}
	return transition{}, false
}

// ticket is an admission: the generation the call was admitted in,
// whether it is a half-open trial, and whether a shared breaker's fleet
// granted the trial its place (ShareYes), so that only such a trial is
// settled with the fleet.
type ticket struct {
	gen    uint64
	trial  bool
	leased bool
}

// admitSlow admits or rejects a call when the breaker is not plainly
// closed, making the open → half-open transition when it is due.
func (b *Breaker) admitSlow() (t ticket, ok bool, tr transition, changed bool) {
	b.mu.Lock()
	tr, changed = b.advance(clock())
	w := b.word.Load()
	switch BreakerState(w & stateMask) {
	case StateClosed:
		t, ok = ticket{gen: w >> genShift}, true
	case StateHalfOpen:
		if b.trials < b.halfOpenCalls {
			b.trials++
			t, ok = ticket{gen: w >> genShift, trial: true}, true
		}
	}
	b.mu.Unlock()
	if ok && t.trial {
		return b.admitTrial(t, tr, changed)
	}
	if changed {
		b.report()
	}
	return t, ok, tr, changed
}

// admitTrial completes the admission of a half-open trial whose place
// admitSlow took: it reports the transition that admission made, if
// changed, and asks a shared breaker's fleet for a place too. When either
// panics (OnStateChange, the share), the place is given back before the
// panic goes on: the trial never runs, so it must not keep the place.
func (b *Breaker) admitTrial(t ticket, tr transition, changed bool) (ticket, bool, transition, bool) {
	placed := false
	defer func() {
		if !placed {
			b.releaseTrial(t.gen)
		}
	}()
	if changed {
		b.report()
	}
	ok, leased := b.share.acquireTrial(b, t.gen) // gives the place back when refused
	placed = true
	if leased && b.word.Load()>>genShift != t.gen {
		// The fleet granted a place to a trial whose half-open period
		// ended while it asked: the place goes back to the fleet at once,
		// and the trial, of a period that is over, is ignored when it
		// ends (see settleTrial).
		b.share.settle(ignored)
		leased = false
	}
	t.leased = leased
	return t, ok, tr, changed
}

// releaseTrial gives back the place of a half-open trial admitted in
// generation gen that will not run.
func (b *Breaker) releaseTrial(gen uint64) {
	b.mu.Lock()
	if b.word.Load()>>genShift == gen {
		b.trials--
	}
	b.mu.Unlock()
}

// settleTrial records the outcome of the half-open trial t: a success
// towards closing (a success the fleet counted gives the trial's place
// back), a failure reopens, an ignored outcome gives the trial's place
// back. Only a trial the fleet granted is settled with it, and only
// while its half-open period lasts: one that outlived it (the breaker made
// a transition meanwhile, and the fleet has left or will leave that period
// too) is ignored, so that it is never settled into a newer period.
func (b *Breaker) settleTrial(t ticket, o outcome) (transition, bool) {
	fleet := ShareUnavailable // a local breaker, or a place the fleet did not grant
	if t.leased {
		if b.word.Load()>>genShift != t.gen {
			return transition{}, false
		}
		fleet = b.settleShare(t, o)
	}
	b.mu.Lock()
	if b.word.Load()>>genShift != t.gen {
		b.mu.Unlock()
		return transition{}, false
	}
	var (
		tr      transition
		changed bool
	)
	switch o {
	case success:
		if fleet == ShareNo {
			// The fleet counted the success and holds the trial places:
			// the local place goes back, so that the breaker goes on
			// asking the fleet for trials (or, should the store stop
			// answering, counts its own) until it closes. The fleet's
			// close arrives through Force or a later trial's ShareYes.
			b.trials--
			break
		}
		b.passed++
		if fleet == ShareYes || b.passed >= b.halfOpenCalls {
			tr, changed = b.setState(StateClosed, clock()), true
		}
	case failure:
		now := clock()
		tr, changed = b.setState(StateOpen, now), true
		b.trips, b.tripAt = b.trips+1, now
	default:
		b.trials--
	}
	b.mu.Unlock()
	if changed {
		defer b.report() // also should Tripped panic (see failClosed)
	}
	if changed && o == failure {
		// The breaker reopened because of its own failure: the share tells
		// the fleet (which did not hear of it when the trial was not
		// granted or settled there), as for a trip.
		b.share.tripped()
	}
	return tr, changed
}

// settleShare reports the outcome of the granted trial t to the fleet.
// When the share panics, the trial's local place is given back before the
// panic goes on (as admitTrial does): the breaker must not stay half-open
// with a place no trial will settle.
func (b *Breaker) settleShare(t ticket, o outcome) ShareAnswer {
	done := false
	defer func() {
		if !done {
			b.releaseTrial(t.gen)
		}
	}()
	a := b.share.settle(o)
	done = true
	return a
}

// leave hands tr, the transition a BreakerLink just made, to the breaker's
// callers: the next call (or State) reports it to OnStateChange, as it
// would its own, and the next call also to its pipeline's observer
// (pendBit sends it to report; see takeLinkSeen). When more than
// maxLinkPending wait (no call came for a long while), the newest two are
// condensed into one: x → y then y → z is reported as x → z, and x → y then
// y → x not at all, so that the queue, and the burst of callbacks the next
// call makes, stay bounded. Only transitions the link queued, after the
// last a caller queued, are condensed. tail is linkTail before the link's
// transition was queued. Called with mu held, right after the link's
// setState.
func (b *Breaker) leave(tail int, tr transition) {
	b.linkSeen = append(b.linkSeen, tr)
	if len(b.linkSeen) > maxLinkPending {
		b.linkSeen, _ = condenseTail(b.linkSeen)
	}
	if b.onChange != nil {
		n := len(b.queue)
		b.linkTail = min(tail+1, n)
		if n > maxLinkPending && b.linkTail >= 2 { // only the link's own, never a caller's
			var removed int
			b.queue, removed = condenseTail(b.queue)
			b.linkTail -= removed
			b.condensed += uint64(removed)
		}
	}
	b.word.Store(b.word.Load() | pendBit)
}

// condenseTail condenses the last two transitions of q, x → y then y → z,
// into x → z, or drops both when z is x, and returns q and how many
// entries it removed (1 or 2). len(q) >= 2.
func condenseTail(q []transition) ([]transition, int) {
	n := len(q)
	x, z := q[n-2], q[n-1]
	q = q[:n-2]
	if x.from == z.to {
		return q, 2
	}
	return append(q, transition{from: x.from, to: z.to, seq: z.seq}), 1
}

// takeLinkSeen returns the transitions a BreakerLink made that no call has
// reported to its pipeline yet, for the calling pipeline to report, and
// forgets them. It clears pendBit when nothing else waits to be reported
// (no transition in the queue, nobody delivering it); otherwise report,
// which leaves pendBit set while linkSeen holds transitions, clears it.
// Called after report, so that OnStateChange sees a transition before the
// observer does, as for the call's own.
func (b *Breaker) takeLinkSeen() []transition {
	b.mu.Lock()
	seen := b.linkSeen
	b.linkSeen = nil
	if w := b.word.Load(); w&pendBit != 0 && !b.reporting && len(b.queue) == 0 {
		b.word.Store(w &^ pendBit)
	}
	b.mu.Unlock()
	return seen
}

// report delivers queued transitions to OnStateChange, in order, outside
// the lock. Only one goroutine delivers at a time; one that finds another
// delivering leaves its transitions to it.
func (b *Breaker) report() {
	if b.onChange == nil {
		return
	}
	b.mu.Lock()
	if b.reporting {
		b.mu.Unlock()
		return
	}
	b.reporting = true
	done := false
	defer func() {
		if !done {
			// A panic in the callback. Callers that queued transitions
			// meanwhile left them to this one: deliver them before the
			// panic goes on (a panic among them comes back here again).
			b.mu.Lock()
			b.reporting = false
			b.mu.Unlock()
			b.report()
		}
	}()
	for len(b.queue) > 0 {
		tr := b.queue[0]
		b.queue = b.queue[1:]
		if len(b.queue) == 0 {
			b.queue = nil
		}
		b.mu.Unlock()
		b.onChange(tr.from, tr.to)
		b.mu.Lock()
	}
	// Cleared with the queue seen empty under the lock, so a transition
	// queued after this is delivered by the caller that queued it (or, for
	// a BreakerLink's, by the next caller, which pendBit sends here). A
	// link's transitions that no call has reported to its pipeline yet keep
	// pendBit set for the next call (see takeLinkSeen).
	b.reporting = false
	if w := b.word.Load(); w&pendBit != 0 && len(b.linkSeen) == 0 {
		b.word.Store(w &^ pendBit)
	}
	done = true
	b.mu.Unlock()
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

func floorMod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

type breakerStage[T any] struct {
	b     *Breaker
	inner stageFunc[T] // the stages it wraps; nil: fn itself
	_     linePad
}

// Breaker returns a pipeline in which b guards the stages added before it:
// while b is open, calls fail at once with ErrBreakerOpen and the wrapped
// stages do not run. The outcome of every admitted call is counted by b: a
// success, a failure (an error marked Transient, or an unmarked error for
// which BreakerPolicy.FailureIf holds) or ignored (a Permanent error, other
// unmarked errors, a panic). The closed path takes no lock and allocates
// nothing. It panics when b is nil or was not made by NewBreaker (a zero
// Breaker).
func (p Pipeline[T]) Breaker(b *Breaker) Pipeline[T] {
	if b == nil {
		panic("resil: Breaker b must be non-nil, got nil")
	}
	if !b.made() {
		panic("resil: Breaker b must be made by NewBreaker, got a zero Breaker")
	}
	return p.with(breakerStage[T]{b: b, inner: p.outer}.compile())
}

//go:noinline // see stageFunc
func (s breakerStage[T]) compile() stageFunc[T] {
	return func(ctx context.Context, n next[T]) (T, error) {
		b := s.b
		w := b.word.Load()
		if w&(stateMask|pendBit) != 0 { // not closed, or transitions to report
			return s.runSlow(ctx, n, w)
		}
		// Closed: nothing is held while the wrapped stages run, so a panic or
		// Goexit needs no cleanup (and no defer is paid for).
		var (
			v   T
			err error
		)
		switch { // n.run inlined: see next.run
		case s.inner != nil:
			v, err = s.inner(ctx, n)
		case n.m == nil:
			v, err = n.fn(ctx)
		default:
			v, err = n.run(ctx, s.inner)
		}
		if err == nil {
			// succeedClosed, its common case inlined: a call less.
			shards, pid := b.shards, procPin()
			ok := uint(pid) < uint(len(shards)) && shards[pid].count(uint32(w>>genShift), b.batch.Load())
			procUnpin()
			if !ok {
				b.succeedClosed(w >> genShift)
			}
			return v, nil
		}
		s.failedClosed(ctx, &n, w>>genShift, err) // outlined: keeps this frame small
		if s.inner != nil {
			return v, err // a Fallback inside may have supplied v
		}
		var zero T // fn's own value is dropped: see next.run
		return zero, err
	}
}

// failedClosed records the error of a call admitted closed in generation
// gen.
func (s breakerStage[T]) failedClosed(ctx context.Context, n *next[T], gen uint64, err error) {
	if s.b.classify(ctx, err) == failure {
		if tr, ok := s.b.failClosed(gen); ok {
			n.emitChange(ctx, tr)
		}
	}
}

func (s breakerStage[T]) runSlow(ctx context.Context, n next[T], w uint64) (T, error) {
	b := s.b
	var zero T
	if w&pendBit != 0 { // a BreakerLink's transitions wait for a caller
		b.report()
		// This call is the breaker's first since the link moved it: its
		// pipeline hears of the moves, before its own events. Nothing is
		// held yet, should the observer panic.
		for _, tr := range b.takeLinkSeen() {
			n.emitChange(ctx, tr)
		}
		w = b.word.Load()
	}
	if BreakerState(w&stateMask) == StateOpen && clock() < b.openUntil.Load() {
		n.emit(ctx, Event{Kind: EventRejected, Attempt: n.attempt, Err: ErrBreakerOpen})
		return zero, ErrBreakerOpen
	}
	t, ok, tr, changed := b.admitSlow()
	if changed && !(ok && t.trial) { // a trial reports it where its place is safe
		n.emitChange(ctx, tr)
	}
	if !ok {
		n.emit(ctx, Event{Kind: EventRejected, Attempt: n.attempt, Err: ErrBreakerOpen})
		return zero, ErrBreakerOpen
	}
	if !t.trial {
		v, err := n.run(ctx, s.inner)
		if err == nil {
			b.succeedClosed(t.gen)
			return v, nil
		}
		if b.classify(ctx, err) == failure {
			if tr, ok := b.failClosed(t.gen); ok {
				n.emitChange(ctx, tr)
			}
		}
		return v, err
	}
	return s.runTrial(ctx, n, t, tr, changed)
}

// runTrial runs a half-open trial, first reporting the transition its
// admission made (open → half-open), if changed. Its place is given back on
// every exit that brings no outcome: a panic (in fn, in an observer or in
// FailureIf), runtime.Goexit.
func (s breakerStage[T]) runTrial(ctx context.Context, n next[T], t ticket, tr transition, changed bool) (v T, err error) {
	settled := false
	defer func() {
		if !settled {
			s.b.settleTrial(t, ignored)
		}
	}()
	if changed {
		n.emitChange(ctx, tr)
	}
	v, err = n.run(ctx, s.inner)
	o := success
	if err != nil {
		o = s.b.classify(ctx, err) // FailureIf may panic: the place goes back
	}
	settled = true
	if tr, ok := s.b.settleTrial(t, o); ok {
		n.emitChange(ctx, tr)
	}
	return v, err
}

func (n *next[T]) emitChange(ctx context.Context, tr transition) {
	n.emit(ctx, Event{Kind: EventStateChange, From: tr.from, To: tr.to, Seq: tr.seq})
}
