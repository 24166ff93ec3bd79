// Package resilotel records the events of resil pipelines as OpenTelemetry
// metrics.
//
//	obs, err := resilotel.NewObserver(meterProvider)
//	if err != nil { ... }
//	users := resil.New[*User]().Retry(r).Breaker(b).Named("users").Observe(obs)
//
// The instruments, their units and attributes are listed in the README and
// on NewObserver. A pipeline is told apart by the name given with
// resil.Pipeline.Named, in the resil.pipeline attribute.
package resilotel

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/internal/errchain"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ScopeName is the instrumentation scope of the Meter NewObserver uses.
const ScopeName = "github.com/resil-go/resil/resilotel"

// Attribute keys.
const (
	// KeyPipeline is the pipeline's name (resil.Pipeline.Named), on every
	// measurement.
	KeyPipeline = attribute.Key("resil.pipeline")
	// KeyOutcome is how a call ended, on resil.calls and
	// resil.call.duration: "success", "failure", "timeout", "rejected" or
	// "canceled" (see NewObserver).
	KeyOutcome = attribute.Key("resil.outcome")
	// KeyReason is why a call or a retry was rejected, on
	// resil.rejections: "breaker_open", "bulkhead_full", "rate_limited",
	// "retry_budget_exhausted", "chaos_fault" (an injected fault, with
	// ChaosPolicy.Fault nil), or "other" for a rejection this package does
	// not name (a custom ChaosPolicy.Fault).
	KeyReason = attribute.Key("resil.rejection.reason")
	// KeyState is a breaker state, "closed", "open" or "half-open", on
	// resil.breaker.transitions (the state entered).
	KeyState = attribute.Key("resil.breaker.state")
)

// Outcomes of a call, the values of KeyOutcome.
const (
	OutcomeSuccess  = "success"
	OutcomeFailure  = "failure"
	OutcomeTimeout  = "timeout"
	OutcomeRejected = "rejected"
	OutcomeCanceled = "canceled"
)

// rejections maps a rejection's error to its reason. The first entry whose
// error matches (errors.Is) gives the reason; none: "other". refused says
// whether a call that ends with that error ran nothing (outcome
// "rejected"): a denied retry ends a call whose attempts failed, and an
// injected fault stands for a failure.
var rejections = []struct {
	err     error
	reason  string
	refused bool
}{
	{resil.ErrBreakerOpen, "breaker_open", true},
	{resil.ErrBulkheadFull, "bulkhead_full", true},
	{resil.ErrRateLimited, "rate_limited", true},
	{resil.ErrRetryBudgetExhausted, "retry_budget_exhausted", false},
	{resil.ErrChaosFault, "chaos_fault", false},
}

const reasonOther = "other"

// durationBuckets are the bounds of resil.call.duration, in seconds: those
// the HTTP semantic conventions recommend for request durations.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// NewObserver returns a resil.Observer that records the events of the
// pipelines it observes with these instruments, from a Meter of mp named
// ScopeName (a nil mp means otel.GetMeterProvider()):
//
//	resil.calls               counter    {call}        calls (Runs) that returned, by resil.outcome
//	resil.call.duration       histogram  s             time a call took, by resil.outcome
//	resil.attempts            counter    {attempt}     attempts that called fn
//	resil.retries             counter    {retry}       retries begun (after a failed attempt)
//	resil.timeouts            counter    {timeout}     Timeout stages whose deadline ended what they wrap
//	resil.rejections          counter    {rejection}   calls (or retries) refused by a stage, by resil.rejection.reason
//	resil.fallbacks           counter    {fallback}    calls a Fallback stage served
//	resil.breaker.transitions counter    {transition}  breaker state changes, by the resil.breaker.state entered
//	resil.breaker.state       gauge      {state}       last breaker state reported: 0 closed, 1 open, 2 half-open
//
// Every measurement carries resil.pipeline, the pipeline's name. A call's
// outcome is "success" when it returned no error; "rejected" when its
// error matches resil.ErrBreakerOpen, resil.ErrBulkheadFull or
// resil.ErrRateLimited (a stage refused its last attempt; earlier attempts
// of a Retry outside that stage may have run); "timeout" when its error
// matches context.DeadlineExceeded (which resil.ErrTimeout does);
// "canceled" when it matches context.Canceled; and "failure" otherwise (a
// retry budget's refusal and an injected Chaos fault included). A call
// served by a Fallback ends as what the fallback returned; resil.fallbacks
// counts it.
//
// resil.breaker.state has a point for each pipeline name whose breaker has
// reported a state change to this observer: a pipeline reports the changes
// its own calls made, and those a fleet-shared breaker's fleet made, which
// the breaker's next call reports (see resil.EventStateChange). A breaker
// shared by several pipelines may show a stale state under the names that
// did not report the last change. Reports of concurrent calls may arrive
// out of order; the gauge keeps the latest move's (see resil.Event.Seq).
// Pipelines that share a name share their measurements, the gauge
// included: it shows the state of whichever of their breakers moved last.
//
// The observer is safe for concurrent use and may observe any number of
// pipelines. It records on the calling goroutine, without locks once a
// pipeline name has been seen, and allocates nothing of its own per event.
// The gauge's callback stays registered with mp for mp's lifetime.
func NewObserver(mp metric.MeterProvider) (resil.Observer, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(ScopeName)
	o := &observer{}
	var err, e error
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, cerr := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		err = errors.Join(err, cerr)
		return c
	}
	o.calls = counter("resil.calls", "{call}", "Calls run through a resil pipeline, by outcome.")
	o.attempts = counter("resil.attempts", "{attempt}", "Attempts that called the pipeline's function.")
	o.retries = counter("resil.retries", "{retry}", "Retries begun after a failed attempt.")
	o.timeouts = counter("resil.timeouts", "{timeout}", "Timeout stages whose own deadline ended the stages they wrap.")
	o.rejections = counter("resil.rejections", "{rejection}", "Calls (or retries) a stage refused without running what it wraps, by reason.")
	o.fallbacks = counter("resil.fallbacks", "{fallback}", "Calls a Fallback stage served.")
	o.transitions = counter("resil.breaker.transitions", "{transition}", "Circuit breaker state changes, by the state entered.")
	o.duration, e = m.Float64Histogram("resil.call.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Time a call through a resil pipeline took, by outcome."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	err = errors.Join(err, e)
	o.state, e = m.Int64ObservableGauge("resil.breaker.state",
		metric.WithUnit("{state}"),
		metric.WithDescription("Last circuit breaker state a pipeline reported: 0 closed, 1 open, 2 half-open."))
	err = errors.Join(err, e)
	if err != nil {
		return nil, err
	}
	if _, err := m.RegisterCallback(o.observeStates, o.state); err != nil {
		return nil, err
	}
	return o, nil
}

type observer struct {
	calls, attempts, retries, timeouts, rejections, fallbacks, transitions metric.Int64Counter

	duration metric.Float64Histogram
	state    metric.Int64ObservableGauge

	pipelines sync.Map // name → *pipeline
}

// pipeline holds what a pipeline name's measurements need, built once: the
// attribute sets as ready options, so that recording builds none.
type pipeline struct {
	name     []metric.AddOption
	outcome  map[string][]metric.AddOption
	duration map[string][]metric.RecordOption
	reason   map[string][]metric.AddOption
	entered  [3][]metric.AddOption // by state

	// state is the breaker state last reported, as seq<<2 | state+1 (0
	// until one is), seq the move's Event.Seq: a report that arrives after
	// one of a later move is dropped (see setState).
	state   atomic.Uint64
	observe []metric.ObserveOption
}

// setState keeps to as the pipeline's breaker state, unless a later move
// (a larger seq) has been reported already: concurrent calls report their
// moves after making them, each on its own goroutine, and the reports may
// arrive out of order. An event with no Seq (not made by a breaker) is
// taken as the latest.
func (p *pipeline) setState(seq uint64, to resil.BreakerState) {
	v := seq<<2 | uint64(to+1)
	for {
		old := p.state.Load()
		if seq != 0 && old>>2 > seq {
			return
		}
		if p.state.CompareAndSwap(old, v) {
			return
		}
	}
}

func (o *observer) pipeline(name string) *pipeline {
	if p, ok := o.pipelines.Load(name); ok {
		return p.(*pipeline)
	}
	p, _ := o.pipelines.LoadOrStore(name, newPipeline(name))
	return p.(*pipeline)
}

func newPipeline(name string) *pipeline {
	pa := KeyPipeline.String(name)
	add := func(kv ...attribute.KeyValue) []metric.AddOption {
		return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(append(kv, pa)...))}
	}
	p := &pipeline{
		name:     add(),
		outcome:  map[string][]metric.AddOption{},
		duration: map[string][]metric.RecordOption{},
		reason:   map[string][]metric.AddOption{},
		observe:  []metric.ObserveOption{metric.WithAttributeSet(attribute.NewSet(pa))},
	}
	for _, oc := range []string{OutcomeSuccess, OutcomeFailure, OutcomeTimeout, OutcomeRejected, OutcomeCanceled} {
		set := attribute.NewSet(KeyOutcome.String(oc), pa)
		p.outcome[oc] = []metric.AddOption{metric.WithAttributeSet(set)}
		p.duration[oc] = []metric.RecordOption{metric.WithAttributeSet(set)}
	}
	for _, r := range rejections {
		p.reason[r.reason] = add(KeyReason.String(r.reason))
	}
	p.reason[reasonOther] = add(KeyReason.String(reasonOther))
	for _, s := range []resil.BreakerState{resil.StateClosed, resil.StateOpen, resil.StateHalfOpen} {
		p.entered[s] = add(KeyState.String(s.String()))
	}
	return p
}

// outcome names how a call that returned err ended.
func outcome(err error) string {
	switch {
	case err == nil:
		return OutcomeSuccess
	case refused(err):
		return OutcomeRejected
	case errchain.Is(err, context.DeadlineExceeded):
		return OutcomeTimeout
	case errchain.Is(err, context.Canceled):
		return OutcomeCanceled
	}
	return OutcomeFailure
}

// refused reports whether err is that of a call a stage refused.
func refused(err error) bool {
	for _, r := range rejections {
		if errchain.Is(err, r.err) {
			return r.refused
		}
	}
	return false
}

func rejectionReason(err error) string {
	for _, r := range rejections {
		if errchain.Is(err, r.err) {
			return r.reason
		}
	}
	return reasonOther
}

// Observe records e.
func (o *observer) Observe(ctx context.Context, e resil.Event) {
	p := o.pipeline(e.Pipeline)
	switch e.Kind {
	case resil.EventAttempt:
		o.attempts.Add(ctx, 1, p.name...)
	case resil.EventRetry:
		o.retries.Add(ctx, 1, p.name...)
	case resil.EventSuccess, resil.EventFailure:
		oc := outcome(e.Err)
		o.calls.Add(ctx, 1, p.outcome[oc]...)
		o.duration.Record(ctx, e.Elapsed.Seconds(), p.duration[oc]...)
	case resil.EventTimeout:
		o.timeouts.Add(ctx, 1, p.name...)
	case resil.EventRejected:
		o.rejections.Add(ctx, 1, p.reason[rejectionReason(e.Err)]...)
	case resil.EventFallback:
		o.fallbacks.Add(ctx, 1, p.name...)
	case resil.EventStateChange:
		if e.To >= resil.StateClosed && e.To <= resil.StateHalfOpen {
			o.transitions.Add(ctx, 1, p.entered[e.To]...)
			p.setState(e.Seq, e.To)
		}
	}
}

// observeStates reports the last state of every pipeline that reported one.
func (o *observer) observeStates(_ context.Context, obs metric.Observer) error {
	o.pipelines.Range(func(_, v any) bool {
		p := v.(*pipeline)
		if v := p.state.Load(); v != 0 {
			obs.ObserveInt64(o.state, int64(v&3)-1, p.observe...)
		}
		return true
	})
	return nil
}
