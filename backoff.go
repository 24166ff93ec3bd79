package resil

import (
	"math/bits"
	"math/rand/v2"
	"time"
)

// Backoff returns the delay before a retry; retry counts from 1 (the wait
// after the first failed attempt). A Backoff is a pure function of retry (up
// to its jitter), safe for concurrent use. The constructors below never
// return a negative delay or one above their max, for any retry from 1 to
// math.MaxInt; a retry below 1 is treated as 1. The zero Backoff (nil)
// cannot be called; in RetryPolicy it means ExponentialJitter(100ms, 10s).
type Backoff func(retry int) time.Duration

// Constant returns a Backoff that waits d before every retry. Constant(0)
// retries at once and, in a Retry stage, allocates no timer. It panics when
// d is negative.
func Constant(d time.Duration) Backoff {
	if d < 0 {
		panic("resil: Constant d must be >= 0, got " + d.String())
	}
	return func(int) time.Duration { return d }
}

// Exponential returns a Backoff that waits min(max, initial·2^(retry−1)):
// initial, twice that, four times that, ... up to max. It never overflows.
// It panics when initial <= 0 or max < initial.
func Exponential(initial, max time.Duration) Backoff {
	checkExponential("Exponential", initial, max)
	return func(retry int) time.Duration { return envelope(initial, max, retry) }
}

// ExponentialJitter returns a Backoff that waits a uniformly random delay in
// [0, min(max, initial·2^(retry−1))] ("full jitter"), which spreads the
// retries of many clients that failed together so they do not return in
// step. It never overflows. It panics when initial <= 0 or max < initial.
// It is the default Backoff of RetryPolicy, as ExponentialJitter(100ms, 10s).
func ExponentialJitter(initial, max time.Duration) Backoff {
	checkExponential("ExponentialJitter", initial, max)
	return func(retry int) time.Duration {
		return time.Duration(rand.Uint64N(uint64(envelope(initial, max, retry)) + 1))
	}
}

func checkExponential(name string, initial, max time.Duration) {
	if initial <= 0 {
		panic("resil: " + name + " initial must be > 0, got " + initial.String())
	}
	if max < initial {
		panic("resil: " + name + " max must be >= initial (" + initial.String() + "), got " + max.String())
	}
}

// envelope is min(max, initial·2^(retry−1)) without overflow, for
// 0 < initial <= max.
func envelope(initial, max time.Duration, retry int) time.Duration {
	if retry <= 1 {
		return initial
	}
	shift := uint(retry - 1)
	// initial<<shift stays within max exactly when shift is at most the
	// number of leading zeros max has over initial; beyond that it is max.
	if shift >= 63 || bits.Len64(uint64(initial))+int(shift) > 63 {
		return max
	}
	if d := initial << shift; d < max {
		return d
	}
	return max
}
