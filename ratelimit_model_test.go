package resil_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// This file checks the RateLimit stage against a reference model: the
// contract of API.md (RateLimit) and the RateLimit doc comments, written
// out as a plain token bucket over whole nanoseconds of fake time. Seeded
// random scenarios (calls arriving at set instants, several at one instant,
// through one limiter; contexts with no deadline, with a deadline that may
// already have passed, come at the arrival, at the call's turn or just
// after it, and contexts the test cancels, before the call or while it
// waits) run through both in a synctest bubble, and everything that can
// be observed is compared: whether fn ran and when, what its context's Err
// said then, what Run returned (ErrRateLimited with its RetryAfter, the
// context's error) and when. After each scenario a probe checks that no
// token was lost or gained: how many calls pass at once, when the next one
// would (RetryAfter), and that it does pass then and not a nanosecond
// before.
//
// The model is a bucket of credit counted in nanoseconds, refilled one per
// nanosecond up to Burst·interval; a call needs interval of it. It is
// written apart from the limiter's GCRA (one time, the theoretical arrival
// time); the two agree when both are right. The model reads the contract
// as follows:
//   - A call whose context was cancelled (before its deadline, if it has
//     one) fails at once with context.Canceled and takes nothing: the
//     caller gave up on it, whatever its deadline.
//   - Otherwise a call whose context's deadline has come (at or before its
//     arrival) fails at once with ErrRateLimited and takes nothing; its
//     RetryAfter is how long until a call would pass at once (0 while a
//     token is free).
//   - Otherwise a call that finds interval of credit takes it and runs fn
//     at once. One that does not waits for its turn, the instant the
//     credit, taken now, would be back to zero, when that turn is within
//     MaxWait (a wait of exactly MaxWait is made) and strictly before its
//     context's deadline (a turn at the deadline is not, for the context
//     ends there); MaxWait 0 never waits, whatever the deadline. A waiting
//     call has taken its credit: later calls queue behind it.
//   - Any other call fails at once with ErrRateLimited, takes nothing, and
//     its RetryAfter is exactly how long until a call would pass at once.
//   - A waiting call whose context is cancelled returns context.Canceled
//     then, without running fn. It gives its credit back when it holds the
//     last claim not given back (no call claimed a turn after it, or every
//     one that did gave its own back); otherwise the credit stays spent.
//
// Everything that changes the bucket is set off by one of the test's
// steps (an arrival, a cancellation), each taken from the test's goroutine
// and followed by synctest.Wait, so it happens in the scenario's order; a
// waiting call waking for its turn changes nothing. The one order the
// contract cannot fix is a cancellation at the very instant of the
// cancelled call's turn (its timer and its context race): a scenario that
// holds one is drawn again. A deadline cannot race a turn: no call waits
// for a turn at or after its deadline.

// rlmUnit is the grid of arrivals, deadlines and most cancellations. Every
// interval is a whole number of units, so turns fall on the grid too, and
// deadlines and cancellations meet them there.
const rlmUnit = 5 * time.Millisecond

// rlmNone marks a time that is not set (no deadline, no cancellation).
const rlmNone = time.Duration(-1 << 62)

// rlmCall is one call of a scenario. Times are from the start.
type rlmCall struct {
	arrive   time.Duration
	deadline time.Duration // the context's deadline; rlmNone: none
	cancelAt time.Duration // the test cancels the context then; rlmNone: never
}

// rlmStep is something the test does at an instant: a call arrives, or the
// test cancels a call's context.
type rlmStep struct {
	at     time.Duration
	call   int
	cancel bool
}

type rlmScenario struct {
	seed       uint64
	interval   time.Duration // 1s/Rate, a whole number of units
	burst      int           // as given; 0 means 1
	maxWait    time.Duration
	calls      []rlmCall
	steps      []rlmStep     // by instant; at one instant, in the order they happen
	probeAfter time.Duration // how long after the last call the probe starts
}

func (sc *rlmScenario) rate() float64 { return float64(time.Second) / float64(sc.interval) }

func (sc *rlmScenario) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed=%d Rate=%v (interval %v) Burst=%d MaxWait=%v, probe %v after the last call\n",
		sc.seed, sc.rate(), sc.interval, sc.burst, sc.maxWait, sc.probeAfter)
	for i, c := range sc.calls {
		fmt.Fprintf(&b, "call %d: arrive %v", i, c.arrive)
		if c.deadline != rlmNone {
			fmt.Fprintf(&b, ", ctx deadline %v", c.deadline)
		}
		if c.cancelAt != rlmNone {
			fmt.Fprintf(&b, ", test cancels ctx at %v", c.cancelAt)
		}
		b.WriteByte('\n')
	}
	b.WriteString("the test's steps, in order:")
	for _, s := range sc.steps {
		if s.cancel {
			fmt.Fprintf(&b, " %v:cancel(%d)", s.at, s.call)
		} else {
			fmt.Fprintf(&b, " %v:arrive(%d)", s.at, s.call)
		}
	}
	b.WriteByte('\n')
	return b.String()
}

// rlmDraw draws one scenario from rng. It may hold a cancellation at the
// cancelled call's turn, which the model reports. Some deadlines are aimed
// (with the model's help) at the call's turn or just after it.
func rlmDraw(rng *rand.Rand, seed uint64) *rlmScenario {
	pick := func(xs ...int) int { return xs[rng.IntN(len(xs))] }
	units := func(n int) time.Duration { return time.Duration(n) * rlmUnit }
	sc := &rlmScenario{
		seed:     seed,
		interval: units(pick(2, 4, 5, 8, 10, 20)), // Rate 100, 50, 40, 25, 20, 10: exact in float64
		burst:    pick(0, 1, 1, 2, 3, 5),
	}
	switch r := rng.IntN(100); {
	case r < 30:
		sc.maxWait = 0
	case r < 55:
		sc.maxWait = units(1 + rng.IntN(40))
	case r < 85:
		sc.maxWait = time.Duration(1+rng.IntN(4)) * sc.interval // a turn exactly MaxWait away
	default:
		sc.maxWait = time.Hour
	}
	sc.probeAfter = units(pick(0, 0, 1, 3, 10, 100))
	n := 3 + rng.IntN(12)
	for range n {
		c := rlmCall{arrive: units(rng.IntN(30)), deadline: rlmNone, cancelAt: rlmNone}
		if rng.IntN(100) < 50 {
			c.deadline = c.arrive + units(rng.IntN(12)-3) // already passed, at the arrival, or later
			switch rng.IntN(3) {
			case 0:
				c.deadline++ // a turn just before it
			case 1:
				c.deadline--
			}
		}
		if rng.IntN(100) < 35 {
			if rng.IntN(2) == 0 {
				c.cancelAt = c.arrive + units(rng.IntN(20)-3) // on the grid: at arrivals, turns, deadlines
			} else {
				c.cancelAt = c.arrive + time.Duration(rng.Int64N(int64(units(20)))) // anywhere
			}
		}
		sc.calls = append(sc.calls, c)
	}
	for i, c := range sc.calls {
		sc.steps = append(sc.steps, rlmStep{at: c.arrive, call: i})
		if c.cancelAt != rlmNone {
			sc.steps = append(sc.steps, rlmStep{at: c.cancelAt, call: i, cancel: true})
		}
	}
	rng.Shuffle(len(sc.steps), func(i, j int) { sc.steps[i], sc.steps[j] = sc.steps[j], sc.steps[i] })
	slices.SortStableFunc(sc.steps, func(a, b rlmStep) int { return int(a.at - b.at) })

	// Aim a deadline at a waiting call's turn, or a nanosecond after it.
	want, _, _ := rlmRunModel(sc)
	for i, o := range want.Calls {
		if c := &sc.calls[i]; o.Ran && o.At > c.arrive && c.deadline == rlmNone && rng.IntN(3) == 0 {
			c.deadline = o.At + time.Duration(rng.IntN(2))
		}
	}
	return sc
}

// rlmCallOut is what one call showed. Times are from the start.
type rlmCallOut struct {
	Ran      bool
	At       time.Duration // fn ran; 0 when it did not
	FnCtxErr string        // ctx.Err() as fn saw it
	End      time.Duration // Run returned
	Err      string        // "nil", "canceled", "deadline", "limited, retry after D"
}

type rlmOutcome struct {
	Calls []rlmCallOut
	Probe string
}

// rlmTag names an error for comparison.
func rlmTag(err error) string {
	var h interface{ RetryAfter() time.Duration }
	switch {
	case err == nil:
		return "nil"
	case err == context.Canceled:
		return "canceled"
	case err == context.DeadlineExceeded:
		return "deadline"
	case errors.Is(err, resil.ErrRateLimited) && errors.As(err, &h) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprint("limited, retry after ", h.RetryAfter())
	}
	return fmt.Sprintf("other %T: %v", err, err)
}

// rlmRunCode runs sc through resil in the caller's synctest bubble.
func rlmRunCode(sc *rlmScenario) rlmOutcome {
	start := time.Now()
	since := func() time.Duration { return time.Since(start) }
	l := resil.NewRateLimiter(resil.RateLimitPolicy{Rate: sc.rate(), Burst: sc.burst, MaxWait: sc.maxWait})
	p := resil.New[int]().RateLimit(l)

	n := len(sc.calls)
	ctxs := make([]context.Context, n)
	cancels := make([]context.CancelFunc, n)
	for i, c := range sc.calls {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if c.deadline != rlmNone {
			var cancelD context.CancelFunc
			ctx, cancelD = context.WithDeadline(ctx, start.Add(c.deadline))
			defer cancelD()
		}
		ctxs[i], cancels[i] = ctx, cancel
	}

	out := make([]rlmCallOut, n)
	var wg sync.WaitGroup
	for k := 0; k < len(sc.steps); {
		at := sc.steps[k].at
		if d := at - since(); d > 0 {
			time.Sleep(d)
		}
		synctest.Wait() // what else is due at this instant has happened
		for ; k < len(sc.steps) && sc.steps[k].at == at; k++ {
			s := sc.steps[k]
			if s.cancel {
				cancels[s.call]()
			} else {
				o := &out[s.call]
				ctx := ctxs[s.call]
				wg.Go(func() {
					_, err := p.Run(ctx, func(ctx context.Context) (int, error) {
						o.Ran, o.At, o.FnCtxErr = true, since(), rlmTag(ctx.Err())
						return 1, nil
					})
					o.End, o.Err = since(), rlmTag(err)
				})
			}
			synctest.Wait()
		}
	}
	wg.Wait()
	time.Sleep(sc.probeAfter)
	return rlmOutcome{Calls: out, Probe: rlmProbe(p, since())}
}

// rlmProbe counts the calls that pass at once at now (each with a
// context whose deadline is a nanosecond away, so that none waits), takes
// the first rejection's RetryAfter r, and checks that a call r-1ns later is
// still refused and one r later passes.
func rlmProbe(p resil.Pipeline[int], now time.Duration) string {
	try := func() error {
		ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(1))
		defer cancel()
		_, err := p.Run(ctx, passFn)
		return err
	}
	passed := 0
	var err error
	for passed <= 100 {
		if err = try(); err != nil {
			break
		}
		passed++
	}
	var h interface{ RetryAfter() time.Duration }
	if !errors.As(err, &h) {
		return fmt.Sprintf("at %v: %d passed at once, then %s", now, passed, rlmTag(err))
	}
	r := h.RetryAfter()
	time.Sleep(r - 1)
	before := rlmTag(try())
	time.Sleep(time.Nanosecond)
	return fmt.Sprintf("at %v: %d passed at once, then %s; %v later: %s; %v later: %s", now, passed, rlmTag(err), r-1, before, r, rlmTag(try()))
}

// The model.

type rlmState int

const (
	rlmPending rlmState = iota
	rlmWaiting
	rlmDone
)

// rlmStats counts the cases of interest the scenarios reached.
type rlmStats struct {
	passed, waited, rejected int
	waitedMaxWait            int // waited exactly MaxWait
	turnAtDeadline           int // refused: its turn was its deadline, within MaxWait
	turnBeforeDeadline       int // waited for a turn 1ns before its deadline
	deadlineCome             int // its deadline had come when it arrived
	cancelledBefore          int // its context was cancelled before it arrived
	givenBack, keptSpent     int // a cancelled waiter's credit given back, or not
	drawn, racy              int
}

func (s *rlmStats) add(o rlmStats) {
	s.passed += o.passed
	s.waited += o.waited
	s.rejected += o.rejected
	s.waitedMaxWait += o.waitedMaxWait
	s.turnAtDeadline += o.turnAtDeadline
	s.turnBeforeDeadline += o.turnBeforeDeadline
	s.deadlineCome += o.deadlineCome
	s.cancelledBefore += o.cancelledBefore
	s.givenBack += o.givenBack
	s.keptSpent += o.keptSpent
}

type rlmModel struct {
	sc       *rlmScenario
	need     time.Duration // credit a call takes: the interval
	capacity time.Duration // Burst·interval
	credit   time.Duration // may be negative: claimed by calls still waiting
	last     time.Duration // the credit is as of last
	claims   []int         // calls that took credit and did not give it back, in order
	state    []rlmState
	turn     []time.Duration
	ended    []bool // cancelled
	out      []rlmCallOut
	racy     string
	st       rlmStats
}

// refill brings the credit to now.
func (m *rlmModel) refill(now time.Duration) {
	m.credit = min(m.capacity, m.credit+now-m.last)
	m.last = now
}

// untilFree is how long until a call would pass at once.
func (m *rlmModel) untilFree() time.Duration { return max(m.need-m.credit, 0) }

func (m *rlmModel) arrive(i int, now time.Duration) {
	c := m.sc.calls[i]
	o := &m.out[i]
	m.state[i] = rlmDone
	o.End = now
	hasDeadline := c.deadline != rlmNone
	switch {
	case m.ended[i] && (!hasDeadline || c.cancelAt < c.deadline && c.deadline > 0): // a deadline <= 0 ended the context as it was made
		m.st.cancelledBefore++
		o.Err = "canceled"
		return
	case hasDeadline && c.deadline <= now:
		m.st.deadlineCome++
		o.Err = fmt.Sprint("limited, retry after ", m.untilFree())
		return
	}
	limit := m.sc.maxWait
	if limit > 0 && hasDeadline {
		limit = min(limit, c.deadline-now-1) // a turn at the deadline is no use
	}
	wait := m.untilFree()
	if wait > limit {
		m.st.rejected++
		if hasDeadline && wait == c.deadline-now && wait <= m.sc.maxWait {
			m.st.turnAtDeadline++
		}
		o.Err = fmt.Sprint("limited, retry after ", wait)
		return
	}
	m.credit -= m.need
	m.claims = append(m.claims, i)
	*o = rlmCallOut{Ran: true, At: now + wait, FnCtxErr: "nil", End: now + wait, Err: "nil"}
	if wait == 0 {
		m.st.passed++
		return
	}
	m.st.waited++
	if wait == m.sc.maxWait {
		m.st.waitedMaxWait++
	}
	if hasDeadline && wait == c.deadline-now-1 {
		m.st.turnBeforeDeadline++
	}
	m.state[i] = rlmWaiting
	m.turn[i] = now + wait
}

func (m *rlmModel) cancel(i int, now time.Duration) {
	m.ended[i] = true
	if m.state[i] != rlmWaiting {
		return
	}
	switch {
	case m.turn[i] < now:
		return // it ran
	case m.turn[i] == now:
		m.racy = fmt.Sprintf("call %d is cancelled at its turn, %v", i, now)
		return
	}
	m.state[i] = rlmDone
	m.out[i] = rlmCallOut{End: now, Err: "canceled"}
	if m.claims[len(m.claims)-1] == i {
		m.claims = m.claims[:len(m.claims)-1]
		m.credit += m.need
		m.st.givenBack++
	} else {
		m.st.keptSpent++
	}
}

// rlmRunModel works out what sc should show, or why it cannot say
// (racy).
func rlmRunModel(sc *rlmScenario) (want rlmOutcome, st rlmStats, racy string) {
	n := len(sc.calls)
	burst := max(sc.burst, 1)
	m := &rlmModel{
		sc:       sc,
		need:     sc.interval,
		capacity: time.Duration(burst) * sc.interval,
		credit:   time.Duration(burst) * sc.interval, // the bucket starts full
		state:    make([]rlmState, n),
		turn:     make([]time.Duration, n),
		ended:    make([]bool, n),
		out:      make([]rlmCallOut, n),
	}
	end := time.Duration(0)
	for _, s := range sc.steps {
		m.refill(s.at)
		if s.cancel {
			m.cancel(s.call, s.at)
		} else {
			m.arrive(s.call, s.at)
		}
		end = max(end, s.at)
	}
	for _, o := range m.out {
		end = max(end, o.End)
	}

	// The probe: calls that pass at once, then the wait for the next.
	now := end + sc.probeAfter
	m.refill(now)
	passed := 0
	for m.credit >= m.need {
		m.credit -= m.need
		passed++
	}
	r := m.untilFree()
	probe := fmt.Sprintf("at %v: %d passed at once, then limited, retry after %v; %v later: limited, retry after 1ns; %v later: nil", now, passed, r, r-1, r)
	return rlmOutcome{Calls: m.out, Probe: probe}, m.st, m.racy
}

// rlmScenarioFor draws scenarios from seed until one holds no instant the
// contract cannot order.
func rlmScenarioFor(seed uint64, st *rlmStats) (*rlmScenario, rlmOutcome) {
	rng := rand.New(rand.NewPCG(seed, seed^0x7a7e))
	for range 1000 {
		sc := rlmDraw(rng, seed)
		st.drawn++
		want, got, racy := rlmRunModel(sc)
		if racy != "" {
			st.racy++
			continue
		}
		st.add(got)
		return sc, want
	}
	panic("no scenario without a race")
}

// TestRateLimitModel runs seeded random scenarios through a RateLimit
// stage and the reference model, in fake time, and compares all that they
// show.
func TestRateLimitModel(t *testing.T) {
	var st rlmStats
	forEachSeed(t, 1000, func(seed uint64) func(t *testing.T) {
		sc, want := rlmScenarioFor(seed, &st)
		return func(t *testing.T) {
			got := rlmRunCode(sc)
			require.Equal(t, want, got, "the model (want) and resil (got) disagree; replay with -run 'TestRateLimitModel/seed=%d$'\n%v", sc.seed, sc)
		}
	})
	t.Logf("%+v", st)
	if testing.Short() {
		return
	}
	// The cases of interest were reached, many times.
	assert.Greater(t, st.waited, 100, "calls waited for their turn")
	assert.Greater(t, st.waitedMaxWait, 10, "a call waited exactly MaxWait")
	assert.Greater(t, st.turnAtDeadline, 10, "a call refused: its turn at its deadline")
	assert.Greater(t, st.turnBeforeDeadline, 10, "a call waited for a turn just before its deadline")
	assert.Greater(t, st.deadlineCome, 50, "a call arrived with its deadline come")
	assert.Greater(t, st.cancelledBefore, 20, "a call arrived cancelled")
	assert.Greater(t, st.givenBack, 20, "a cancelled waiter gave its credit back")
	assert.Greater(t, st.keptSpent, 20, "a cancelled waiter behind later claims kept it spent")
	assert.Less(t, st.racy, st.drawn/2, "most scenarios drawn are used")
}
