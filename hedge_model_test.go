package resil_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// This file checks the Hedge stage against a reference model: the contract
// of API.md (More stages: Hedge) and the Hedge doc comments, written out as
// a plain event-by-event simulation over nanoseconds of fake time. Seeded
// random scenarios (a Delay, MaxHedges from 0 to 3, for each attempt how
// long fn runs, whether it honours its context and how it ends: a value,
// an error or a panic; a caller's context with no deadline or one before,
// at or just around a hedge's time, or cancelled by the test, before Run
// or while it runs) run through both in a synctest bubble, and everything
// that can be observed is compared: which attempts start and when, their
// numbers (the order of fn's calls and the observer's EventAttempt), when
// each fn ends, when each attempt's context ends, when Run returns and
// what with (the value, which error, which panic).
//
// The model reads the contract as follows:
//   - A context that has ended, or whose deadline has come, when Run is
//     called starts no attempt: Run returns its error at once
//     (context.DeadlineExceeded for a deadline come).
//   - A deadline at most Delay away leaves no time for a hedge: the one
//     attempt runs inline with the caller's context, Run returns when fn
//     does, and an error that comes back once the context has ended is
//     the context's error. A value is returned even when it came late.
//   - Otherwise attempt k (from 1) starts at (k-1)·Delay, for k up to
//     1+MaxHedges (MaxHedges 0 counts as 1), while no success has come,
//     and only when that time is before the deadline (a hedge due at the
//     deadline ends Run with context.DeadlineExceeded, as the deadline
//     does). A failure does not bring the next attempt forward.
//   - The first success is returned at once; a panic is re-raised at once
//     on the caller's goroutine with its value. When every started attempt
//     has failed and none is left to start (none left, or the next one's
//     time is not before the deadline), the error that arrived last is
//     returned then.
//   - When the context ends (deadline or cancellation), Run returns its
//     error at once.
//   - Hedged attempts run with a context of their own, which ends exactly
//     when Run returns (in every case: the caller's context ending ends Run
//     at that instant too). An attempt that honours its context ends then;
//     one that does not runs on, and its result is dropped. The inline
//     attempt's context is the caller's.
//
// Events at one instant of fake time that come from different goroutines
// with nothing ordering them can happen in either order, in the code as in
// the world. A scenario is drawn again when the outcome could hang on such
// an order: two attempts whose fns end at one instant, an attempt's fn
// ending at a hedge's time or at the deadline (its timer races the hedge
// timer or the context's), and a cancellation at the deadline. A hedge due
// at the deadline is kept: either timer first, Run returns
// context.DeadlineExceeded and starts nothing. The test cancels the
// context from its own goroutine after synctest.Wait, so after everything
// else due at that instant: a cancellation at a hedge's time comes after
// the hedge has started, one at the instant an fn ends comes after Run has
// taken its result.

// hmUnit is the grid of most times in a scenario; some are a nanosecond
// off it.
const hmUnit = time.Millisecond

// hmNone marks a time that is not set (no deadline, no cancellation).
const hmNone = time.Duration(-1 << 62)

// hmHorizon is later than anything in a scenario.
const hmHorizon = time.Second

type hmKind int

const (
	hmValue hmKind = iota // fn returns 100+k
	hmError               // fn returns attempt k's error (with a value 7, which Run drops)
	hmPanic               // fn panics with hmPanicVal{k}
)

type hmPanicVal struct{ attempt int }

// hmAttempt is what attempt k's fn does: it runs for dur (less when it
// honours its context and that ends first, and then returns ctx.Err()),
// then ends as kind says.
type hmAttempt struct {
	dur    time.Duration
	kind   hmKind
	honour bool
}

type hmScenario struct {
	seed      uint64
	delay     time.Duration
	maxHedges int
	attempts  []hmAttempt   // 1+MaxHedges of them (MaxHedges 0 counts as 1)
	deadline  time.Duration // from the start; hmNone: none
	cancelAt  time.Duration // the test cancels the context then; 0: before Run; hmNone: never
	observed  bool
}

func hmFmt(d time.Duration) string {
	if d == hmNone {
		return "none"
	}
	return d.String()
}

func (sc *hmScenario) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed=%d Delay=%v MaxHedges=%d deadline=%s cancel=%s observed=%v\n",
		sc.seed, sc.delay, sc.maxHedges, hmFmt(sc.deadline), hmFmt(sc.cancelAt), sc.observed)
	for i, a := range sc.attempts {
		fmt.Fprintf(&b, "attempt %d: fn %v then %s", i+1, a.dur, [...]string{"value", "error", "panic"}[a.kind])
		if a.honour {
			b.WriteString(" (honours ctx)")
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// hmOutcome is everything a scenario shows. Times are from the start;
// index k-1 is attempt k (fn's k-th call).
type hmOutcome struct {
	Starts  []time.Duration // when fn started
	Events  []string        // the observer's EventAttempts: "attempt N at T"
	FnEnds  []time.Duration // when fn returned or panicked
	CtxEnds []time.Duration // when the attempt's context ended; hmNone: not by the horizon
	End     time.Duration   // when Run returned or panicked
	Result  string          // "value N", "err TAG", "panic N"
}

// hmTag names an error for comparison.
func hmTag(err error, errs []error) string {
	switch {
	case err == nil:
		return "nil"
	case err == context.Canceled:
		return "canceled"
	case err == context.DeadlineExceeded:
		return "deadline"
	}
	if k := slices.Index(errs, err); k >= 0 {
		return fmt.Sprint("fn", k+1)
	}
	return fmt.Sprintf("other %T: %v", err, err)
}

type hmObserver struct {
	mu     sync.Mutex
	events []string
}

func (o *hmObserver) Observe(_ context.Context, e resil.Event) {
	if e.Kind != resil.EventAttempt {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, fmt.Sprintf("attempt %d at %v", e.Attempt, e.Elapsed))
}

// hmRunCode runs sc through resil in the caller's synctest bubble.
func hmRunCode(sc *hmScenario) hmOutcome {
	start := time.Now()
	since := func() time.Duration { return time.Since(start) }
	n := len(sc.attempts)
	errs := make([]error, n)
	for k := range errs {
		errs[k] = fmt.Errorf("attempt %d failed", k+1)
	}
	obs := &hmObserver{}
	p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: sc.delay, MaxHedges: sc.maxHedges})
	if sc.observed {
		p = p.Named("hedge").Observe(obs)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if sc.deadline != hmNone {
		var cancelD context.CancelFunc
		ctx, cancelD = context.WithDeadline(ctx, start.Add(sc.deadline))
		defer cancelD()
	}

	var (
		mu    sync.Mutex
		out   hmOutcome
		calls atomic.Int64
	)
	out.FnEnds = make([]time.Duration, n)
	out.CtxEnds = make([]time.Duration, n)
	for k := range n {
		out.FnEnds[k], out.CtxEnds[k] = hmNone, hmNone
	}
	fn := func(ctx context.Context) (int, error) {
		k := int(calls.Add(1))
		mu.Lock()
		out.Starts = append(out.Starts, since())
		mu.Unlock()
		if k > n {
			return 0, fmt.Errorf("attempt %d of %d", k, n)
		}
		a := sc.attempts[k-1]
		context.AfterFunc(ctx, func() {
			mu.Lock()
			defer mu.Unlock()
			out.CtxEnds[k-1] = since()
		})
		defer func() {
			mu.Lock()
			defer mu.Unlock()
			out.FnEnds[k-1] = since()
		}()
		if a.honour {
			tm := time.NewTimer(a.dur)
			defer tm.Stop()
			select {
			case <-tm.C:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		} else {
			time.Sleep(a.dur)
		}
		switch a.kind {
		case hmError:
			return 7, errs[k-1]
		case hmPanic:
			panic(hmPanicVal{k})
		}
		return 100 + k, nil
	}

	if sc.cancelAt == 0 {
		cancel()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				mu.Lock()
				defer mu.Unlock()
				out.End = since()
				if pv, ok := r.(hmPanicVal); ok {
					out.Result = fmt.Sprint("panic ", pv.attempt)
				} else {
					out.Result = fmt.Sprintf("panic with %v", r)
				}
			}
		}()
		v, err := p.Run(ctx, fn)
		mu.Lock()
		defer mu.Unlock()
		out.End = since()
		switch {
		case err == nil:
			out.Result = fmt.Sprint("value ", v)
		case v != 0:
			out.Result = fmt.Sprintf("err %s with value %d", hmTag(err, errs), v)
		default:
			out.Result = "err " + hmTag(err, errs)
		}
	}()
	if sc.cancelAt > 0 {
		time.Sleep(sc.cancelAt - since())
		synctest.Wait() // all else due at this instant has happened
		cancel()
	}
	<-done
	time.Sleep(hmHorizon - since()) // every fn and every timer is done
	synctest.Wait()
	mu.Lock()
	defer mu.Unlock()
	obs.mu.Lock()
	defer obs.mu.Unlock()
	out.Events = slices.Clone(obs.events)
	slices.Sort(out.Events)
	return out
}

// hmStats counts the cases of interest the scenarios reached.
type hmStats struct {
	drawn, racy       int
	endedBeforeRun    int // the context had ended when Run was called
	inline            int // one attempt, inline
	hedged            int // a hedge started
	allStarted        int // every attempt started
	noHedgeAtDeadline int // a hedge was due at the deadline
	hedgeJustBefore   int // a hedge started 1ns before the deadline
	lastErr           int // every attempt failed: the last error returned
	lastErrNotLatest  int // ... and it was not the last attempt's
	stoppedByDeadline int // no hedge left to start before the deadline: Run returned the last error early
	ctxEnded          int // Run returned the context's error, attempts running
	panics            int
	lateResults       int // an attempt that did not honour its context ended after Run
	valueWon          int
	hedgeWon          int // a hedge's value won
}

// hmRunModel works out what sc should show, or why it cannot say (racy).
func hmRunModel(sc *hmScenario, st *hmStats) (want hmOutcome, racy string) {
	n := len(sc.attempts)
	D, C := sc.deadline, sc.cancelAt
	want.FnEnds = make([]time.Duration, n)
	want.CtxEnds = make([]time.Duration, n)
	for k := range n {
		want.FnEnds[k], want.CtxEnds[k] = hmNone, hmNone
	}
	if D != hmNone && C != hmNone && D == C {
		return want, "the test cancels at the deadline"
	}
	var s hmStats
	defer func() {
		if racy == "" {
			st.add(s)
		}
	}()
	start := func(t time.Duration) {
		want.Starts = append(want.Starts, t)
		if sc.observed {
			want.Events = append(want.Events, fmt.Sprintf("attempt %d at %v", len(want.Starts), t))
		}
	}
	ctxErr := func() string { // the context's error, once it has ended
		if D != hmNone && (C == hmNone || D < C) {
			return "err deadline"
		}
		return "err canceled"
	}
	defer slices.Sort(want.Events)

	switch {
	case D != hmNone && D <= 0:
		s.endedBeforeRun++
		want.Result = "err deadline"
		return want, ""
	case C == 0:
		s.endedBeforeRun++
		want.Result = "err canceled"
		return want, ""
	case D != hmNone && D <= sc.delay:
		// One attempt, inline, with the caller's context.
		s.inline++
		a := sc.attempts[0]
		if a.dur == D {
			return want, "the inline fn ends at the deadline"
		}
		ctxEnd := D
		if C != hmNone {
			ctxEnd = min(ctxEnd, C)
		}
		start(0)
		want.CtxEnds[0] = ctxEnd
		if a.honour && ctxEnd < a.dur {
			want.FnEnds[0], want.End, want.Result = ctxEnd, ctxEnd, ctxErr()
			return want, ""
		}
		want.FnEnds[0], want.End = a.dur, a.dur
		switch {
		case a.kind == hmPanic:
			s.panics++
			want.Result = "panic 1"
		case a.kind == hmValue:
			s.valueWon++
			want.Result = "value 101"
		case ctxEnd < a.dur: // a cancellation at a.dur comes after Run has returned
			want.Result = ctxErr()
		default:
			want.Result = "err fn1"
		}
		return want, ""
	}

	// Hedged: attempts on goroutines.
	ends := make([]time.Duration, 0, n) // natural end of each started attempt
	answered := make([]bool, 0, n)
	startAt := func(t time.Duration) {
		start(t)
		ends = append(ends, t+sc.attempts[len(ends)].dur)
		answered = append(answered, false)
	}
	startAt(0)
	hedgeAt := sc.delay // the next hedge's time, while len(ends) < n
	nAnswered, last := 0, 0
	var end time.Duration
	for want.Result == "" {
		t := hmHorizon
		var due []int
		for k, e := range ends {
			if answered[k] {
				continue
			}
			if e < t {
				t, due = e, due[:0]
			}
			if e == t {
				due = append(due, k)
			}
		}
		hedgeDue := false
		if len(ends) < n {
			if hedgeAt < t {
				t, due = hedgeAt, nil
			}
			hedgeDue = hedgeAt == t
		}
		if D != hmNone && D < t {
			t, due, hedgeDue = D, nil, false
		}
		if C != hmNone && C < t {
			t, due, hedgeDue = C, nil, false
		}
		deadlineDue := D == t
		switch {
		case len(due) > 1:
			return want, fmt.Sprintf("attempts %d and %d end at %v", due[0]+1, due[1]+1, t)
		case len(due) == 1 && hedgeDue:
			return want, fmt.Sprintf("attempt %d ends at the hedge's time %v", due[0]+1, t)
		case len(due) == 1 && deadlineDue:
			return want, fmt.Sprintf("attempt %d ends at the deadline %v", due[0]+1, t)
		}
		if len(due) == 1 {
			k := due[0]
			answered[k] = true
			switch sc.attempts[k].kind {
			case hmPanic:
				s.panics++
				want.Result = fmt.Sprint("panic ", k+1)
			case hmValue:
				s.valueWon++
				if k > 0 {
					s.hedgeWon++
				}
				want.Result = fmt.Sprint("value ", 101+k)
			case hmError:
				nAnswered++
				last = k
				// Another attempt is left to start when one is, and its
				// time comes before the deadline.
				left := len(ends) < n && (D == hmNone || hedgeAt < D)
				if nAnswered == len(ends) && !left {
					s.lastErr++
					if last != len(ends)-1 {
						s.lastErrNotLatest++
					}
					if len(ends) < n {
						s.stoppedByDeadline++
					}
					want.Result = fmt.Sprint("err fn", last+1)
				}
			}
		}
		if want.Result == "" && hedgeDue {
			if deadlineDue {
				s.noHedgeAtDeadline++
				s.ctxEnded++
				want.Result = "err deadline"
			} else {
				if D != hmNone && D-t == 1 {
					s.hedgeJustBefore++
				}
				startAt(t)
				hedgeAt += sc.delay
			}
		} else if want.Result == "" && deadlineDue {
			s.ctxEnded++
			want.Result = "err deadline"
		}
		if want.Result == "" && C == t {
			s.ctxEnded++
			want.Result = "err canceled"
		}
		end = t
	}
	want.End = end
	if len(ends) > 1 {
		s.hedged++
	}
	if len(ends) == n {
		s.allStarted++
	}
	for k, e := range ends {
		want.CtxEnds[k] = end
		switch {
		case e <= end:
			want.FnEnds[k] = e
		case sc.attempts[k].honour:
			want.FnEnds[k] = end
		default:
			s.lateResults++
			want.FnEnds[k] = e
		}
	}
	return want, ""
}

func (s *hmStats) add(o hmStats) {
	s.endedBeforeRun += o.endedBeforeRun
	s.inline += o.inline
	s.hedged += o.hedged
	s.allStarted += o.allStarted
	s.noHedgeAtDeadline += o.noHedgeAtDeadline
	s.hedgeJustBefore += o.hedgeJustBefore
	s.lastErr += o.lastErr
	s.lastErrNotLatest += o.lastErrNotLatest
	s.stoppedByDeadline += o.stoppedByDeadline
	s.ctxEnded += o.ctxEnded
	s.panics += o.panics
	s.lateResults += o.lateResults
	s.valueWon += o.valueWon
	s.hedgeWon += o.hedgeWon
}

// hmDraw draws one scenario from rng, which may hold instants that the
// contract cannot order (the model says so).
func hmDraw(rng *rand.Rand, seed uint64) *hmScenario {
	pick := func(xs ...int) int { return xs[rng.IntN(len(xs))] }
	nudge := func(d time.Duration) time.Duration { // on the grid, or 1ns either side
		return d + time.Duration(pick(0, 0, -1, 1))
	}
	units := pick(2, 3, 4, 5)
	sc := &hmScenario{
		seed:      seed,
		delay:     time.Duration(units) * hmUnit,
		maxHedges: rng.IntN(4),
		deadline:  hmNone,
		cancelAt:  hmNone,
		observed:  rng.IntN(4) > 0,
	}
	n := 1 + max(sc.maxHedges, 1)
	failing := rng.IntN(4) == 0          // every attempt fails, or most do
	quick := failing && rng.IntN(2) == 0 // failures before the next hedge
	for range n {
		longest := 3 * units
		if quick {
			longest = units
		}
		a := hmAttempt{
			dur:    max(1, nudge(time.Duration(1+rng.IntN(longest))*hmUnit)),
			honour: rng.IntN(2) == 0,
		}
		switch r := rng.IntN(100); {
		case failing && r < 90:
			a.kind = hmError
		case r < 45:
			a.kind = hmValue
		case r < 85:
			a.kind = hmError
		default:
			a.kind = hmPanic
		}
		sc.attempts = append(sc.attempts, a)
	}
	span := time.Duration(n) * sc.delay
	// A time of interest: a hedge's, an attempt's end, or any.
	moment := func() time.Duration {
		switch rng.IntN(4) {
		case 0, 3:
			return nudge(time.Duration(rng.IntN(n+1)) * sc.delay)
		case 1:
			k := rng.IntN(n)
			return nudge(time.Duration(k)*sc.delay + sc.attempts[k].dur)
		}
		return time.Duration(rng.IntN(int(span/hmUnit)+3)) * hmUnit
	}
	switch {
	case quick && n > 2 && rng.IntN(2) == 0: // between two hedges, past the first
		sc.deadline = sc.delay + time.Duration(1+rng.IntN(int(time.Duration(n-2)*sc.delay)))
	case n > 2 && rng.IntN(6) == 0: // at a hedge's time
		sc.deadline = time.Duration(2+rng.IntN(n-2)) * sc.delay
	case rng.IntN(10) < 6:
		sc.deadline = moment()
	}
	switch r := rng.IntN(10); {
	case r < 1:
		sc.cancelAt = 0
	case r < 4:
		sc.cancelAt = max(1, moment())
	}
	return sc
}

// hmScenarioFor draws scenarios from seed until one holds no instant the
// contract cannot order.
func hmScenarioFor(seed uint64, st *hmStats) (*hmScenario, hmOutcome) {
	rng := rand.New(rand.NewPCG(seed, seed^0x4ed9e))
	for range 1000 {
		sc := hmDraw(rng, seed)
		st.drawn++
		want, racy := hmRunModel(sc, st)
		if racy != "" {
			st.racy++
			continue
		}
		return sc, want
	}
	panic("no scenario without a race")
}

// TestHedgeModel runs seeded random scenarios through a Hedge stage and
// the reference model, in fake time, and compares all that they show.
func TestHedgeModel(t *testing.T) {
	var st hmStats
	forEachSeed(t, 2000, func(seed uint64) func(t *testing.T) {
		sc, want := hmScenarioFor(seed, &st)
		return func(t *testing.T) {
			got := hmRunCode(sc)
			require.Equal(t, want, got, "the model (want) and resil (got) disagree; replay with -run 'TestHedgeModel/seed=%d$'\n%v", sc.seed, sc)
		}
	})
	t.Logf("%+v", st)
	if testing.Short() {
		return
	}
	// The cases of interest were reached, many times.
	assert.Greater(t, st.endedBeforeRun, 20, "the context had ended before Run")
	assert.Greater(t, st.inline, 20, "one attempt, inline")
	assert.Greater(t, st.hedged, 150, "hedges started")
	assert.Greater(t, st.allStarted, 50, "every attempt started")
	assert.Greater(t, st.noHedgeAtDeadline, 10, "a hedge due at the deadline did not start")
	assert.Greater(t, st.hedgeJustBefore, 5, "a hedge started 1ns before the deadline")
	assert.Greater(t, st.lastErr, 30, "every attempt failed")
	assert.Greater(t, st.lastErrNotLatest, 5, "the error that arrived last was not the latest attempt's")
	assert.Greater(t, st.stoppedByDeadline, 5, "no hedge could start before the deadline: the last error at once")
	assert.Greater(t, st.ctxEnded, 50, "the context ended while attempts ran")
	assert.Greater(t, st.panics, 20, "a panic reached the caller")
	assert.Greater(t, st.lateResults, 50, "an attempt ran on after Run, its result dropped")
	assert.Greater(t, st.hedgeWon, 50, "a hedge's value won")
	assert.Less(t, st.racy, st.drawn/2, "most scenarios drawn are used")
}
