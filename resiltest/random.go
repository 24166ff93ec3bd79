package resiltest

import (
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"time"
)

// ErrInjected is the error a Random fake's failing calls return when
// Faults.Err is nil. resil.IsTransient reports true for it, so Retry
// retries it and Breaker counts it as a failure.
var ErrInjected = errors.New("resiltest: injected fault")

// Faults describes the random outcomes of a Random fake: how often a call
// fails or hangs, and how long calls take. The zero value is a fake that
// always succeeds at once. The outcome of the n-th call depends only on
// Seed and n, so a soak test that fails can be replayed exactly, however
// its calls were scheduled.
type Faults struct {
	// Seed picks the sequence: the same Seed gives every call number the
	// same outcome and latency. 0 is a seed like any other.
	Seed uint64
	// FailRate is the share of calls, in [0, 1], that return Err.
	FailRate float64
	// Err is what failing calls return. nil means ErrInjected.
	Err error
	// HangRate is the share of calls, in [0, 1], that block until their
	// context ends (as Hang does). FailRate+HangRate must not exceed 1.
	HangRate float64
	// Latency is how long every call takes at least. 0 means none;
	// negative is invalid.
	Latency time.Duration
	// Jitter adds a uniformly random latency in [0, Jitter] to every call.
	// 0 means none; negative is invalid.
	Jitter time.Duration
	// SlowRate is the share of calls, in [0, 1], that take Slow more: the
	// tail of the latency distribution.
	SlowRate float64
	// Slow is the extra latency of the slow calls. Negative is invalid.
	Slow time.Duration
}

// Validate returns nil when f is valid, or an error naming the first
// invalid field and its value, with the message Random panics with.
func (f Faults) Validate() error {
	rate := func(name string, r float64) error {
		if math.IsNaN(r) || r < 0 || r > 1 {
			return errors.New("resiltest: Faults." + name + " must be in [0, 1], got " + strconv.FormatFloat(r, 'g', -1, 64))
		}
		return nil
	}
	dur := func(name string, d time.Duration) error {
		if d < 0 {
			return errors.New("resiltest: Faults." + name + " must be >= 0, got " + d.String())
		}
		return nil
	}
	sum := func() error {
		// Rates that add up to 1 in decimal may add up to a hair more in
		// float64: that is still 1.
		if s := f.FailRate + f.HangRate; s > 1+1e-12 {
			return errors.New("resiltest: Faults.FailRate+HangRate must be <= 1, got " + strconv.FormatFloat(s, 'g', -1, 64))
		}
		return nil
	}
	for _, err := range []error{ // in the order of the fields, the sum after its last
		rate("FailRate", f.FailRate),
		rate("HangRate", f.HangRate),
		sum(),
		dur("Latency", f.Latency),
		dur("Jitter", f.Jitter),
		rate("SlowRate", f.SlowRate),
		dur("Slow", f.Slow),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// Random returns a Fake whose calls fail, hang and take time at random as
// f describes, reproducibly from f.Seed, and return value when they
// succeed. It is meant for soak tests: run many calls through a pipeline
// and check what comes out. It panics when f is invalid (see
// Faults.Validate).
func Random[T any](f Faults, value T) *Fake[T] {
	if err := f.Validate(); err != nil {
		panic(err.Error())
	}
	return &Fake[T]{gen: func(n int) Step { return f.step(n, value) }}
}

// step draws the outcome of call n: always the same number of draws from a
// generator seeded with (Seed, n), so that call n's outcome depends on
// nothing else.
func (f Faults) step(n int, value any) Step {
	r := rand.New(rand.NewPCG(f.Seed, uint64(n)))
	u, jitter, slow := r.Float64(), r.Float64(), r.Float64()
	d := addSat(f.Latency, part(jitter, f.Jitter))
	if slow < f.SlowRate {
		d = addSat(d, f.Slow)
	}
	var s Step
	switch {
	case u < f.HangRate:
		s = Hang()
	case u < f.HangRate+f.FailRate:
		err := f.Err
		if err == nil {
			err = ErrInjected
		}
		s = Step{kind: stepFail, err: err}
	default:
		s = Step{kind: stepReturn, value: value}
	}
	return s.After(d)
}

// addSat returns a+b for a, b >= 0, saturating at the largest Duration
// instead of overflowing.
func addSat(a, b time.Duration) time.Duration {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// part returns a duration in [0, d], d itself included, uniformly from u
// in [0, 1) and d >= 0: u·(d+1) rounded down, never above d (float64
// rounding of a large d could otherwise overflow the conversion).
func part(u float64, d time.Duration) time.Duration {
	n := float64(d)
	if d < math.MaxInt64 {
		n = float64(d + 1)
	}
	p := time.Duration(u * n)
	if p < 0 || p > d {
		return d
	}
	return p
}
