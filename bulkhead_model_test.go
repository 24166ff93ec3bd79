package resil_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
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

// This file checks the Bulkhead stage against a reference model: the
// contract of API.md (Bulkhead, Observability) and the Bulkhead doc
// comments, written out as a plain simulation over whole instants of fake
// time. Seeded random scenarios (calls arriving at set instants through
// pipelines of two types sharing one bulkhead, some behind an outer
// Timeout; fn returning a value or an error, panicking or calling
// runtime.Goexit, some honouring their context; contexts with deadlines,
// cancelled by the test or by another call's fn) run through both in a
// synctest bubble, and
// everything that can be observed is compared: which calls run fn, when fn
// starts and returns, which calls are rejected with ErrBulkheadFull, which
// return their context's error, what Run returns and when, and what the
// observer is told and when. The number of fns running at once is checked
// against MaxConcurrent all along, and after each scenario a probe checks
// that every slot came back and no queue entry was left behind.
//
// The model reads the contract as follows:
//   - A call whose context has ended when it arrives returns its
//     context's error at once, without a slot or a place in the queue, and
//     reports no event of the stage. Otherwise a call that finds a free
//     slot runs at once. None free: with MaxWait 0 it is rejected at once;
//     otherwise it queues.
//   - A freed slot goes to the call that has queued longest, at the instant
//     it is freed; a call arriving at that instant queues behind.
//   - A queued call whose context ends (a cancellation, its deadline, an
//     outer Timeout's deadline) leaves the queue then, with ctx.Err(),
//     and reports no event. A deadline that comes at the very instant a
//     slot is freed ended the call while it queued, as everywhere in
//     resil (a deadline that has come has ended the context, even before
//     its timer says so): the call returns context.DeadlineExceeded and the
//     slot goes to the next in line.
//   - A queued call that gets no slot within MaxWait fails with
//     ErrBulkheadFull and reports EventRejected (Attempt 0, no Retry around
//     it). When its deadline comes at that same instant, either answer is
//     right (API.md does not rank the two, and the code gives either,
//     as the MaxWait timer or the context's fires first): the model
//     accepts both.
//   - The slot is given back however fn ends (value, error, panic, Goexit).
//
// Events at one instant of fake time that come from different goroutines
// with nothing ordering them can happen in either order, in the code as in
// the world. The scenarios are built so that the outcome does not depend
// on that order, or depends on it only in a way the contract fixes (the
// deadline above). The test drives arrivals and its own cancellations from
// the root goroutine after everything else due at that instant has
// settled (synctest.Wait), in the scenario's order. A scenario is drawn
// again when it holds an instant the contract cannot order:
//   - a queued call's MaxWait runs out at the instant a slot is freed (the
//     slot may reach it first or not);
//   - a call's fn cancels a queued call's context at an instant when
//     another slot is freed too (that slot may reach the queued call before
//     the cancellation does), or cancels a context whose deadline comes at
//     that instant (which error it shows is then a race).
// A cancellation that comes with a hand-over at one instant is covered in
// both orders that are fixed: fn cancels a queued call and then returns
// (the cancellation first: the call leaves and the slot goes to the next
// in line), and the test cancels a call just handed a slot (the hand-over
// first: the call runs).

// bhUnit is the step of every time in a scenario.
const bhUnit = 10 * time.Millisecond

// bhForever stands for a MaxWait of an hour, in units: longer than any
// scenario.
const bhForever = int(time.Hour / bhUnit)

type bhKind int

const (
	bhValue  bhKind = iota // fn returns 100+i
	bhError                // fn returns its call's error
	bhPanic                // fn panics with bhPanic{i}
	bhGoexit               // fn calls runtime.Goexit
)

type bhPipe int

const (
	bhInt     bhPipe = iota // New[int]().Bulkhead(b)
	bhString                // New[string]().Bulkhead(b): a second pipeline sharing b
	bhTimeout               // New[int]().Bulkhead(b).Timeout(timeout): a Timeout outside the bulkhead
)

// bhCall is one call of a scenario. Times are in units from the start.
type bhCall struct {
	arrive   int    // when Run is called
	dur      int    // how long fn runs (less when it honours its context and that ends)
	honour   bool   // fn returns early when its context ends
	kind     bhKind // how fn ends
	pipe     bhPipe
	timeout  int // bhTimeout's d, from arrival
	deadline int // the context's deadline; -1: none
	cancelAt int // the test cancels the context then; -1: never
	cancels  int // fn cancels this call's context just before it ends; -1: none
}

// bhDriverEv is something the test does at an instant: a call arrives, or
// the test cancels a call's context.
type bhDriverEv struct {
	at     int
	call   int
	cancel bool
}

type bhScenario struct {
	seed     uint64
	max      int // MaxConcurrent as given; 0 means 10
	wait     int // MaxWait in units; bhForever: an hour
	observed bool
	calls    []bhCall
	driver   []bhDriverEv // by instant; at one instant, in the order they happen
}

func (sc *bhScenario) limit() int {
	if sc.max == 0 {
		return 10
	}
	return sc.max
}

func (sc *bhScenario) maxWait() time.Duration {
	if sc.wait == bhForever {
		return time.Hour
	}
	return time.Duration(sc.wait) * bhUnit
}

func (sc *bhScenario) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed=%d MaxConcurrent=%d MaxWait=%v observed=%v (unit %v)\n", sc.seed, sc.max, sc.maxWait(), sc.observed, bhUnit)
	for i, c := range sc.calls {
		fmt.Fprintf(&b, "call %d: arrive %d, fn %d", i, c.arrive, c.dur)
		if c.honour {
			b.WriteString(" (honours ctx)")
		}
		fmt.Fprintf(&b, " then %s", [...]string{"value", "error", "panic", "Goexit"}[c.kind])
		switch c.pipe {
		case bhString:
			b.WriteString(", string pipeline")
		case bhTimeout:
			fmt.Fprintf(&b, ", outer Timeout(%d)", c.timeout)
		}
		if c.deadline >= 0 {
			fmt.Fprintf(&b, ", ctx deadline %d", c.deadline)
		}
		if c.cancelAt >= 0 {
			fmt.Fprintf(&b, ", test cancels ctx at %d", c.cancelAt)
		}
		if c.cancels >= 0 {
			fmt.Fprintf(&b, ", fn cancels call %d's ctx as it ends", c.cancels)
		}
		b.WriteByte('\n')
	}
	b.WriteString("the test's own steps, in order:")
	for _, e := range sc.driver {
		if e.cancel {
			fmt.Fprintf(&b, " %d:cancel(%d)", e.at, e.call)
		} else {
			fmt.Fprintf(&b, " %d:arrive(%d)", e.at, e.call)
		}
	}
	b.WriteByte('\n')
	return b.String()
}

// bhDraw draws one scenario from rng, which may hold instants that the
// contract cannot order (the model says so).
func bhDraw(rng *rand.Rand, seed uint64) *bhScenario {
	pick := func(xs ...int) int { return xs[rng.IntN(len(xs))] }
	sc := &bhScenario{
		seed:     seed,
		max:      pick(1, 1, 1, 2, 2, 3, 0),
		wait:     pick(0, 0, 1, 2, 3, 5, 8, bhForever, bhForever),
		observed: rng.IntN(5) > 0,
	}
	n := 3 + rng.IntN(10)
	if sc.max == 0 {
		n = 9 + rng.IntN(6) // enough to fill ten slots now and then
	}
	for range n {
		c := bhCall{
			arrive:   rng.IntN(10),
			dur:      pick(0, 1, 1, 2, 3, 4, 6),
			honour:   rng.IntN(10) < 3,
			deadline: -1,
			cancelAt: -1,
			cancels:  -1,
		}
		switch r := rng.IntN(100); {
		case r < 55:
			c.kind = bhValue
		case r < 80:
			c.kind = bhError
		case r < 90:
			c.kind = bhPanic
		default:
			c.kind = bhGoexit
		}
		switch r := rng.IntN(100); {
		case r < 45:
			c.pipe = bhInt
		case r < 80:
			c.pipe = bhString
		default:
			c.pipe = bhTimeout
			c.timeout = 1 + rng.IntN(8)
			c.honour = true // see bhOutcome: what the Timeout makes of a late error
		}
		if c.pipe != bhTimeout && rng.IntN(100) < 35 {
			c.deadline = rng.IntN(14) // before arrival too
		}
		if rng.IntN(100) < 30 {
			c.cancelAt = rng.IntN(14)
		}
		sc.calls = append(sc.calls, c)
	}
	for i := range sc.calls {
		if rng.IntN(100) < 25 {
			if j := rng.IntN(n); j != i {
				sc.calls[i].cancels = j
			}
		}
	}
	for i, c := range sc.calls {
		sc.driver = append(sc.driver, bhDriverEv{at: c.arrive, call: i})
		if c.cancelAt >= 0 {
			sc.driver = append(sc.driver, bhDriverEv{at: c.cancelAt, call: i, cancel: true})
		}
	}
	rng.Shuffle(len(sc.driver), func(i, j int) { sc.driver[i], sc.driver[j] = sc.driver[j], sc.driver[i] })
	slices.SortStableFunc(sc.driver, func(a, b bhDriverEv) int { return a.at - b.at })
	return sc
}

// bhEv is an observer event as the test compares it.
type bhEv struct {
	Pipeline string
	Kind     resil.EventKind
	Attempt  int
	Err      string
	Elapsed  time.Duration
}

// bhCallOut is what one call showed. Times are from the start.
type bhCallOut struct {
	Ran    bool
	Start  time.Duration // fn started; 0 when it did not run
	FnEnd  time.Duration // fn returned, panicked or called Goexit
	End    time.Duration // Run returned, panicked or ended the goroutine
	Result string        // "value N", "err TAG", "panic", "goexit"
	Events []bhEv
}

// bhOutcome is everything a scenario shows.
type bhOutcome struct {
	Calls []bhCallOut
	Probe string // what the probe after the scenario found (see bhRunCode)
}

// bhTag names an error for comparison: a call's own error ("fn"), the
// sentinels, and a Timeout's error around one of them.
func bhTag(err, fnErr error) string {
	switch {
	case err == nil:
		return "nil"
	case err == fnErr:
		return "fn"
	case err == resil.ErrBulkheadFull:
		return "full"
	case err == context.Canceled:
		return "canceled"
	case err == context.DeadlineExceeded:
		return "deadline"
	case errors.Is(err, resil.ErrTimeout) && errors.Is(err, context.DeadlineExceeded):
		return "timeout(" + bhTag(errors.Unwrap(err), fnErr) + ")"
	}
	return fmt.Sprintf("other %T: %v", err, err)
}

type bhCallKey struct{}

type bhPanicVal struct{ call int }

// bhObserver keeps the events of each call, found by the call's number in
// its context.
type bhObserver struct {
	mu   sync.Mutex
	errs []error
	evs  [][]bhEv
}

func (o *bhObserver) Observe(ctx context.Context, e resil.Event) {
	i := ctx.Value(bhCallKey{}).(int)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.evs[i] = append(o.evs[i], bhEv{Pipeline: e.Pipeline, Kind: e.Kind, Attempt: e.Attempt, Err: bhTag(e.Err, o.errs[i]), Elapsed: e.Elapsed})
}

// bhRunCode runs sc through resil in the caller's synctest bubble. It
// reports the most fns it saw running at once.
func bhRunCode(sc *bhScenario) (bhOutcome, int) {
	start := time.Now()
	since := func() time.Duration { return time.Since(start) }
	n := len(sc.calls)
	b := resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: sc.max, MaxWait: sc.maxWait()})
	obs := &bhObserver{errs: make([]error, n), evs: make([][]bhEv, n)}
	observe := func(p resil.Pipeline[int], name string) resil.Pipeline[int] {
		if !sc.observed {
			return p
		}
		return p.Named(name).Observe(obs)
	}
	pInt := observe(resil.New[int]().Bulkhead(b), "int")
	pStr := resil.New[string]().Bulkhead(b)
	if sc.observed {
		pStr = pStr.Named("string").Observe(obs)
	}

	ctxs := make([]context.Context, n)
	cancels := make([]context.CancelFunc, n)
	for i, c := range sc.calls {
		obs.errs[i] = fmt.Errorf("call %d failed", i)
		ctx, cancel := context.WithCancel(context.WithValue(context.Background(), bhCallKey{}, i))
		cancels[i] = cancel
		if c.deadline >= 0 {
			var cancelD context.CancelFunc
			ctx, cancelD = context.WithDeadline(ctx, start.Add(time.Duration(c.deadline)*bhUnit))
			defer cancelD()
		}
		defer cancel()
		ctxs[i] = ctx
	}

	out := make([]bhCallOut, n)
	var (
		mu            sync.Mutex
		running, peak int
		wg            sync.WaitGroup
	)
	launch := func(i int) {
		c := sc.calls[i]
		o := &out[i]
		wg.Go(func() {
			returned := false
			defer func() {
				if !returned { // runtime.Goexit
					o.End = since()
					o.Result = "goexit"
				}
			}()
			defer func() {
				if r := recover(); r != nil {
					returned = true
					o.End = since()
					o.Result = "panic"
					if r != (bhPanicVal{i}) {
						o.Result = fmt.Sprintf("panic %v", r)
					}
				}
			}()
			fn := func(ctx context.Context) (int, error) {
				mu.Lock()
				running++
				peak = max(peak, running)
				mu.Unlock()
				o.Ran = true
				o.Start = since()
				defer func() {
					mu.Lock()
					running--
					mu.Unlock()
					o.FnEnd = since()
				}()
				if c.honour {
					done := ctx.Done() // arms a Timeout's context
					if c.dur > 0 {
						tm := time.NewTimer(time.Duration(c.dur) * bhUnit)
						select {
						case <-tm.C:
						case <-done:
						}
						tm.Stop()
					}
				} else if c.dur > 0 {
					time.Sleep(time.Duration(c.dur) * bhUnit)
				}
				if c.cancels >= 0 {
					cancels[c.cancels]()
				}
				switch c.kind {
				case bhError:
					return 7, obs.errs[i]
				case bhPanic:
					panic(bhPanicVal{i})
				case bhGoexit:
					runtime.Goexit()
				}
				return 100 + i, nil
			}
			var (
				v   string
				err error
			)
			switch c.pipe {
			case bhInt, bhTimeout:
				p := pInt
				if c.pipe == bhTimeout {
					p = observe(resil.New[int]().Bulkhead(b).Timeout(time.Duration(c.timeout)*bhUnit), "timeout")
				}
				var x int
				x, err = p.Run(ctxs[i], fn)
				if x != 0 || err == nil {
					v = strconv.Itoa(x)
				}
			case bhString:
				v, err = pStr.Run(ctxs[i], func(ctx context.Context) (string, error) {
					x, err := fn(ctx)
					return strconv.Itoa(x), err
				})
			}
			returned = true
			o.End = since()
			switch {
			case err == nil:
				o.Result = "value " + v
			case v != "":
				o.Result = fmt.Sprintf("err %s with value %q", bhTag(err, obs.errs[i]), v)
			default:
				o.Result = "err " + bhTag(err, obs.errs[i])
			}
		})
	}

	for k := 0; k < len(sc.driver); {
		at := sc.driver[k].at
		if d := time.Duration(at)*bhUnit - since(); d > 0 {
			time.Sleep(d)
		}
		synctest.Wait() // what else is due at this instant has happened
		for ; k < len(sc.driver) && sc.driver[k].at == at; k++ {
			if e := sc.driver[k]; e.cancel {
				cancels[e.call]()
			} else {
				launch(e.call)
			}
			synctest.Wait()
		}
	}
	wg.Wait()
	for i := range out {
		out[i].Events = obs.evs[i]
	}
	return bhOutcome{Calls: out, Probe: bhProbe(b, sc)}, peak
}

// bhProbe checks that b has every slot free and nobody queued: limit calls
// all get in at once, one more finds no slot (and queues for MaxWait when
// it may), and once they are done a call gets in at once.
func bhProbe(b *resil.Bulkhead, sc *bhScenario) string {
	p := resil.New[int]().Bulkhead(b)
	release := make(chan struct{})
	var entered atomic.Int64
	var wg sync.WaitGroup
	for range sc.limit() {
		wg.Go(func() {
			_, _ = p.Run(context.Background(), func(context.Context) (int, error) {
				entered.Add(1)
				<-release
				return 0, nil
			})
		})
	}
	synctest.Wait()
	t0 := time.Now()
	_, err := p.Run(context.Background(), func(context.Context) (int, error) { return 1, nil })
	extra := fmt.Sprintf("err %s after %v", bhTag(err, nil), time.Since(t0))
	close(release)
	wg.Wait()
	t0 = time.Now()
	_, err = p.Run(context.Background(), func(context.Context) (int, error) { return 1, nil })
	return fmt.Sprintf("%d of %d got in; one more: %s; then: %s after %v", entered.Load(), sc.limit(), extra, bhTag(err, nil), time.Since(t0))
}

func bhWantProbe(sc *bhScenario) string {
	return fmt.Sprintf("%d of %d got in; one more: err full after %v; then: nil after 0s", sc.limit(), sc.limit(), sc.maxWait())
}

// The model.

const (
	bhPending = iota
	bhWaiting
	bhRunning
	bhDone
)

type bhMCall struct {
	state  int
	ctxEnd int    // when the caller's context ended; -1: live
	ctxErr string // "canceled" or "deadline"
	start  int    // fn started
	until  int    // waiting: when MaxWait runs out
	tcAt   int    // bhTimeout: when the Timeout's deadline comes
}

// bhStats counts the cases of interest the scenarios reached.
type bhStats struct {
	deadlineAtHandOver int // a queued call's deadline came as a slot was freed
	fnCancelsWaiter    int // fn cancelled a queued call, then gave its slot back
	cancelAfterGrant   int // the test cancelled a call handed a slot at that instant
	abruptHandOver     int // a panic or Goexit gave its slot to a queued call
	tie                int // MaxWait ran out as the deadline came
	rejected           int
	ctxLeft            int
	ran                int
	drawn, racy        int
}

type bhModel struct {
	sc    *bhScenario
	max   int
	now   int
	nrun  int
	queue []int // oldest first
	c     []bhMCall
	out   []bhCallOut
	alt   map[int]bhCallOut // another right outcome for a call (MaxWait and deadline at once)
	racy  string
	st    *bhStats

	// The batch being settled: what one cause at this instant set off.
	work            []int // calls whose fn returns now
	releases        int
	fnCancelsWaiter bool
	grantedNow      []bool // handed a slot at this instant by a release (not on arrival)
	grantedInBatch  []bool // handed a slot in the batch
}

func (m *bhModel) at(units int) time.Duration { return time.Duration(units) * bhUnit }

func (m *bhModel) pipeName(i int) string {
	if !m.sc.observed {
		return ""
	}
	return [...]string{"int", "string", "timeout"}[m.sc.calls[i].pipe]
}

func (m *bhModel) event(i int, kind resil.EventKind, err string) {
	if !m.sc.observed {
		return
	}
	attempt := 0
	if kind == resil.EventAttempt {
		attempt = 1
	}
	o := &m.out[i]
	o.Events = append(o.Events, bhEv{Pipeline: m.pipeName(i), Kind: kind, Attempt: attempt, Err: err, Elapsed: m.at(m.now - m.sc.calls[i].arrive)})
}

// fail ends call i now with an error and no fn run: "full", "canceled",
// "deadline" (the caller's), "tc" (the outer Timeout's deadline).
func (m *bhModel) fail(i int, why string) {
	if k := slices.Index(m.queue, i); k >= 0 {
		m.queue = slices.Delete(m.queue, k, k+1)
	}
	m.c[i].state = bhDone
	o := &m.out[i]
	o.End = m.at(m.now)
	switch why {
	case "full":
		m.st.rejected++
		m.event(i, resil.EventRejected, "full")
	case "tc":
		m.st.ctxLeft++
		why = "timeout(deadline)"
		m.event(i, resil.EventTimeout, why)
	default:
		m.st.ctxLeft++
	}
	o.Result = "err " + why
	m.event(i, resil.EventFailure, why)
}

// fullAtDeadline is what queued call i shows when MaxWait runs out now,
// as its deadline comes: ErrBulkheadFull, which an outer Timeout, its
// deadline come, wraps.
func (m *bhModel) fullAtDeadline(i int) bhCallOut {
	tag := "full"
	if m.sc.calls[i].pipe == bhTimeout {
		tag = "timeout(full)"
	}
	o := bhCallOut{End: m.at(m.now), Result: "err " + tag}
	if m.sc.observed {
		ev := func(kind resil.EventKind, err string) bhEv {
			return bhEv{Pipeline: m.pipeName(i), Kind: kind, Err: err, Elapsed: m.at(m.now - m.sc.calls[i].arrive)}
		}
		o.Events = append(o.Events, ev(resil.EventRejected, "full"))
		if tag != "full" {
			o.Events = append(o.Events, ev(resil.EventTimeout, tag))
		}
		o.Events = append(o.Events, ev(resil.EventFailure, tag))
	}
	return o
}

// start runs call i's fn now.
func (m *bhModel) start(i int) {
	c := &m.c[i]
	call := m.sc.calls[i]
	c.state = bhRunning
	c.start = m.now
	m.nrun++
	if m.nrun > m.max {
		panic("model: more running than slots")
	}
	m.st.ran++
	m.out[i].Ran = true
	m.out[i].Start = m.at(m.now)
	m.event(i, resil.EventAttempt, "nil")
	if call.dur == 0 || call.honour && c.ctxEnd >= 0 {
		m.work = append(m.work, i)
	}
}

// grant hands free slots to the queue, oldest first.
func (m *bhModel) grant() {
	for m.nrun < m.max && len(m.queue) > 0 {
		w := m.queue[0]
		m.queue = m.queue[1:]
		m.grantedNow[w] = true
		m.grantedInBatch[w] = true
		m.start(w)
	}
}

// cancel ends call j's context now; byFn: from another call's fn.
func (m *bhModel) cancel(j int, byFn bool) {
	c := &m.c[j]
	call := m.sc.calls[j]
	endedBefore := c.state == bhDone && m.out[j].End < m.at(m.now) || c.ctxEnd >= 0 && c.ctxEnd < m.now
	if byFn && !endedBefore && (call.deadline == m.now || call.pipe == bhTimeout && c.tcAt == m.now) {
		// The deadline's timer and this cancellation race (the deadline
		// was settled first above, which the code need not do).
		m.racy = fmt.Sprintf("at %d fn cancels call %d as its deadline comes", m.now, j)
	}
	if c.ctxEnd >= 0 {
		return
	}
	c.ctxEnd, c.ctxErr = m.now, "canceled"
	if byFn && m.grantedInBatch[j] {
		// Handed a slot by another release of this batch: in another
		// order of the two, the cancellation finds it queued.
		m.fnCancelsWaiter = true
	}
	switch c.state {
	case bhWaiting:
		if byFn {
			m.fnCancelsWaiter = true
			m.st.fnCancelsWaiter++
		}
		m.fail(j, "canceled")
	case bhRunning:
		if !byFn && m.grantedNow[j] {
			m.st.cancelAfterGrant++
		}
		if call.honour {
			m.work = append(m.work, j)
		}
	}
}

// drain returns the fns in m.work, and those their ends set off.
func (m *bhModel) drain() {
	for len(m.work) > 0 {
		i := m.work[0]
		m.work = m.work[1:]
		call := m.sc.calls[i]
		c := &m.c[i]
		if c.state == bhDone {
			continue // listed twice: its time ran out and its context ended
		}
		o := &m.out[i]
		c.state = bhDone
		m.nrun--
		m.releases++
		o.FnEnd, o.End = m.at(m.now), m.at(m.now)
		switch call.kind {
		case bhValue:
			o.Result = fmt.Sprint("value ", 100+i)
			m.event(i, resil.EventSuccess, "nil")
		case bhError:
			// An outer Timeout wraps an error that comes at or after its
			// deadline, unless the caller's context ended before it.
			tag := "fn"
			if call.pipe == bhTimeout && m.now >= c.tcAt && !(c.ctxEnd >= 0 && c.ctxEnd < c.tcAt) {
				tag = "timeout(fn)"
				m.event(i, resil.EventTimeout, tag)
			}
			o.Result = "err " + tag
			m.event(i, resil.EventFailure, tag)
		case bhPanic:
			o.Result = "panic"
		case bhGoexit:
			o.Result = "goexit"
		}
		if call.cancels >= 0 {
			m.cancel(call.cancels, true)
		}
		before := len(m.queue)
		m.grant()
		if len(m.queue) < before && (call.kind == bhPanic || call.kind == bhGoexit) {
			m.st.abruptHandOver++
		}
	}
}

func (m *bhModel) batch() {
	m.releases = 0
	m.fnCancelsWaiter = false
	clear(m.grantedInBatch)
}

// endBatch flags a batch whose outcome depends on an order nothing fixes.
func (m *bhModel) endBatch() {
	if m.fnCancelsWaiter && m.releases > 1 {
		m.racy = fmt.Sprintf("at %d fn cancels a queued call while another slot is freed", m.now)
	}
}

// timers is what comes due at instant now by itself: deadlines, MaxWait,
// and fns' ends.
func (m *bhModel) timers() {
	m.batch()
	for i, call := range m.sc.calls {
		if c := &m.c[i]; call.deadline == m.now && c.ctxEnd < 0 {
			c.ctxEnd, c.ctxErr = m.now, "deadline"
		}
	}
	expired := false
	for _, i := range slices.Clone(m.queue) {
		c := &m.c[i]
		why := ""
		switch {
		case c.ctxEnd == m.now && c.ctxErr == "deadline":
			why = "deadline"
		case m.sc.calls[i].pipe == bhTimeout && c.tcAt == m.now:
			why = "tc"
		}
		switch {
		case why != "" && c.until == m.now:
			// MaxWait and the deadline at once: either answer.
			m.st.tie++
			m.fail(i, why)
			m.alt[i] = m.fullAtDeadline(i)
		case why != "":
			m.fail(i, why)
		case c.until == m.now:
			expired = true
			m.fail(i, "full")
		}
	}
	for i, call := range m.sc.calls {
		c := &m.c[i]
		if c.state != bhRunning {
			continue
		}
		ctxEnds := c.ctxEnd == m.now || call.pipe == bhTimeout && c.tcAt == m.now
		if c.start+call.dur == m.now || call.honour && ctxEnds {
			m.work = append(m.work, i)
		}
	}
	m.drain()
	if expired && m.releases > 0 {
		m.racy = fmt.Sprintf("at %d a queued call's MaxWait runs out as a slot is freed", m.now)
	}
	if m.releases > 0 {
		for i := range m.c {
			if m.c[i].state == bhDone && m.out[i].End == m.at(m.now) && !m.out[i].Ran && strings.Contains(m.out[i].Result, "deadline") {
				m.st.deadlineAtHandOver++
				break
			}
		}
	}
	m.endBatch()
}

// step is one thing the test does at instant now.
func (m *bhModel) step(e bhDriverEv) {
	m.batch()
	i := e.call
	if e.cancel {
		m.cancel(i, false)
	} else {
		call := m.sc.calls[i]
		c := &m.c[i]
		if call.pipe == bhTimeout {
			c.tcAt = m.now + call.timeout
		}
		switch {
		case c.ctxEnd >= 0:
			m.fail(i, c.ctxErr)
		case m.nrun < m.max:
			if len(m.queue) > 0 {
				panic("model: a free slot and a queue")
			}
			m.start(i)
		case m.sc.wait == 0:
			m.fail(i, "full")
		default:
			c.state = bhWaiting
			c.until = m.now + m.sc.wait
			m.queue = append(m.queue, i)
		}
	}
	m.drain()
	m.endBatch()
}

// bhRunModel works out what sc must show. racy is non-empty when the
// outcome depends on an order of simultaneous events that nothing fixes.
func bhRunModel(sc *bhScenario, st *bhStats) (out bhOutcome, alt map[int]bhCallOut, racy string) {
	n := len(sc.calls)
	m := &bhModel{sc: sc, max: sc.limit(), c: make([]bhMCall, n), out: make([]bhCallOut, n), alt: map[int]bhCallOut{}, st: st, grantedInBatch: make([]bool, n)}
	for i := range m.c {
		m.c[i] = bhMCall{ctxEnd: -1, until: -1, tcAt: -1}
	}
	k := 0
	for m.now = 0; ; m.now++ {
		m.grantedNow = make([]bool, n)
		m.timers()
		for ; k < len(sc.driver) && sc.driver[k].at == m.now; k++ {
			m.step(sc.driver[k])
		}
		if k == len(sc.driver) && !slices.ContainsFunc(m.c, func(c bhMCall) bool { return c.state != bhDone }) {
			break
		}
		if m.now > 10000 {
			panic("model: the scenario does not end")
		}
	}
	return bhOutcome{Calls: m.out, Probe: bhWantProbe(sc)}, m.alt, m.racy
}

// bhScenarioFor draws scenarios from seed until one holds no instant the
// contract cannot order.
func bhScenarioFor(seed uint64, st *bhStats) (*bhScenario, bhOutcome, map[int]bhCallOut) {
	rng := rand.New(rand.NewPCG(seed, seed^0xb0b5))
	for range 1000 {
		sc := bhDraw(rng, seed)
		st.drawn++
		var probe bhStats
		want, alt, racy := bhRunModel(sc, &probe)
		if racy != "" {
			st.racy++
			continue
		}
		st.add(probe)
		return sc, want, alt
	}
	panic("no scenario without a race")
}

func (s *bhStats) add(o bhStats) {
	s.deadlineAtHandOver += o.deadlineAtHandOver
	s.fnCancelsWaiter += o.fnCancelsWaiter
	s.cancelAfterGrant += o.cancelAfterGrant
	s.abruptHandOver += o.abruptHandOver
	s.tie += o.tie
	s.rejected += o.rejected
	s.ctxLeft += o.ctxLeft
	s.ran += o.ran
}

func bhCheck(t *testing.T, sc *bhScenario, want bhOutcome, alt map[int]bhCallOut) {
	got, peak := bhRunCode(sc)
	require.LessOrEqual(t, peak, sc.limit(), "more fns ran at once than MaxConcurrent; replay with -run 'TestBulkheadModel/seed=%d$'\n%v", sc.seed, sc)
	for i, a := range alt {
		if assert.ObjectsAreEqual(a, got.Calls[i]) {
			want.Calls[i] = a
		}
	}
	require.Equal(t, want, got, "the model (want) and resil (got) disagree; replay with -run 'TestBulkheadModel/seed=%d$'\n%v", sc.seed, sc)
}

// TestBulkheadModel runs seeded random scenarios through a Bulkhead and
// the reference model, in fake time, and compares all that they show.
func TestBulkheadModel(t *testing.T) {
	var st bhStats
	forEachSeed(t, 1000, func(seed uint64) func(t *testing.T) {
		sc, want, alt := bhScenarioFor(seed, &st)
		return func(t *testing.T) { bhCheck(t, sc, want, alt) }
	})
	t.Logf("%+v", st)
	if testing.Short() {
		return
	}
	// The cases of interest were reached, many times.
	assert.Greater(t, st.deadlineAtHandOver, 20, "a deadline as a slot is freed")
	assert.Greater(t, st.fnCancelsWaiter, 20, "fn cancels a queued call, then frees its slot")
	assert.Greater(t, st.cancelAfterGrant, 10, "a call cancelled at the instant it is handed a slot")
	assert.Greater(t, st.abruptHandOver, 50, "a panic or Goexit hands its slot over")
	assert.Greater(t, st.tie, 5, "MaxWait runs out as the deadline comes")
	assert.Less(t, st.racy, st.drawn/2, "most scenarios drawn are used")
}

// TestBulkheadDeadlineAtHandOver: a queued call whose deadline comes at the
// very instant a slot is handed to it has ended while it queued (in resil a
// deadline that has come has ended the context, though its timer may not
// have said so yet). It returns context.DeadlineExceeded without running
// fn, and the slot goes on at once to the next in line. The slot's release
// and the deadline's timer fall on one instant and race, so each case runs
// many times.
func TestBulkheadDeadlineAtHandOver(t *testing.T) {
	for _, outer := range []bool{false, true} {
		name := "caller's deadline"
		if outer {
			name = "outer Timeout"
		}
		t.Run(name, func(t *testing.T) {
			for run := 0; run < 100 && !t.Failed(); run++ {
				synctest.Test(t, func(t *testing.T) {
					const at = 10 * time.Millisecond
					start := time.Now()
					p := resil.New[int]().Bulkhead(resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1, MaxWait: time.Hour}))
					var wg sync.WaitGroup
					wg.Go(func() { // holds the only slot until at
						_, _ = p.Run(context.Background(), func(context.Context) (int, error) {
							time.Sleep(at)
							return 0, nil
						})
					})
					synctest.Wait()
					ctx, pa := context.Background(), p
					if outer {
						pa = p.Timeout(at)
					} else {
						var cancel context.CancelFunc
						ctx, cancel = context.WithTimeout(ctx, at)
						defer cancel()
					}
					var (
						ranA, ranB bool
						errA       error
						endA       time.Duration
						startB     time.Duration
					)
					wg.Go(func() {
						_, errA = pa.Run(ctx, func(context.Context) (int, error) { ranA = true; return 1, nil })
						endA = time.Since(start)
					})
					synctest.Wait()
					wg.Go(func() {
						_, _ = p.Run(context.Background(), func(context.Context) (int, error) {
							ranB, startB = true, time.Since(start)
							return 2, nil
						})
					})
					wg.Wait()
					require.False(t, ranA, "run %d: fn ran, its deadline come", run)
					require.ErrorIs(t, errA, context.DeadlineExceeded, "run %d", run)
					if outer {
						require.ErrorIs(t, errA, resil.ErrTimeout, "run %d", run)
					}
					require.Equal(t, at, endA, "run %d", run)
					require.True(t, ranB, "run %d", run)
					require.Equal(t, at, startB, "run %d: the next in line got the slot at once", run)
				})
			}
		})
	}
}
