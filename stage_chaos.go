package resil

import (
	"context"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// ChaosPolicy configures a Chaos stage. The zero value injects nothing: with
// zero rates, Chaos adds no stage at all, so it costs nothing per call.
type ChaosPolicy struct {
	// FaultRate is the share of calls that fail with Fault without running
	// the wrapped stages. Valid: [0, 1], not NaN. 0 means none.
	FaultRate float64
	// Fault is the error a faulted call returns. nil means ErrChaosFault,
	// which is transient.
	Fault error
	// LatencyRate is the share of calls delayed by Latency before the
	// wrapped stages run (or before the fault is returned). Valid: [0, 1],
	// not NaN. 0 means none.
	LatencyRate float64
	// Latency is how long a delayed call waits. 0 means no delay.
	// Negative is invalid.
	Latency time.Duration
	// Seed, when not 0, makes the sequence of draws reproducible: the same
	// seed and the same order of calls give the same faults and delays.
	// 0 means a random sequence.
	Seed uint64
}

// Validate returns nil when p is a valid policy, or an error naming the
// first invalid field and its value, with the message Chaos would panic
// with.
func (p ChaosPolicy) Validate() error {
	switch {
	case math.IsNaN(p.FaultRate) || p.FaultRate < 0 || p.FaultRate > 1:
		return configError("ChaosPolicy.FaultRate must be in [0, 1], got " + strconv.FormatFloat(p.FaultRate, 'g', -1, 64))
	case math.IsNaN(p.LatencyRate) || p.LatencyRate < 0 || p.LatencyRate > 1:
		return configError("ChaosPolicy.LatencyRate must be in [0, 1], got " + strconv.FormatFloat(p.LatencyRate, 'g', -1, 64))
	case p.Latency < 0:
		return configError("ChaosPolicy.Latency must be >= 0, got " + p.Latency.String())
	}
	return nil
}

// ErrChaosFault is the error a Chaos stage injects when ChaosPolicy.Fault
// is nil. It is transient: Retry retries it and Breaker counts it as a
// failure, as they would a real passing fault.
var ErrChaosFault error = &chaosFault{}

type chaosFault struct{}

func (*chaosFault) Error() string   { return "resil: injected fault" }
func (*chaosFault) Transient() bool { return true }

type chaosStage[T any] struct {
	c     *chaos
	inner stageFunc[T] // the stages it wraps; nil: fn itself
	_     linePad
}

// chaos is a ChaosPolicy ready to draw from.
type chaos struct {
	faultRate   float64 // 0 when no fault is injected
	latencyRate float64 // 0 when no latency is injected (also when Latency is 0)
	fault       error
	latency     time.Duration

	mu  sync.Mutex // guards rng; held only for the draws
	rng *rand.Rand // nil without a Seed: the global generator is used
}

// Chaos returns a pipeline that injects faults and latency into the stages
// added before it, to try out in staging how a pipeline copes (the idea of
// Polly's Simmy). For each call it draws, independently, whether the call is
// delayed (with probability LatencyRate) and whether it fails (with
// probability FaultRate). A delayed call waits Latency first; a ctx that
// ends during the wait ends the call with ctx.Err(), and a wait that ends
// at ctx's deadline, before ctx.Err() shows it, with
// context.DeadlineExceeded: the wrapped stages do not run, nor is a fault
// returned. A faulted call then returns Fault without running the wrapped
// stages, and reports an EventRejected with Err set to it. Other calls run
// the wrapped stages unchanged.
//
// Put Chaos first (innermost), so that every other stage sees the injected
// faults and delays as it would a misbehaving dependency.
//
// A rate of 0 costs no random draw, and a rate of 1 none either; with both
// rates 0 (or no Latency and FaultRate 0) Chaos returns p itself, so a
// Chaos stage configured off costs nothing. A delay uses one timer. With a Seed the draws come from one PCG generator behind a mutex,
// so the sequence is reproducible for calls made one after another and
// safe, though not ordered, for concurrent calls; without one they come
// from math/rand/v2's global generator, which takes no lock. It panics when
// policy is invalid (see ChaosPolicy.Validate).
func (p Pipeline[T]) Chaos(policy ChaosPolicy) Pipeline[T] {
	mustValid(policy.Validate())
	c := &chaos{
		faultRate:   policy.FaultRate,
		latencyRate: policy.LatencyRate,
		fault:       policy.Fault,
		latency:     policy.Latency,
	}
	if c.fault == nil {
		c.fault = ErrChaosFault
	}
	if c.latency == 0 {
		c.latencyRate = 0
	}
	if c.faultRate == 0 && c.latencyRate == 0 {
		// Nothing to inject: no stage at all, so a Chaos stage left in
		// production with its rates at 0 costs nothing per call.
		return p
	}
	if policy.Seed != 0 {
		// The second PCG word is derived from the seed so that one number
		// is all a user needs to write down.
		c.rng = rand.New(rand.NewPCG(policy.Seed, policy.Seed^0x9e3779b97f4a7c15))
	}
	return p.with(chaosStage[T]{c: c, inner: p.outer}.compile())
}

// draw decides whether a call is delayed and whether it fails. A rate of 0
// or 1 needs no draw; the two draws are independent.
func (c *chaos) draw() (delay, fault bool) {
	needL := c.latencyRate > 0 && c.latencyRate < 1
	needF := c.faultRate > 0 && c.faultRate < 1
	delay, fault = c.latencyRate == 1, c.faultRate == 1
	if !needL && !needF {
		return delay, fault
	}
	if c.rng == nil {
		if needL {
			delay = rand.Float64() < c.latencyRate
		}
		if needF {
			fault = rand.Float64() < c.faultRate
		}
		return delay, fault
	}
	c.mu.Lock()
	if needL {
		delay = c.rng.Float64() < c.latencyRate
	}
	if needF {
		fault = c.rng.Float64() < c.faultRate
	}
	c.mu.Unlock()
	return delay, fault
}

//go:noinline // see stageFunc
func (s chaosStage[T]) compile() stageFunc[T] {
	return func(ctx context.Context, n next[T]) (T, error) {
		c := s.c
		var zero T
		delay, fault := c.draw()
		if delay {
			t := time.NewTimer(c.latency)
			select {
			case <-ctx.Done():
				t.Stop()
				return zero, ctx.Err()
			case <-t.C:
				// A wait that ended at the deadline ended with ctx, whose
				// timer may not have fired yet: the wrapped stages could
				// not run.
				if ended(ctx) {
					if err := ctx.Err(); err != nil {
						return zero, err
					}
					return zero, context.DeadlineExceeded
				}
			}
		}
		if fault {
			n.emit(ctx, Event{Kind: EventRejected, Attempt: n.attempt, Err: c.fault})
			return zero, c.fault
		}
		return n.run(ctx, s.inner)
	}
}
