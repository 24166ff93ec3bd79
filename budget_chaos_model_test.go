package resil_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// This file checks RetryBudget and Chaos against reference models.
//
// RetryBudget. The model is the rule of API.md and the RetryBudget doc
// comment, written out over exact instants of fake time: a call (a run of a
// Retry stage that makes its first attempt, whatever its outcome) is
// recorded when the run starts; a retry is asked for right after the failed
// attempt, before its wait, once the error is retryable, the context live,
// attempts left and MaxElapsed not in the way; it is granted when, counting
// itself, the retries of the last TTL stay within Ratio × the calls of the
// last TTL + MinPerSecond × TTL. A denied retry ends the run at once with an
// error that matches ErrRetryBudgetExhausted and is a *RetryError (the
// attempts made, the last error), and an EventRejected for the attempt whose
// retry it was; a granted retry whose wait the context cuts short is given
// back. Seeded scenarios of a few hundred calls (Retry stages of both T,
// with their own MaxAttempts, backoff, MaxElapsed, OnRetry, observer,
// contexts cancelled before the call or during it; attempts that succeed,
// fail unmarked, marked Transient or Permanent) share one budget and
// overlap in fake time, and the model replays them event by event.
//
// The budget keeps time in buckets of TTL/10 and dates a call in the bucket
// of the last clock reading, so the model allows, at each ask at instant t,
// the precision the doc comment states:
//   - a retry made at s counts at t at least while t-s < TTL and at most
//     while t-s < 1.1·TTL;
//   - a call made at c counts at most while t-c < TTL, and surely while
//     t-r <= TTL - TTL/10, r being a lower bound of the last clock reading
//     at or before c: the budget's creation, the last retry asked before c
//     ("asking for a retry ... reads the clock"), and the call 63 calls
//     before it (the clock is read at least every 64 calls).
//
// The doc comment's "a call may be dated up to about half a bucket early"
// is not a bound that holds here (with r = c - TTL/20, or even c - 0.8·TTL,
// most seeds fail): after two calls close together the clock is next read
// only some calls later, however late they come, and the doc comment
// leaves that open ("when traffic falls sharply, calls made before the
// next reading may count for less"). Such a call counts for less, never
// more, so the budget only grants less.
//
// An ask the rule must grant even with the fewest calls and the most
// retries is checked granted, one it must deny even with the most calls and
// the fewest retries is checked denied; in between, the model follows what
// the budget did. Everything observable of every call is then compared
// (attempt starts, when Run returns, the value, the error as errors.Is and
// errors.As see it, OnRetry's and the observer's EventRetry and
// EventRejected), and the doc comment's bound over stretches is checked on
// the retries made: over any stretch [a, b], retries <= Ratio × the calls of
// (a-TTL, b] + MinPerSecond × TTL × max(1, ⌈(b-a)/TTL⌉), as well as API.md's
// window rule on every window that ends at a retry.
//
// All events of call i fall on instants ≡ i modulo a grid of 2n+2 ns (n
// calls), the cancellations on instants ≡ n+1+i, so no two events of
// different calls, and no cancellation and event, ever share an instant.
// TTLs are multiples of 10ns (TestRetryBudgetTTLNotMultipleOf10ns covers the
// others). The buckets' phase against fake time depends on the process (the
// library's clock counts from a real-time epoch), so which way the free
// asks go may change from run to run; the checks hold for every phase.

const (
	bmOK        = iota // the attempt succeeds
	bmUnmarked         // an unmarked error: transient by default
	bmMarked           // resil.Transient(...)
	bmPermanent        // resil.Permanent(...)
)

type bmAttempt struct {
	dur  time.Duration
	kind int
}

// bmCall is one run of a Retry stage sharing the scenario's budget. Times
// are from the scenario's start.
type bmCall struct {
	start        time.Duration
	maxAttempts  int           // as configured: 0 means 3
	backoff      time.Duration // Constant(backoff)
	maxElapsed   time.Duration
	cancelBefore bool          // ctx cancelled before Run
	cancelAt     time.Duration // a timer cancels ctx then; 0: never
	onRetry      bool
	observed     bool
	str          bool // a Pipeline[string], else Pipeline[int]
	attempts     [5]bmAttempt
}

type bmScenario struct {
	seed    uint64
	policy  resil.RetryBudgetPolicy
	ttl     time.Duration // in effect: 0 means 10s, below 10µs is 10µs
	width   time.Duration // a bucket: TTL/10
	ratio   float64       // in effect
	reserve float64       // MinPerSecond × TTL, in effect
	grid    time.Duration
	calls   []bmCall
}

func (sc *bmScenario) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed=%d policy=%+v (TTL %v, bucket %v, Ratio %g, reserve %g) grid=%v calls=%d\n",
		sc.seed, sc.policy, sc.ttl, sc.width, sc.ratio, sc.reserve, sc.grid, len(sc.calls))
	return b.String()
}

func (sc *bmScenario) callString(i int) string {
	c := sc.calls[i]
	var b strings.Builder
	fmt.Fprintf(&b, "call %d: start %v MaxAttempts=%d Constant(%v) MaxElapsed=%v cancelBefore=%v cancelAt=%v OnRetry=%v observed=%v string=%v attempts:",
		i, c.start, c.maxAttempts, c.backoff, c.maxElapsed, c.cancelBefore, c.cancelAt, c.onRetry, c.observed, c.str)
	for _, a := range c.attempts {
		fmt.Fprintf(&b, " %v/%s", a.dur, []string{"ok", "unmarked", "Transient", "Permanent"}[a.kind])
	}
	return b.String()
}

func bmGenScenario(seed uint64) *bmScenario {
	rng := rand.New(rand.NewPCG(seed, seed^0xb5ad4eceda1ce2a9))
	sc := &bmScenario{seed: seed}
	ttl := []time.Duration{0, time.Second, 200 * time.Millisecond, 30 * time.Millisecond, 20 * time.Microsecond, 4 * time.Microsecond}[rng.IntN(6)]
	sc.policy.TTL = ttl
	if ttl == 0 {
		ttl = 10 * time.Second
	}
	sc.ttl = max(ttl, 10*time.Microsecond)
	sc.width = max(ttl/10, time.Microsecond)
	sc.policy.Ratio = []float64{0, 0.1, 0.25, 0.5, 1, 3}[rng.IntN(6)]
	sc.ratio = sc.policy.Ratio
	if sc.ratio == 0 {
		sc.ratio = 0.2
	}
	perSecond := 10.0
	if r := []float64{0, 0.5, 1, 2, 4, 1e-9}[rng.IntN(6)]; r != 0 {
		perSecond = r / sc.ttl.Seconds()
		sc.policy.MinPerSecond = perSecond
	}
	sc.reserve = perSecond * sc.ttl.Seconds() // as NewRetryBudget computes it

	n := 60 + rng.IntN(200)
	sc.grid = time.Duration(2*n + 2)
	units := func(d time.Duration) time.Duration { // a random multiple of the grid in [0, d]
		return time.Duration(rng.Int64N(int64(d/sc.grid)+1)) * sc.grid
	}
	perTTL := []int{3, 10, 30, 80}[rng.IntN(4)]
	okPct := []int{10, 30, 60}[rng.IntN(3)]
	var base time.Duration
	for i := range n {
		gap := units(2 * sc.ttl / time.Duration(perTTL))
		if rng.IntN(40) == 0 { // a pause: traffic falls sharply
			gap = units(2*sc.ttl) + sc.ttl
		}
		base += gap
		c := bmCall{
			start:       base + time.Duration(i),
			maxAttempts: []int{0, 1, 2, 3, 5, 5}[rng.IntN(6)],
			onRetry:     rng.IntN(2) == 0,
			observed:    rng.IntN(10) < 3,
			str:         rng.IntN(2) == 0,
		}
		switch rng.IntN(3) {
		case 0:
		case 1:
			c.backoff = units(sc.width)
		default:
			c.backoff = units(3 * sc.width)
		}
		if rng.IntN(7) == 0 {
			c.maxElapsed = units(3*sc.width) + sc.grid
		}
		switch r := rng.IntN(100); {
		case r < 3:
			c.cancelBefore = true
		case r < 13:
			c.cancelAt = c.start + units(4*sc.width) + sc.grid/2
		}
		for k := range c.attempts {
			a := &c.attempts[k]
			if rng.IntN(2) == 0 {
				a.dur = units(sc.width)
			}
			switch r := rng.IntN(100); {
			case r < okPct:
				a.kind = bmOK
			case r < okPct+5:
				a.kind = bmPermanent
			case r < okPct+20:
				a.kind = bmMarked
			default:
				a.kind = bmUnmarked
			}
		}
		sc.calls = append(sc.calls, c)
	}
	return sc
}

// bmErrs builds the errors the attempts of every call fail with: distinct
// values, so that an error can be traced to its attempt.
func (sc *bmScenario) bmErrs() [][5]error {
	errs := make([][5]error, len(sc.calls))
	for i, c := range sc.calls {
		for k, a := range c.attempts {
			e := fmt.Errorf("budget model: call %d attempt %d", i, k+1)
			switch a.kind {
			case bmMarked:
				e = resil.Transient(e)
			case bmPermanent:
				e = resil.Permanent(e)
			}
			errs[i][k] = e
		}
	}
	return errs
}

// bmFacts is what can be observed of the error a call returns.
type bmFacts struct {
	Nil           bool
	Last          bool // the last attempt's error itself
	CtxErr        bool // context.Canceled itself
	Budget        bool // errors.Is ErrRetryBudgetExhausted
	Canceled      bool // errors.Is context.Canceled
	IsLast        bool // errors.Is the last attempt's error
	RetryAttempts int  // errors.As *RetryError: its Attempts; 0 when not one
	RetryErrLast  bool // and its Err is the last attempt's error
}

func bmFactsOf(err, last error) bmFacts {
	f := bmFacts{Nil: err == nil}
	if err == nil {
		return f
	}
	f.Last = last != nil && err == last
	f.CtxErr = err == context.Canceled
	f.Budget = errors.Is(err, resil.ErrRetryBudgetExhausted)
	f.Canceled = errors.Is(err, context.Canceled)
	f.IsLast = last != nil && errors.Is(err, last)
	var re *resil.RetryError
	if errors.As(err, &re) {
		f.RetryAttempts = re.Attempts
		f.RetryErrLast = re.Err == last
	}
	return f
}

type bmRetryRec struct {
	Attempt int
	Err     string
	Delay   time.Duration
	At      time.Duration
}

type bmEventRec struct {
	Kind    resil.EventKind
	Attempt int
	Err     string
	Delay   time.Duration
	Elapsed time.Duration
}

// bmOutcome is everything observable of one call. Times are from the
// scenario's start, but Elapsed (from the call's).
type bmOutcome struct {
	Starts  []time.Duration
	End     time.Duration
	Value   string
	Err     bmFacts
	Retries []bmRetryRec // OnRetry
	Events  []bmEventRec // the observer's EventRetry and EventRejected
}

// bmObserver keeps a call's EventRetry and EventRejected.
type bmObserver struct {
	tag  func(err error, attempt int) string
	recs []bmEventRec
}

func (o *bmObserver) Observe(_ context.Context, e resil.Event) {
	if e.Kind == resil.EventRetry || e.Kind == resil.EventRejected {
		o.recs = append(o.recs, bmEventRec{e.Kind, e.Attempt, o.tag(e.Err, e.Attempt), e.Delay, e.Elapsed})
	}
}

func bmTag(errs [5]error) func(err error, attempt int) string {
	return func(err error, attempt int) string {
		switch {
		case err == nil:
			return ""
		case err == resil.ErrRetryBudgetExhausted:
			return "ErrRetryBudgetExhausted"
		case attempt >= 1 && attempt <= len(errs) && err == errs[attempt-1]:
			return fmt.Sprint("attempt ", attempt)
		}
		return fmt.Sprintf("other: %v", err)
	}
}

// run runs the scenario through resil, in the caller's synctest bubble.
func (sc *bmScenario) run() []bmOutcome {
	errs := sc.bmErrs()
	budget := resil.NewRetryBudget(sc.policy)
	begin := time.Now()
	since := func() time.Duration { return time.Since(begin) }
	out := make([]bmOutcome, len(sc.calls))
	var wg sync.WaitGroup
	for i := range sc.calls {
		time.Sleep(sc.calls[i].start - since())
		wg.Go(func() { out[i] = sc.runCall(budget, i, errs[i], since) })
	}
	wg.Wait()
	return out
}

func (sc *bmScenario) runCall(budget *resil.RetryBudget, i int, errs [5]error, since func() time.Duration) bmOutcome {
	c := &sc.calls[i]
	var o bmOutcome
	tag := bmTag(errs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if c.cancelBefore {
		cancel()
	}
	if c.cancelAt > 0 {
		defer time.AfterFunc(c.cancelAt-since(), cancel).Stop()
	}
	pol := resil.RetryPolicy{MaxAttempts: c.maxAttempts, Backoff: resil.Constant(c.backoff), MaxElapsed: c.maxElapsed, Budget: budget}
	if c.onRetry {
		pol.OnRetry = func(e resil.RetryEvent) {
			o.Retries = append(o.Retries, bmRetryRec{e.Attempt, tag(e.Err, e.Attempt), e.Delay, since()})
		}
	}
	obs := &bmObserver{tag: tag}
	fn := func(context.Context) (int, error) {
		k := len(o.Starts)
		o.Starts = append(o.Starts, since())
		if k >= len(c.attempts) {
			return 0, errors.New("budget model: no attempt left in the scenario")
		}
		time.Sleep(c.attempts[k].dur)
		if c.attempts[k].kind == bmOK {
			return 100 + k, nil
		}
		return 7, errs[k]
	}
	var err error
	if c.str {
		p := resil.New[string]().Retry(pol)
		if c.observed {
			p = p.Named("model").Observe(obs)
		}
		o.Value, err = p.Run(ctx, func(ctx context.Context) (string, error) {
			v, err := fn(ctx)
			return fmt.Sprint(v), err
		})
	} else {
		p := resil.New[int]().Retry(pol)
		if c.observed {
			p = p.Named("model").Observe(obs)
		}
		var v int
		v, err = p.Run(ctx, fn)
		o.Value = fmt.Sprint(v)
	}
	o.End = since()
	var last error
	if n := len(o.Starts); n >= 1 && n <= len(errs) {
		last = errs[n-1]
	}
	o.Err = bmFactsOf(err, last)
	o.Events = obs.recs
	return o
}

// bmDeposit is a call the model recorded: when it was made, and the
// earliest the budget's last clock reading before it can be.
type bmDeposit struct{ at, read time.Duration }

// bmGrant is a retry the budget granted at at, given back at until.
type bmGrant struct{ at, until time.Duration }

const bmNever = time.Duration(math.MaxInt64)

// bmModel replays a scenario.
type bmModel struct {
	sc        *bmScenario
	got       []bmOutcome // what resil did: followed where the rule leaves a choice
	deposits  []bmDeposit
	grants    []bmGrant
	lastTake  time.Duration
	sureGrant int // asks the rule had to grant
	sureDeny  int // asks the rule had to deny
	free      int // asks within the tolerance
	fails     []string
}

func (m *bmModel) allowed(calls int) float64 {
	a := m.sc.reserve
	if calls > 0 {
		a += m.sc.ratio * float64(calls)
	}
	return a
}

func (m *bmModel) deposit(at time.Duration) {
	read := max(0, m.lastTake)
	if n := len(m.deposits); n >= 63 {
		read = max(read, m.deposits[n-63].at)
	}
	m.deposits = append(m.deposits, bmDeposit{at, read})
}

// take decides the retry asked at t for attempt a of call i.
func (m *bmModel) take(i, a int, t time.Duration) bool {
	sc := m.sc
	m.lastTake = t
	var rMin, rMax, cMin, cMax int
	for _, g := range m.grants {
		if g.until <= t {
			continue // given back
		}
		if age := t - g.at; age < sc.ttl {
			rMin++
			rMax++
		} else if age < sc.ttl+sc.ttl/10 {
			rMax++
		}
	}
	for _, d := range m.deposits {
		if t-d.at < sc.ttl {
			cMax++
		}
		if t-d.read <= sc.ttl-sc.width {
			cMin++
		}
	}
	mustGrant := float64(rMax+1) <= m.allowed(cMin)
	mustDeny := float64(rMin+1) > m.allowed(cMax)
	g := m.got[i].Err
	granted := !(g.Budget && g.RetryAttempts == a)
	state := fmt.Sprintf("ask of call %d attempt %d at %v: retries of the last TTL %d (up to %d counting 1.1·TTL), calls %d (at least %d surely counted); allowed %g..%g",
		i, a, t, rMin, rMax, cMax, cMin, m.allowed(cMin), m.allowed(cMax))
	switch {
	case mustGrant:
		m.sureGrant++
		if !granted {
			m.fails = append(m.fails, "denied, but the rule grants it: "+state)
		}
	case mustDeny:
		m.sureDeny++
		if granted {
			m.fails = append(m.fails, "granted, but the rule denies it: "+state)
		}
	default:
		m.free++
	}
	if granted {
		m.grants = append(m.grants, bmGrant{t, bmNever})
	}
	return granted
}

// bmBudgetErr is the model's error for a denied retry.
type bmBudgetErr struct{ r *resil.RetryError }

func (e *bmBudgetErr) Error() string        { return "budget model: " + e.r.Error() }
func (e *bmBudgetErr) Unwrap() error        { return e.r }
func (e *bmBudgetErr) Is(target error) bool { return target == resil.ErrRetryBudgetExhausted }

// bmCallState is a call in the model's replay.
type bmCallState struct {
	next    time.Duration // the instant of its next step; bmNever: done
	step    int           // bmStart, bmAttemptEnd, bmWaitEnd, bmCancelled
	attempt int
	grant   int // the index of its last grant
	out     bmOutcome
}

const (
	bmStart = iota
	bmAttemptEnd
	bmWaitEnd
	bmCancelled
)

// model replays the scenario and returns what each call should show.
func (m *bmModel) model() []bmOutcome {
	sc := m.sc
	errs := sc.bmErrs()
	m.lastTake = -1
	st := make([]bmCallState, len(sc.calls))
	for i := range st {
		st[i].next = sc.calls[i].start
	}
	for {
		i := -1
		for j := range st {
			if st[j].next != bmNever && (i < 0 || st[j].next < st[i].next) {
				i = j
			}
		}
		if i < 0 {
			break
		}
		for j := range st {
			if j != i && st[j].next == st[i].next {
				panic(fmt.Sprintf("budget model: calls %d and %d both act at %v", i, j, st[i].next))
			}
		}
		s, c, t := &st[i], &sc.calls[i], st[i].next
		tag := bmTag(errs[i])
		var last error
		if s.attempt >= 1 {
			last = errs[i][s.attempt-1]
		}
		finish := func(err error) {
			s.out.End, s.next = t, bmNever
			s.out.Err = bmFactsOf(err, last)
			if err != nil {
				s.out.Value = "0"
				if c.str {
					s.out.Value = ""
				}
			}
		}
		event := func(e bmEventRec) {
			if c.observed {
				e.Elapsed = t - c.start
				s.out.Events = append(s.out.Events, e)
			}
		}
		startAttempt := func() {
			s.attempt++
			s.out.Starts = append(s.out.Starts, t)
			s.step, s.next = bmAttemptEnd, t+c.attempts[s.attempt-1].dur
		}
		switch s.step {
		case bmStart:
			if c.cancelBefore {
				finish(context.Canceled)
				continue
			}
			m.deposit(t)
			startAttempt()
		case bmWaitEnd:
			startAttempt()
		case bmCancelled: // during the wait: the retry is given back
			m.grants[s.grant].until = t
			finish(errors.Join(context.Canceled, last))
		case bmAttemptEnd:
			a := s.attempt
			kind := c.attempts[a-1].kind
			maxA := c.maxAttempts
			if maxA == 0 {
				maxA = 3
			}
			d := c.backoff
			switch {
			case kind == bmOK:
				s.out.Value = fmt.Sprint(100 + a - 1)
				finish(nil)
			case kind == bmPermanent:
				finish(last)
			case c.cancelAt > 0 && c.cancelAt < t:
				finish(errors.Join(context.Canceled, last))
			case a >= maxA:
				finish(&resil.RetryError{Attempts: a, Err: last})
			case c.maxElapsed > 0 && (t-c.start >= c.maxElapsed || d > c.maxElapsed-(t-c.start)):
				finish(&resil.RetryError{Attempts: a, Err: last})
			case !m.take(i, a, t):
				event(bmEventRec{Kind: resil.EventRejected, Attempt: a, Err: "ErrRetryBudgetExhausted"})
				finish(&bmBudgetErr{&resil.RetryError{Attempts: a, Err: last}})
			default:
				s.grant = len(m.grants) - 1
				if c.onRetry {
					s.out.Retries = append(s.out.Retries, bmRetryRec{a, tag(last, a), d, t})
				}
				event(bmEventRec{Kind: resil.EventRetry, Attempt: a, Err: tag(last, a), Delay: d})
				switch {
				case d == 0:
					startAttempt()
				case c.cancelAt > t && c.cancelAt < t+d:
					s.step, s.next = bmCancelled, c.cancelAt
				default:
					s.step, s.next = bmWaitEnd, t+d
				}
			}
		}
	}
	out := make([]bmOutcome, len(st))
	for i := range st {
		out[i] = st[i].out
	}
	return out
}

// checkStretches checks the doc comment's bound over every stretch that
// begins and ends at a retry made, and API.md's window rule on every
// window that ends at one.
func (m *bmModel) checkStretches() {
	sc := m.sc
	var retries, calls []time.Duration
	for _, g := range m.grants {
		if g.until == bmNever {
			retries = append(retries, g.at)
		}
	}
	for _, d := range m.deposits {
		calls = append(calls, d.at)
	}
	slicesSort(retries)
	// in counts the instants of xs in (lo, hi].
	in := func(xs []time.Duration, lo, hi time.Duration) int {
		return sort.Search(len(xs), func(k int) bool { return xs[k] > hi }) -
			sort.Search(len(xs), func(k int) bool { return xs[k] > lo })
	}
	for ai, a := range retries {
		// API.md's rule on the window (a-TTL, a].
		if r, c := in(retries, a-sc.ttl, a), in(calls, a-sc.ttl, a); float64(r) > sc.ratio*float64(c)+sc.reserve+1e-9 {
			m.fails = append(m.fails, fmt.Sprintf("window (%v, %v]: %d retries, %d calls, bound %g", a-sc.ttl, a, r, c, sc.ratio*float64(c)+sc.reserve))
		}
		for bi := ai; bi < len(retries); bi++ {
			b := retries[bi]
			if bi+1 < len(retries) && retries[bi+1] == b {
				continue // the stretch ends after every retry made at b
			}
			k := max(1, int((b-a+sc.ttl-1)/sc.ttl))
			r := bi - ai + 1
			c := in(calls, a-sc.ttl, b)
			bound := sc.ratio*float64(c) + sc.reserve*float64(k)
			if float64(r) > bound*(1+1e-12)+1e-9 {
				m.fails = append(m.fails, fmt.Sprintf("stretch [%v, %v] (%d TTLs begun): %d retries, %d calls from TTL before it, bound %g", a, b, k, r, c, bound))
				return
			}
		}
	}
}

func slicesSort(xs []time.Duration) { sort.Slice(xs, func(i, j int) bool { return xs[i] < xs[j] }) }

// TestRetryBudgetModel replays seeded scenarios of calls through Retry
// stages that share a RetryBudget, in fake time, and checks every ask of
// the budget and everything each call shows against the reference model.
func TestRetryBudgetModel(t *testing.T) {
	const seeds = 300
	var sureGrant, sureDeny, free, ran int
	forEachSeed(t, seeds, func(seed uint64) func(t *testing.T) {
		sc := bmGenScenario(seed)
		return func(t *testing.T) {
			got := sc.run()
			m := &bmModel{sc: sc, got: got}
			want := m.model()
			sureGrant, sureDeny, free, ran = sureGrant+m.sureGrant, sureDeny+m.sureDeny, free+m.free, ran+1
			require.Empty(t, m.fails, "the budget broke the rule; replay with -run 'TestRetryBudgetModel/seed=%d$'\n%v", seed, sc)
			for i := range want {
				require.Equal(t, want[i], got[i], "the model (want) and resil (got) disagree; replay with -run 'TestRetryBudgetModel/seed=%d$'\n%v%v", seed, sc, sc.callString(i))
			}
			m.checkStretches()
			require.Empty(t, m.fails, "replay with -run 'TestRetryBudgetModel/seed=%d$'\n%v", seed, sc)
		}
	})
	t.Logf("asks of the budget: %d the rule had to grant, %d it had to deny, %d within the tolerance", sureGrant, sureDeny, free)
	if ran == seeds {
		// The model is not vacuous: many asks are decided by the rule alone.
		assert.Greater(t, sureGrant, 1000)
		assert.Greater(t, sureDeny, 1000)
	}
}

// TestRetryBudgetTTLNotMultipleOf10ns: with a TTL that is not a multiple of
// 10ns, buckets of TTL/10 in whole ns would span up to 9ns less than TTL, and
// a retry could stop counting before it is TTL old. With TTL 10.007µs and a
// reserve of 1.5 retries, a retry made at s and another asked at
// s + TTL - 1ns make 2 retries within the last TTL, above the 1.5 allowed:
// the second must be denied, wherever s falls in its bucket (the bucket
// phase is unknown, so every offset within a bucket is tried).
func TestRetryBudgetTTLNotMultipleOf10ns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const ttl = 10*time.Microsecond + 7*time.Nanosecond
		policy := resil.RetryBudgetPolicy{Ratio: 1e-9, MinPerSecond: 1.5 / ttl.Seconds(), TTL: ttl}
		var granted []int // the trials whose second retry was granted
		for trial := range 1000 {
			budget := resil.NewRetryBudget(policy)
			p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0), Budget: budget})
			// Trials start 110.007µs apart: each 7ns further into its bucket,
			// so the 1000 trials try every offset.
			time.Sleep(100*time.Microsecond + time.Nanosecond)
			calls := 0
			_, err := p.Run(t.Context(), func(context.Context) (int, error) {
				calls++
				if calls == 1 {
					return 0, errFlaky
				}
				return 1, nil
			})
			require.NoError(t, err, "the reserve grants the first retry")
			time.Sleep(ttl - time.Nanosecond)
			calls = 0
			_, err = p.Run(t.Context(), func(context.Context) (int, error) { calls++; return 0, errFlaky })
			if !errors.Is(err, resil.ErrRetryBudgetExhausted) {
				granted = append(granted, trial)
			}
		}
		assert.Empty(t, granted, "trials where a retry 10.006µs after another, within TTL (10.007µs), was granted; a reserve of 1.5 allows one")
	})
}

// ---------------------------------------------------------------- Chaos

// Chaos. The model is the ChaosPolicy and Chaos doc comments: each call
// draws whether it is delayed (LatencyRate; never with Latency 0) and
// whether it faults (FaultRate), independently; a delayed call waits
// Latency first, and a context that ends during the wait (or at its very
// end, for a deadline) ends the call with the context's error at that
// instant, with nothing run and no fault; a faulted call then returns Fault
// itself, runs nothing and reports an EventRejected whose Err is Fault
// (Attempt: 0 alone, the attempt inside a Retry); other calls run the
// wrapped stages, whose result comes back as it is. With a Seed the
// decisions depend only on the seed and the order of calls.

// cmDecision is what Chaos decided for one call.
type cmDecision struct{ Delayed, Faulted bool }

// cmCall is the result of one call through a Chaos stage.
type cmCall struct {
	elapsed  time.Duration // until Run returned
	ran      bool          // fn was called
	fnAt     time.Duration // when
	fnCtx    context.Context
	err      error
	value    int
	rejected []resil.Event
}

// cmRecorder keeps the EventRejected of one call at a time.
type cmRecorder struct{ rejected []resil.Event }

func (r *cmRecorder) Observe(_ context.Context, e resil.Event) {
	if e.Kind == resil.EventRejected {
		r.rejected = append(r.rejected, e)
	}
}

// cmRun makes one call through p: fn returns (value, fnErr) at once.
func cmRun(p resil.Pipeline[int], rec *cmRecorder, ctx context.Context, value int, fnErr error) cmCall {
	var c cmCall
	rec.rejected = nil
	start := time.Now()
	c.value, c.err = p.Run(ctx, func(ctx context.Context) (int, error) {
		c.ran, c.fnAt, c.fnCtx = true, time.Since(start), ctx
		return value, fnErr
	})
	c.elapsed = time.Since(start)
	c.rejected = rec.rejected
	return c
}

// decision reads what Chaos decided from a call made with a live context.
func (c cmCall) decision(latency time.Duration) cmDecision {
	return cmDecision{Delayed: latency > 0 && c.elapsed == latency, Faulted: !c.ran}
}

// cmCheckLive checks a call made with a live context against the model,
// given its decision: a delayed call waits exactly Latency, a faulted one
// returns Fault itself and reports it, the others run fn and return its
// result unchanged.
func cmCheckLive(t *testing.T, c cmCall, latency time.Duration, fault error, value int, fnErr error, attempt int, msg string) {
	t.Helper()
	d := c.decision(latency)
	if d.Delayed {
		require.Equal(t, latency, c.elapsed, msg)
	} else {
		require.Zero(t, c.elapsed, "%s: a call not delayed takes no time", msg)
	}
	if d.Faulted {
		require.True(t, c.err == fault, "%s: a faulted call returns Fault itself, got %v", msg, c.err)
		require.Zero(t, c.value, msg)
		require.Len(t, c.rejected, 1, msg)
		require.True(t, c.rejected[0].Err == fault, "%s: EventRejected.Err is Fault, got %v", msg, c.rejected[0].Err)
		require.Equal(t, attempt, c.rejected[0].Attempt, msg)
		return
	}
	require.Equal(t, c.elapsed, c.fnAt, "%s: fn runs after the latency", msg)
	require.Empty(t, c.rejected, msg)
	require.True(t, c.err == fnErr, "%s: fn's error comes back as it is: want %v, got %v", msg, fnErr, c.err)
	if fnErr == nil {
		require.Equal(t, value, c.value, msg)
	} else {
		require.Zero(t, c.value, msg)
	}
}

// cmWithin reports whether count is within 6 standard deviations of the
// mean of Binomial(n, p) (exactly the mean when p is 0 or 1).
func cmWithin(count, n int, p float64) bool {
	mean := float64(n) * p
	sd := math.Sqrt(float64(n) * p * (1 - p))
	return math.Abs(float64(count)-mean) <= 6*sd+1e-9
}

// cmPolicy is a seeded random ChaosPolicy.
type cmPolicy struct {
	seed   uint64
	policy resil.ChaosPolicy
	fault  error // the error a faulted call returns
	lRate  float64
}

var errCmFault = errors.New("chaos model: custom fault")

func cmGenPolicy(seed uint64, rng *rand.Rand) cmPolicy {
	rates := func() float64 {
		if rng.IntN(4) == 0 {
			return rng.Float64()
		}
		return []float64{0, 0.01, 0.1, 0.3, 0.5, 0.9, 1}[rng.IntN(7)]
	}
	p := cmPolicy{seed: seed}
	p.policy.FaultRate, p.policy.LatencyRate = rates(), rates()
	p.policy.Latency = []time.Duration{0, time.Nanosecond, time.Millisecond, time.Second}[rng.IntN(4)]
	if rng.IntN(10) != 0 {
		p.policy.Seed = seed + 1 // 0 would mean random
	}
	switch rng.IntN(4) {
	case 0:
		p.policy.Fault = errCmFault
	case 1:
		p.policy.Fault = resil.Permanent(errCmFault)
	}
	p.fault = p.policy.Fault
	if p.fault == nil {
		p.fault = resil.ErrChaosFault
	}
	p.lRate = p.policy.LatencyRate
	if p.policy.Latency == 0 {
		p.lRate = 0
	}
	return p
}

// TestChaosModelRates makes 1000 calls with live contexts through a seeded
// random policy and checks each against the model, and that the delays,
// the faults and the calls both delayed and faulted come at LatencyRate,
// FaultRate and their product (6 standard deviations of a binomial).
func TestChaosModelRates(t *testing.T) {
	const calls = 1000
	forEachSeed(t, 150, func(seed uint64) func(t *testing.T) {
		rng := rand.New(rand.NewPCG(seed, 0xc4a05))
		cp := cmGenPolicy(seed, rng)
		return func(t *testing.T) {
			rec := &cmRecorder{}
			p := resil.New[int]().Chaos(cp.policy).Observe(rec)
			fnErr := errors.New("chaos model: fn's own error")
			var delayed, faulted, both int
			for i := range calls {
				var e error
				if i%3 == 0 {
					e = fnErr
				}
				c := cmRun(p, rec, t.Context(), i+1, e)
				cmCheckLive(t, c, cp.policy.Latency, cp.fault, i+1, e, 0, fmt.Sprintf("policy %+v, call %d", cp.policy, i))
				d := c.decision(cp.policy.Latency)
				if d.Delayed {
					delayed++
				}
				if d.Faulted {
					faulted++
				}
				if d.Delayed && d.Faulted {
					both++
				}
			}
			f, l := cp.policy.FaultRate, cp.lRate
			assert.True(t, cmWithin(faulted, calls, f), "policy %+v: %d faults in %d calls", cp.policy, faulted, calls)
			assert.True(t, cmWithin(delayed, calls, l), "policy %+v: %d delays in %d calls", cp.policy, delayed, calls)
			assert.True(t, cmWithin(both, calls, f*l), "policy %+v: %d calls delayed and faulted in %d", cp.policy, both, calls)
		}
	})
}

// cmCtxKind is how a call's context ends.
type cmCtxKind int

const (
	cmLive       cmCtxKind = iota
	cmCancelled            // before Run
	cmDeadline             // a deadline at (relative to Run), maybe passed
	cmCancelAtKd           // a timer cancels it at (never at Latency itself)
)

// TestChaosModelContext makes seeded calls whose contexts end in every way
// against the latency (cancelled before, a deadline passed, before, at or
// after the wait's end, a cancellation during or after the wait), checks
// each call's outcome and timing exactly against the model, and checks that
// the decisions are those the same seed gives to calls with live contexts:
// a call's context does not change the draws.
func TestChaosModelContext(t *testing.T) {
	type call struct {
		kind cmCtxKind
		at   time.Duration
	}
	forEachSeed(t, 300, func(seed uint64) func(t *testing.T) {
		rng := rand.New(rand.NewPCG(seed, 0xc7c7))
		latency := time.Duration(1+rng.IntN(20)) * time.Millisecond
		policy := resil.ChaosPolicy{
			LatencyRate: []float64{1, 0.5}[rng.IntN(2)],
			FaultRate:   []float64{0, 0.5, 1}[rng.IntN(3)],
			Latency:     latency,
			Seed:        seed + 1,
		}
		calls := make([]call, 40)
		for i := range calls {
			c := &calls[i]
			switch rng.IntN(4) {
			case 0:
				c.kind = cmLive
			case 1:
				c.kind = cmCancelled
			case 2:
				c.kind = cmDeadline
				c.at = []time.Duration{-time.Millisecond, 0, latency / 2, latency, latency, latency + time.Millisecond, 2 * latency}[rng.IntN(7)]
			default:
				c.kind = cmCancelAtKd
				c.at = time.Duration(rng.IntN(int(2*latency/time.Millisecond)))*time.Millisecond + time.Millisecond/2
			}
		}
		return func(t *testing.T) {
			// The decisions, from the same seed with live contexts.
			rec := &cmRecorder{}
			ref := resil.New[int]().Chaos(policy).Observe(rec)
			decisions := make([]cmDecision, len(calls))
			for i := range decisions {
				decisions[i] = cmRun(ref, rec, t.Context(), 1, nil).decision(latency)
			}
			p := resil.New[int]().Chaos(policy).Observe(rec)
			for i, cc := range calls {
				msg := fmt.Sprintf("policy %+v, call %d: ctx %d at %v, decision %+v", policy, i, cc.kind, cc.at, decisions[i])
				var (
					ctx    context.Context
					cancel context.CancelFunc
				)
				end, endErr := bmNever, error(nil) // when the context ends, from Run's start
				switch cc.kind {
				case cmDeadline:
					ctx, cancel = context.WithDeadline(t.Context(), time.Now().Add(cc.at))
					end, endErr = max(cc.at, 0), context.DeadlineExceeded
				default:
					ctx, cancel = context.WithCancel(t.Context())
				}
				switch cc.kind {
				case cmCancelled:
					cancel()
					end, endErr = 0, context.Canceled
				case cmCancelAtKd:
					defer time.AfterFunc(cc.at, cancel).Stop()
					end, endErr = cc.at, context.Canceled
				}
				c := cmRun(p, rec, ctx, 9, nil)
				cancel()
				d := decisions[i]
				switch {
				case d.Delayed && end <= latency:
					// The wait ends with the context, at that instant (a
					// deadline at the wait's very end included).
					require.Equal(t, end, c.elapsed, msg)
					require.True(t, c.err == endErr, "%s: want %v, got %v", msg, endErr, c.err)
					require.False(t, c.ran, msg)
					require.Empty(t, c.rejected, "%s: no fault is returned", msg)
				case d.Faulted:
					want := time.Duration(0)
					if d.Delayed {
						want = latency
					}
					require.Equal(t, want, c.elapsed, msg)
					require.True(t, c.err == resil.ErrChaosFault, "%s: got %v", msg, c.err)
					require.False(t, c.ran, msg)
					require.Len(t, c.rejected, 1, msg)
				default:
					want := time.Duration(0)
					if d.Delayed {
						want = latency
					}
					require.True(t, c.ran, msg)
					require.Equal(t, want, c.fnAt, msg)
					require.Equal(t, want, c.elapsed, msg)
					require.NoError(t, c.err, msg)
					require.Equal(t, 9, c.value, msg)
					require.Empty(t, c.rejected, msg)
				}
			}
		}
	})
}

// cmSequence makes n calls with live contexts through p and returns the
// decisions.
func cmSequence[T any](t *testing.T, p resil.Pipeline[T], latency time.Duration, n int) []cmDecision {
	out := make([]cmDecision, n)
	for i := range out {
		start := time.Now()
		ran := false
		_, _ = p.Run(t.Context(), func(context.Context) (T, error) {
			ran = true
			var zero T
			return zero, nil
		})
		out[i] = cmDecision{Delayed: latency > 0 && time.Since(start) == latency, Faulted: !ran}
	}
	return out
}

// TestChaosModelSeedReproducible checks that a seed fixes the sequence of
// decisions: the same for Pipeline[int] and Pipeline[string], for two
// stages whose calls are interleaved (each has its own sequence), another
// with another seed; and that a rate of 0 or 1 costs no draw: the delays
// are the same with FaultRate 0 and 1, the faults with LatencyRate 0 and 1.
func TestChaosModelSeedReproducible(t *testing.T) {
	const n = 300
	forEachSeed(t, 200, func(seed uint64) func(t *testing.T) {
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		policy := resil.ChaosPolicy{
			FaultRate:   0.2 + 0.6*rng.Float64(),
			LatencyRate: 0.2 + 0.6*rng.Float64(),
			Latency:     time.Millisecond,
			Seed:        seed + 1,
		}
		order := make([]bool, 2*n) // the interleaving: true for the int stage
		for i := range n {
			order[i] = true
		}
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		return func(t *testing.T) {
			msg := fmt.Sprintf("policy %+v", policy)
			a := cmSequence(t, resil.New[int]().Chaos(policy), time.Millisecond, n)
			require.Equal(t, a, cmSequence(t, resil.New[string]().Chaos(policy), time.Millisecond, n), msg)

			ints, strs := resil.New[int]().Chaos(policy), resil.New[string]().Chaos(policy)
			var gotI, gotS []cmDecision
			for _, isInt := range order {
				if isInt {
					gotI = append(gotI, cmSequence(t, ints, time.Millisecond, 1)...)
				} else {
					gotS = append(gotS, cmSequence(t, strs, time.Millisecond, 1)...)
				}
			}
			require.Equal(t, a, gotI, "%s: interleaved with another stage's calls", msg)
			require.Equal(t, a, gotS, "%s: interleaved with another stage's calls", msg)

			other := policy
			other.Seed += 1 << 40
			require.NotEqual(t, a, cmSequence(t, resil.New[int]().Chaos(other), time.Millisecond, n), "%s: another seed", msg)

			delays := func(fr float64) []bool {
				p := policy
				p.FaultRate = fr
				var out []bool
				for _, d := range cmSequence(t, resil.New[int]().Chaos(p), time.Millisecond, n) {
					out = append(out, d.Delayed)
				}
				return out
			}
			require.Equal(t, delays(0), delays(1), "%s: FaultRate 0 and 1 draw nothing", msg)
			faults := func(lr float64) []bool {
				p := policy
				p.LatencyRate = lr
				var out []bool
				for _, d := range cmSequence(t, resil.New[int]().Chaos(p), time.Millisecond, n) {
					out = append(out, d.Faulted)
				}
				return out
			}
			require.Equal(t, faults(0), faults(1), "%s: LatencyRate 0 and 1 draw nothing", msg)
		}
	})
}

// TestChaosModelOff checks that policies that inject nothing (zero rates,
// or a LatencyRate without Latency and FaultRate 0) leave every call
// alone: fn runs once, at once, with the caller's context, and its result
// comes back as it is, whatever the context; and that on the empty
// pipeline such a Chaos is the pipeline itself.
func TestChaosModelOff(t *testing.T) {
	policies := []resil.ChaosPolicy{
		{},
		{Fault: errCmFault, Latency: time.Hour, Seed: 3},
		{LatencyRate: 1},
		{LatencyRate: 0.5, Seed: 9},
		{LatencyRate: 1, Fault: errCmFault, Seed: 1},
	}
	forEachSeed(t, 50, func(seed uint64) func(t *testing.T) {
		policy := policies[seed%uint64(len(policies))]
		return func(t *testing.T) {
			assert.Equal(t, resil.New[int](), resil.New[int]().Chaos(policy), "Chaos returns p itself")
			inner := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 1})
			for j, p := range []resil.Pipeline[int]{resil.New[int]().Chaos(policy), inner.Chaos(policy)} {
				for i := range 50 {
					ctx, cancel := context.WithCancel(t.Context())
					if i%5 == 0 {
						cancel()
					}
					var fnErr error
					if i%2 == 0 {
						fnErr = resil.Permanent(fmt.Errorf("chaos model: %d", i))
					}
					c := cmRun(p, &cmRecorder{}, ctx, i+1, fnErr)
					cancel()
					msg := fmt.Sprintf("policy %+v, call %d", policy, i)
					if i%5 == 0 && j == 1 {
						// Retry returns ctx.Err() at once for a done context.
						require.False(t, c.ran, msg)
						require.True(t, c.err == context.Canceled, "%s: got %v", msg, c.err)
						continue
					}
					require.True(t, c.ran, msg)
					require.Zero(t, c.elapsed, msg)
					require.True(t, c.fnCtx == ctx, "%s: fn gets the caller's context", msg)
					require.True(t, c.err == fnErr, "%s: want %v, got %v", msg, fnErr, c.err)
				}
			}
		}
	})
}

type cmNotTransient struct{}

func (cmNotTransient) Error() string   { return "chaos model: not transient" }
func (cmNotTransient) Transient() bool { return false }

// TestChaosModelClassification checks that an injected fault classifies as
// the docs say: ErrChaosFault (Fault nil) is transient, so Retry retries it
// and Breaker counts it as a failure; a custom Fault is returned as it is
// and classified as that error would be. Inside a Retry, each attempt is a
// call of the Chaos stage and its EventRejected carries the attempt.
func TestChaosModelClassification(t *testing.T) {
	plain := errors.New("chaos model: plain")
	tests := []struct {
		name      string
		fault     error
		want      error
		transient bool
	}{
		{"nil means ErrChaosFault", nil, resil.ErrChaosFault, true},
		{"unmarked", plain, plain, true},
		{"Permanent", resil.Permanent(plain), nil, false},
		{"Transient", resil.Transient(cmNotTransient{}), nil, true},
		{"Transient() false", cmNotTransient{}, cmNotTransient{}, false},
		{"context.Canceled", context.Canceled, context.Canceled, false},
		{"wraps ErrChaosFault", fmt.Errorf("chaos model: %w", resil.ErrChaosFault), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				want := tt.want
				if want == nil {
					want = tt.fault
				}
				rec := &cmRecorder{}
				p := resil.New[int]().Chaos(resil.ChaosPolicy{FaultRate: 1, Fault: tt.fault})
				c := cmRun(p.Observe(rec), rec, t.Context(), 1, nil)
				require.True(t, c.err == want, "got %v", c.err)
				require.ErrorIs(t, c.err, want)
				assert.Equal(t, tt.transient, resil.IsTransient(c.err))
				require.Len(t, c.rejected, 1)
				assert.Zero(t, c.rejected[0].Attempt, "no Retry around: Attempt 0")

				// Retry: a transient fault is retried until attempts run out.
				c = cmRun(p.Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(time.Millisecond)}).Observe(rec), rec, t.Context(), 1, nil)
				assert.False(t, c.ran)
				if tt.transient {
					var re *resil.RetryError
					require.ErrorAs(t, c.err, &re)
					assert.Equal(t, 3, re.Attempts)
					assert.True(t, re.Err == want)
					require.Len(t, c.rejected, 3)
					assert.Equal(t, 2*time.Millisecond, c.elapsed)
				} else {
					assert.True(t, c.err == want, "a fault that is not transient comes back unchanged, got %v", c.err)
					require.Len(t, c.rejected, 1)
				}
				for i, e := range c.rejected {
					assert.Equal(t, i+1, e.Attempt)
					assert.True(t, e.Err == want)
				}

				// Breaker: a transient fault is a failure.
				b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, FailureRatio: 1})
				_, err := p.Breaker(b).Run(t.Context(), func(context.Context) (int, error) { return 1, nil })
				require.True(t, err == want)
				want2 := resil.StateClosed
				if tt.transient {
					want2 = resil.StateOpen
				}
				assert.Equal(t, want2, b.State())
			})
		})
	}
}
