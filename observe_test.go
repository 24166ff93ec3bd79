package resil_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// obsRecorder is an Observer that keeps every event it receives.
type obsRecorder struct {
	mu     sync.Mutex
	events []resil.Event
}

func (r *obsRecorder) Observe(_ context.Context, e resil.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

// take returns the events received so far and forgets them.
func (r *obsRecorder) take() []resil.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.events
	r.events = nil
	return e
}

// kinds returns the events of kind k received so far, keeping them all.
func (r *obsRecorder) kinds(k resil.EventKind) []resil.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []resil.Event
	for _, e := range r.events {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// requireEvents checks got against want field by field; an Err in want is
// matched with errors.Is, and the Seq of got's EventStateChange events must
// grow from one to the next (want's is not looked at).
func requireEvents(t *testing.T, want, got []resil.Event) {
	t.Helper()
	kinds := func(es []resil.Event) []string {
		s := make([]string, len(es))
		for i, e := range es {
			s[i] = e.Kind.String()
		}
		return s
	}
	require.Equal(t, kinds(want), kinds(got), "event kinds")
	var seq uint64 // the last move's Seq: it grows with every move
	for i := range want {
		w, g := want[i], got[i]
		if g.Kind == resil.EventStateChange {
			assert.Greater(t, g.Seq, seq, "event %d (%v): Seq", i, g.Kind)
			seq = g.Seq
		} else {
			assert.Zero(t, g.Seq, "event %d (%v): Seq", i, g.Kind)
		}
		w.Seq, g.Seq = 0, 0
		if w.Err == nil {
			assert.NoError(t, g.Err, "event %d (%v)", i, g.Kind)
		} else {
			assert.ErrorIs(t, g.Err, w.Err, "event %d (%v)", i, g.Kind)
		}
		w.Err, g.Err = nil, nil
		assert.Equal(t, w, g, "event %d (%v)", i, g.Kind)
	}
}

var errFallback = errors.New("fallback failed")

// obsStep is what one attempt of a scripted fn does: wait, or block until
// its context ends, then fail with err or succeed.
type obsStep struct {
	sleep time.Duration
	block bool
	err   error
}

// script returns an fn that plays steps, one per attempt, and succeeds with
// 42 once they run out.
func obsScript(steps ...obsStep) func(context.Context) (int, error) {
	i := 0
	return func(ctx context.Context) (int, error) {
		if i >= len(steps) {
			return 42, nil
		}
		s := steps[i]
		i++
		time.Sleep(s.sleep)
		if s.block {
			<-ctx.Done()
			return 0, ctx.Err()
		}
		if s.err != nil {
			return 0, s.err
		}
		return 42, nil
	}
}

const msec = time.Millisecond

// ev builds an expected event of pipeline "p".
func ev(kind resil.EventKind, attempt int, err error, delay, elapsed time.Duration) resil.Event {
	return resil.Event{Pipeline: "p", Kind: kind, Attempt: attempt, Err: err, Delay: delay, Elapsed: elapsed}
}

func evChange(from, to resil.BreakerState) resil.Event {
	return resil.Event{Pipeline: "p", Kind: resil.EventStateChange, From: from, To: to}
}

const (
	evAttempt  = resil.EventAttempt
	evRetry    = resil.EventRetry
	evSuccess  = resil.EventSuccess
	evFailure  = resil.EventFailure
	evTimeout  = resil.EventTimeout
	evRejected = resil.EventRejected
	evFallback = resil.EventFallback
)

func TestObserveEventSequences(t *testing.T) {
	retry3 := resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(10 * msec)}
	fbValue := func(context.Context, error) (int, error) { return 7, nil }
	fbError := func(context.Context, error) (int, error) { return 0, errFallback }
	cases := []struct {
		name    string
		build   func(o resil.Observer) resil.Pipeline[int]
		steps   []obsStep
		wantV   int
		wantErr error
		want    []resil.Event
	}{
		{
			name:  "empty success",
			build: func(o resil.Observer) resil.Pipeline[int] { return resil.New[int]().Named("p").Observe(o) },
			wantV: 42,
			want:  []resil.Event{ev(evAttempt, 1, nil, 0, 0), ev(evSuccess, 0, nil, 0, 0)},
		},
		{
			name:    "empty failure",
			build:   func(o resil.Observer) resil.Pipeline[int] { return resil.New[int]().Named("p").Observe(o) },
			steps:   []obsStep{{sleep: 5 * msec, err: errFlaky}},
			wantErr: errFlaky,
			want:    []resil.Event{ev(evAttempt, 1, nil, 0, 0), ev(evFailure, 0, errFlaky, 0, 5*msec)},
		},
		{
			name: "retry until success",
			build: func(o resil.Observer) resil.Pipeline[int] {
				return resil.New[int]().Retry(retry3).Named("p").Observe(o)
			},
			steps: []obsStep{{err: errFlaky}, {sleep: 5 * msec, err: errFlaky}},
			wantV: 42,
			want: []resil.Event{
				ev(evAttempt, 1, nil, 0, 0),
				ev(evRetry, 1, errFlaky, 10*msec, 0),
				ev(evAttempt, 2, nil, 0, 10*msec),
				ev(evRetry, 2, errFlaky, 10*msec, 15*msec),
				ev(evAttempt, 3, nil, 0, 25*msec),
				ev(evSuccess, 0, nil, 0, 25*msec),
			},
		},
		{
			name: "retry attempts run out",
			build: func(o resil.Observer) resil.Pipeline[int] {
				return resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(10 * msec)}).Named("p").Observe(o)
			},
			steps:   []obsStep{{err: errFlaky}, {err: errFlaky}},
			wantErr: errFlaky,
			want: []resil.Event{
				ev(evAttempt, 1, nil, 0, 0),
				ev(evRetry, 1, errFlaky, 10*msec, 0),
				ev(evAttempt, 2, nil, 0, 10*msec),
				ev(evFailure, 0, errFlaky, 0, 10*msec),
			},
		},
		{
			name: "retry permanent error",
			build: func(o resil.Observer) resil.Pipeline[int] {
				return resil.New[int]().Retry(retry3).Named("p").Observe(o)
			},
			steps:   []obsStep{{err: resil.Permanent(errFlaky)}},
			wantErr: errFlaky,
			want:    []resil.Event{ev(evAttempt, 1, nil, 0, 0), ev(evFailure, 0, errFlaky, 0, 0)},
		},
		{
			name: "retry delay from a server hint",
			build: func(o resil.Observer) resil.Pipeline[int] {
				return resil.New[int]().Retry(retry3).Named("p").Observe(o)
			},
			steps: []obsStep{{err: hintError{d: 30 * msec}}},
			wantV: 42,
			want: []resil.Event{
				ev(evAttempt, 1, nil, 0, 0),
				ev(evRetry, 1, hintError{d: 30 * msec}, 30*msec, 0),
				ev(evAttempt, 2, nil, 0, 30*msec),
				ev(evSuccess, 0, nil, 0, 30*msec),
			},
		},
		{
			name: "timeout",
			build: func(o resil.Observer) resil.Pipeline[int] {
				return resil.New[int]().Timeout(50 * msec).Named("p").Observe(o)
			},
			steps:   []obsStep{{block: true}},
			wantErr: resil.ErrTimeout,
			want: []resil.Event{
				ev(evAttempt, 1, nil, 0, 0),
				ev(evTimeout, 0, resil.ErrTimeout, 0, 50*msec),
				ev(evFailure, 0, resil.ErrTimeout, 0, 50*msec),
			},
		},
		{
			name: "timeout per attempt, retried",
			build: func(o resil.Observer) resil.Pipeline[int] {
				return resil.New[int]().Timeout(50 * msec).Retry(retry3).Named("p").Observe(o)
			},
			steps: []obsStep{{block: true}},
			wantV: 42,
			want: []resil.Event{
				ev(evAttempt, 1, nil, 0, 0),
				ev(evTimeout, 1, resil.ErrTimeout, 0, 50*msec),
				ev(evRetry, 1, resil.ErrTimeout, 10*msec, 50*msec),
				ev(evAttempt, 2, nil, 0, 60*msec),
				ev(evSuccess, 0, nil, 0, 60*msec),
			},
		},
		{
			name: "timeout around the retries",
			build: func(o resil.Observer) resil.Pipeline[int] {
				return resil.New[int]().Retry(retry3).Timeout(100 * msec).Named("p").Observe(o)
			},
			steps:   []obsStep{{sleep: 40 * msec, err: errFlaky}, {block: true}},
			wantErr: resil.ErrTimeout,
			want: []resil.Event{
				ev(evAttempt, 1, nil, 0, 0),
				ev(evRetry, 1, errFlaky, 10*msec, 40*msec),
				ev(evAttempt, 2, nil, 0, 50*msec),
				ev(evTimeout, 0, resil.ErrTimeout, 0, 100*msec),
				ev(evFailure, 0, resil.ErrTimeout, 0, 100*msec),
			},
		},
		{
			name: "fallback serves a value",
			build: func(o resil.Observer) resil.Pipeline[int] {
				return resil.New[int]().Fallback(fbValue).Named("p").Observe(o)
			},
			steps: []obsStep{{sleep: 5 * msec, err: errFlaky}},
			wantV: 7,
			want: []resil.Event{
				ev(evAttempt, 1, nil, 0, 0),
				ev(evFallback, 0, errFlaky, 0, 5*msec),
				ev(evSuccess, 0, nil, 0, 5*msec),
			},
		},
		{
			name: "fallback fails",
			build: func(o resil.Observer) resil.Pipeline[int] {
				return resil.New[int]().Fallback(fbError).Named("p").Observe(o)
			},
			steps:   []obsStep{{err: errFlaky}},
			wantErr: errFallback,
			want: []resil.Event{
				ev(evAttempt, 1, nil, 0, 0),
				ev(evFallback, 0, errFlaky, 0, 0),
				ev(evFailure, 0, errFallback, 0, 0),
			},
		},
		{
			name: "all core stages",
			build: func(o resil.Observer) resil.Pipeline[int] {
				return resil.New[int]().Timeout(50 * msec).Retry(retry3).
					Breaker(resil.NewBreaker(resil.BreakerPolicy{})).Fallback(fbValue).Named("p").Observe(o)
			},
			steps: []obsStep{{block: true}, {err: errFlaky}, {err: errFlaky}},
			wantV: 7,
			want: []resil.Event{
				ev(evAttempt, 1, nil, 0, 0),
				ev(evTimeout, 1, resil.ErrTimeout, 0, 50*msec),
				ev(evRetry, 1, resil.ErrTimeout, 10*msec, 50*msec),
				ev(evAttempt, 2, nil, 0, 60*msec),
				ev(evRetry, 2, errFlaky, 10*msec, 60*msec),
				ev(evAttempt, 3, nil, 0, 70*msec),
				ev(evFallback, 0, errFlaky, 0, 70*msec),
				ev(evSuccess, 0, nil, 0, 70*msec),
			},
		},
		{
			name: "stages added after Observe and Named report too",
			build: func(o resil.Observer) resil.Pipeline[int] {
				return resil.New[int]().Timeout(50 * msec).Observe(o).Retry(retry3).Named("p").Fallback(fbValue)
			},
			steps: []obsStep{{block: true}, {err: resil.Permanent(errFlaky)}},
			wantV: 7,
			want: []resil.Event{
				ev(evAttempt, 1, nil, 0, 0),
				ev(evTimeout, 1, resil.ErrTimeout, 0, 50*msec),
				ev(evRetry, 1, resil.ErrTimeout, 10*msec, 50*msec),
				ev(evAttempt, 2, nil, 0, 60*msec),
				ev(evFallback, 0, errFlaky, 0, 60*msec),
				ev(evSuccess, 0, nil, 0, 60*msec),
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var r obsRecorder
				v, err := c.build(&r).Run(context.Background(), obsScript(c.steps...))
				if c.wantErr != nil {
					require.ErrorIs(t, err, c.wantErr)
				} else {
					require.NoError(t, err)
				}
				require.Equal(t, c.wantV, v)
				requireEvents(t, c.want, r.take())
			})
		})
	}
}

func TestObserveRetryGivesUpWithRetryError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r obsRecorder
		p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)}).Observe(&r)
		_, err := p.Run(context.Background(), obsScript(obsStep{err: errFlaky}, obsStep{err: errFlaky}))
		require.Error(t, err)
		events := r.take()
		require.Len(t, events, 4)
		last := events[3]
		require.Equal(t, resil.EventFailure, last.Kind)
		require.Equal(t, "", last.Pipeline, "an unnamed pipeline's events carry no name")
		var re *resil.RetryError
		require.ErrorAs(t, last.Err, &re)
		require.Equal(t, 2, re.Attempts)
		require.Same(t, err, last.Err, "the failure event carries the error Run returns")
	})
}

func TestObserveBreakerSequence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r obsRecorder
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 2, FailureRatio: 0.5, OpenFor: time.Second})
		p := resil.New[int]().Breaker(b).Named("p").Observe(&r)
		fail := obsScript(obsStep{err: errFlaky})
		ok := obsScript()
		ctx := context.Background()

		_, err := p.Run(ctx, fail)
		require.ErrorIs(t, err, errFlaky)
		requireEvents(t, []resil.Event{ev(evAttempt, 1, nil, 0, 0), ev(evFailure, 0, errFlaky, 0, 0)}, r.take())

		_, err = p.Run(ctx, obsScript(obsStep{err: errFlaky}))
		require.ErrorIs(t, err, errFlaky)
		requireEvents(t, []resil.Event{
			ev(evAttempt, 1, nil, 0, 0),
			evChange(resil.StateClosed, resil.StateOpen),
			ev(evFailure, 0, errFlaky, 0, 0),
		}, r.take())

		_, err = p.Run(ctx, ok)
		require.ErrorIs(t, err, resil.ErrBreakerOpen)
		requireEvents(t, []resil.Event{
			ev(evRejected, 0, resil.ErrBreakerOpen, 0, 0),
			ev(evFailure, 0, resil.ErrBreakerOpen, 0, 0),
		}, r.take())

		time.Sleep(time.Second)
		_, err = p.Run(ctx, obsScript(obsStep{sleep: 5 * msec}))
		require.NoError(t, err)
		requireEvents(t, []resil.Event{
			evChange(resil.StateOpen, resil.StateHalfOpen),
			ev(evAttempt, 1, nil, 0, 0),
			{Pipeline: "p", Kind: resil.EventStateChange, From: resil.StateHalfOpen, To: resil.StateClosed, Elapsed: 5 * msec},
			ev(evSuccess, 0, nil, 0, 5*msec),
		}, r.take())

		// Trip again; this time the trial fails and the breaker reopens.
		for range 2 {
			_, _ = p.Run(ctx, obsScript(obsStep{err: errFlaky}))
		}
		require.Equal(t, resil.StateOpen, b.State())
		r.take()
		time.Sleep(time.Second)
		_, err = p.Run(ctx, obsScript(obsStep{err: errFlaky}))
		require.ErrorIs(t, err, errFlaky)
		requireEvents(t, []resil.Event{
			evChange(resil.StateOpen, resil.StateHalfOpen),
			ev(evAttempt, 1, nil, 0, 0),
			evChange(resil.StateHalfOpen, resil.StateOpen),
			ev(evFailure, 0, errFlaky, 0, 0),
		}, r.take())
	})
}

func TestObserveBreakerRejectionServedByFallback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r obsRecorder
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second})
		fb := func(context.Context, error) (int, error) { return 7, nil }
		p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 1}).Breaker(b).Fallback(fb).Named("p").Observe(&r)
		ctx := context.Background()
		v, err := p.Run(ctx, obsScript(obsStep{err: errFlaky}))
		require.NoError(t, err)
		require.Equal(t, 7, v)
		requireEvents(t, []resil.Event{
			ev(evAttempt, 1, nil, 0, 0),
			evChange(resil.StateClosed, resil.StateOpen),
			ev(evFallback, 0, errFlaky, 0, 0),
			ev(evSuccess, 0, nil, 0, 0),
		}, r.take())

		v, err = p.Run(ctx, obsScript())
		require.NoError(t, err)
		require.Equal(t, 7, v)
		requireEvents(t, []resil.Event{
			ev(evRejected, 0, resil.ErrBreakerOpen, 0, 0),
			ev(evFallback, 0, resil.ErrBreakerOpen, 0, 0),
			ev(evSuccess, 0, nil, 0, 0),
		}, r.take())
	})
}

func TestNamedAndObserveAreImmutable(t *testing.T) {
	var r obsRecorder
	ctx := context.Background()
	base := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 1})
	observed := base.Observe(&r)
	named := observed.Named("a")
	renamed := named.Named("b")
	removed := named.Observe(nil)
	nameFirst := base.Named("c").Observe(&r)

	for _, c := range []struct {
		p     resil.Pipeline[int]
		names []string // of the events, or none when unobserved
	}{
		{base, nil},
		{observed, []string{"", ""}},
		{named, []string{"a", "a"}},
		{renamed, []string{"b", "b"}},
		{removed, nil},
		{nameFirst, []string{"c", "c"}},
		{base.Named("d"), nil},
	} {
		_, err := c.p.Run(ctx, obsScript())
		require.NoError(t, err)
		var names []string
		for _, e := range r.take() {
			names = append(names, e.Pipeline)
		}
		require.Equal(t, c.names, names)
	}
}

func TestEventKindString(t *testing.T) {
	for kind, want := range map[resil.EventKind]string{
		resil.EventAttempt:     "attempt",
		resil.EventRetry:       "retry",
		resil.EventSuccess:     "success",
		resil.EventFailure:     "failure",
		resil.EventTimeout:     "timeout",
		resil.EventRejected:    "rejected",
		resil.EventFallback:    "fallback",
		resil.EventStateChange: "state-change",
		resil.EventKind(-1):    "EventKind(-1)",
		resil.EventKind(99):    "EventKind(99)",
	} {
		assert.Equal(t, want, kind.String())
	}
}

// panicky is an Observer that panics on the first event of a kind and
// records the rest.
type panicky struct {
	obsRecorder
	on     resil.EventKind
	armed  bool
	panics int
}

func (p *panicky) Observe(ctx context.Context, e resil.Event) {
	if p.armed && e.Kind == p.on {
		p.armed = false
		p.panics++
		panic("observer panic")
	}
	p.obsRecorder.Observe(ctx, e)
}

// runRecovered runs p and returns the value of a panic, or nil.
func runRecovered(p resil.Pipeline[int], fn func(context.Context) (int, error)) (panicked any) {
	defer func() { panicked = recover() }()
	_, _ = p.Run(context.Background(), fn)
	return nil
}

// halfOpenBreaker returns a breaker that was tripped and whose open period has
// passed: the next call is its only half-open trial.
func halfOpenBreaker(t *testing.T) *resil.Breaker {
	t.Helper()
	b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, HalfOpenCalls: 1})
	_, _ = resil.New[int]().Breaker(b).Run(context.Background(), obsScript(obsStep{err: errFlaky}))
	require.Equal(t, resil.StateOpen, b.State())
	time.Sleep(time.Second)
	return b
}

func TestPanickingObserverLeavesBreakerConsistent(t *testing.T) {
	for _, c := range []struct {
		name  string
		on    resil.EventKind
		calls int // fn calls made by the panicking Run
	}{
		// The admission that turned the breaker half-open is reported with
		// the trial's place taken: the place must come back.
		{"on the half-open transition of a trial", resil.EventStateChange, 0},
		{"on the trial's attempt", resil.EventAttempt, 0},
		{"after the trial succeeded", resil.EventSuccess, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := halfOpenBreaker(t)
				obs := &panicky{on: c.on, armed: true}
				p := resil.New[int]().Breaker(b).Observe(obs)
				calls := 0
				fn := func(context.Context) (int, error) { calls++; return 1, nil }
				require.Equal(t, "observer panic", runRecovered(p, fn))
				require.Equal(t, c.calls, calls)
				if c.calls == 1 {
					require.Equal(t, resil.StateClosed, b.State(), "the trial's success counted")
					return
				}
				require.Equal(t, resil.StateHalfOpen, b.State())
				// The trial's place was given back: the next call is admitted.
				v, err := p.Run(context.Background(), fn)
				require.NoError(t, err)
				require.Equal(t, 1, v)
				require.Equal(t, 1, calls)
				require.Equal(t, resil.StateClosed, b.State())
			})
		})
	}
}

func TestPanickingObserverOnTripLeavesBreakerOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second})
		obs := &panicky{on: resil.EventStateChange, armed: true}
		p := resil.New[int]().Breaker(b).Named("p").Observe(obs)
		require.Equal(t, "observer panic", runRecovered(p, obsScript(obsStep{err: errFlaky})))
		require.Equal(t, resil.StateOpen, b.State())
		_, err := p.Run(context.Background(), obsScript())
		require.ErrorIs(t, err, resil.ErrBreakerOpen)
		time.Sleep(time.Second)
		_, err = p.Run(context.Background(), obsScript())
		require.NoError(t, err)
		require.Equal(t, resil.StateClosed, b.State())
	})
}

func TestPanickingObserverInRetryAndTimeout(t *testing.T) {
	for _, on := range []resil.EventKind{resil.EventRetry, resil.EventTimeout, resil.EventFallback} {
		t.Run(on.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				obs := &panicky{on: on, armed: true}
				fb := func(context.Context, error) (int, error) { return 7, nil }
				p := resil.New[int]().Timeout(10 * msec).Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(5 * msec)}).
					Fallback(fb).Observe(obs)
				fn := obsScript(obsStep{block: true}, obsStep{block: true})
				require.Equal(t, "observer panic", runRecovered(p, fn))
				// The pipeline is as good as new: the next call runs in full.
				v, err := p.Run(context.Background(), obsScript(obsStep{block: true}, obsStep{block: true}))
				require.NoError(t, err)
				require.Equal(t, 7, v)
				require.Equal(t, 1, obs.panics)
			})
		})
	}
}

// blocker is an Observer that blocks on an event of one kind until
// released.
type blocker struct {
	on       resil.EventKind
	reached  chan struct{}
	release  chan struct{}
	blocking sync.Once
}

func (o *blocker) Observe(_ context.Context, e resil.Event) {
	if e.Kind != o.on {
		return
	}
	o.blocking.Do(func() {
		close(o.reached)
		<-o.release
	})
}

func TestBlockingObserverHoldsNoBreakerLock(t *testing.T) {
	for _, c := range []struct {
		name       string
		halfOpen   bool
		whileState resil.BreakerState
	}{
		{"on the trip to open", false, resil.StateOpen},
		{"on the move to half-open, in a trial", true, resil.StateHalfOpen},
	} {
		t.Run(c.name, func(t *testing.T) {
			openFor := time.Hour
			if c.halfOpen {
				openFor = time.Nanosecond
			}
			b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor})
			if c.halfOpen {
				_, _ = resil.New[int]().Breaker(b).Run(context.Background(), obsScript(obsStep{err: errFlaky}))
			}
			obs := &blocker{on: resil.EventStateChange, reached: make(chan struct{}), release: make(chan struct{})}
			observed := resil.New[int]().Breaker(b).Observe(obs)
			done := make(chan struct{})
			go func() {
				defer close(done)
				if c.halfOpen {
					// The open period (1ns) is over by now: this call is the
					// trial, and reports open → half-open.
					_, _ = observed.Run(context.Background(), obsScript())
					return
				}
				_, _ = observed.Run(context.Background(), obsScript(obsStep{err: errFlaky}))
			}()
			<-obs.reached

			// While the observer blocks, the breaker answers other callers.
			other := make(chan error, 1)
			go func() {
				if got := b.State(); got != c.whileState {
					other <- errors.New("State() = " + got.String())
					return
				}
				_, err := resil.New[int]().Breaker(b).Run(context.Background(), obsScript())
				other <- err
			}()
			// A real wait, bounded: a goroutine stuck on a mutex is not
			// durably blocked, so a synctest bubble could not report it.
			select {
			case err := <-other:
				require.ErrorIs(t, err, resil.ErrBreakerOpen)
			case <-time.After(10 * time.Second):
				t.Fatal("the breaker is held by a blocked observer")
			}
			close(obs.release)
			<-done
		})
	}
}

func TestObserverSharedByConcurrentCalls(t *testing.T) {
	var r obsRecorder
	p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)}).
		Breaker(resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1 << 30})).Named("p").Observe(&r)
	const goroutines, calls = 8, 50
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range calls {
				_, err := p.Run(context.Background(), obsScript(obsStep{err: errFlaky}))
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	count := map[resil.EventKind]int{}
	for _, e := range r.take() {
		assert.Equal(t, "p", e.Pipeline)
		count[e.Kind]++
	}
	n := goroutines * calls
	require.Equal(t, map[resil.EventKind]int{resil.EventAttempt: 2 * n, resil.EventRetry: n, resil.EventSuccess: n}, count)
}

func TestObserverCostsNoAllocation(t *testing.T) {
	ctx := context.Background()
	for _, c := range observedPipelines() {
		t.Run(c.name, func(t *testing.T) {
			plain := testing.AllocsPerRun(200, func() { _, _ = c.p.Run(ctx, c.fn) })
			observed := c.p.Named("p").Observe(nopObserver{})
			perCall := testing.AllocsPerRun(200, func() { _, _ = observed.Run(ctx, c.fn) })
			assert.Equal(t, plain, perCall, "a no-op observer adds no allocation")
			switch c.name {
			case "timeout", "all":
			default:
				assert.Zero(t, plain, "no allocation without an observer")
			}
		})
	}
}

func BenchmarkObserved(b *testing.B) {
	ctx := context.Background()
	for _, c := range observedPipelines() {
		p := c.p.Named("p").Observe(nopObserver{})
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = p.Run(ctx, c.fn)
			}
		})
	}
}

func TestObserveRejections(t *testing.T) {
	t.Run("bulkhead full", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var r obsRecorder
			bh := resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1})
			p := resil.New[int]().Bulkhead(bh).Named("p").Observe(&r)
			release := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = p.Run(context.Background(), func(context.Context) (int, error) {
					<-release
					return 1, nil
				})
			}()
			synctest.Wait() // the slot is taken
			_, err := p.Run(context.Background(), obsScript())
			require.ErrorIs(t, err, resil.ErrBulkheadFull)
			close(release)
			<-done
			requireEvents(t, []resil.Event{
				ev(evAttempt, 1, nil, 0, 0),
				ev(evRejected, 0, resil.ErrBulkheadFull, 0, 0),
				ev(evFailure, 0, resil.ErrBulkheadFull, 0, 0),
				ev(evSuccess, 0, nil, 0, 0),
			}, r.take())
		})
	})
	t.Run("rate limited", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var r obsRecorder
			l := resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 1, Burst: 1})
			fb := func(context.Context, error) (int, error) { return 7, nil }
			p := resil.New[int]().RateLimit(l).Fallback(fb).Named("p").Observe(&r)
			for range 2 {
				_, err := p.Run(context.Background(), obsScript())
				require.NoError(t, err)
			}
			requireEvents(t, []resil.Event{
				ev(evAttempt, 1, nil, 0, 0),
				ev(evSuccess, 0, nil, 0, 0),
				ev(evRejected, 0, resil.ErrRateLimited, 0, 0),
				ev(evFallback, 0, resil.ErrRateLimited, 0, 0),
				ev(evSuccess, 0, nil, 0, 0),
			}, r.take())
		})
	})
}

func TestObserveRejectionsCarryTheAttempt(t *testing.T) {
	always := func(error) bool { return true }
	retry2 := resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0), RetryIf: always}
	cases := []struct {
		name  string
		build func(o resil.Observer) resil.Pipeline[int]
		want  []resil.Event
	}{
		{
			name: "breaker inside a retry",
			build: func(o resil.Observer) resil.Pipeline[int] {
				b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Hour})
				return resil.New[int]().Breaker(b).Retry(retry2).Named("p").Observe(o)
			},
			want: []resil.Event{
				ev(evAttempt, 1, nil, 0, 0),
				evChange(resil.StateClosed, resil.StateOpen),
				ev(evRetry, 1, errFlaky, 0, 0),
				ev(evRejected, 2, resil.ErrBreakerOpen, 0, 0),
				ev(evFailure, 0, resil.ErrBreakerOpen, 0, 0),
			},
		},
		{
			name: "chaos inside a retry",
			build: func(o resil.Observer) resil.Pipeline[int] {
				return resil.New[int]().Chaos(resil.ChaosPolicy{FaultRate: 1}).Retry(retry2).Named("p").Observe(o)
			},
			want: []resil.Event{
				ev(evRejected, 1, resil.ErrChaosFault, 0, 0),
				ev(evRetry, 1, resil.ErrChaosFault, 0, 0),
				ev(evRejected, 2, resil.ErrChaosFault, 0, 0),
				ev(evFailure, 0, resil.ErrChaosFault, 0, 0),
			},
		},
		{
			name: "chaos around the call",
			build: func(o resil.Observer) resil.Pipeline[int] {
				return resil.New[int]().Chaos(resil.ChaosPolicy{FaultRate: 1}).Named("p").Observe(o)
			},
			want: []resil.Event{
				ev(evRejected, 0, resil.ErrChaosFault, 0, 0),
				ev(evFailure, 0, resil.ErrChaosFault, 0, 0),
			},
		},
		{
			name: "retry budget denies the retry",
			build: func(o resil.Observer) resil.Pipeline[int] {
				budget := resil.NewRetryBudget(resil.RetryBudgetPolicy{Ratio: 1e-9, MinPerSecond: 1e-9, TTL: time.Second})
				p := retry2
				p.Budget = budget
				return resil.New[int]().Retry(p).Named("p").Observe(o)
			},
			want: []resil.Event{
				ev(evAttempt, 1, nil, 0, 0),
				ev(evRejected, 1, resil.ErrRetryBudgetExhausted, 0, 0),
				ev(evFailure, 0, resil.ErrRetryBudgetExhausted, 0, 0),
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var r obsRecorder
				_, err := c.build(&r).Run(context.Background(), obsScript(obsStep{err: errFlaky}, obsStep{err: errFlaky}))
				require.Error(t, err)
				requireEvents(t, c.want, r.take())
			})
		})
	}
}
