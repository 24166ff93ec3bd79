package resil

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
	"testing"
	"time"
)

// panicMessage runs f and returns what it panicked with, as a string, and
// whether it panicked.
func panicMessage(f func()) (msg string, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			msg, panicked = fmt.Sprint(r), true
		}
	}()
	f()
	return "", false
}

// refEnvelope is min(max, initial·2^(retry−1)) computed with big integers:
// an independent reference for the un-jittered envelope.
func refEnvelope(initial, max time.Duration, retry int) time.Duration {
	if retry < 1 {
		retry = 1
	}
	shift := uint(min(retry-1, 200))
	d := new(big.Int).Lsh(big.NewInt(int64(initial)), shift)
	if d.Cmp(big.NewInt(int64(max))) > 0 {
		return max
	}
	return time.Duration(d.Int64())
}

var backoffSeeds = []struct {
	initial, max int64
	retry        int
}{
	{0, 0, 0}, {1, 1, 1}, {-1, 10, 1}, {10, 5, 1}, {1, math.MaxInt64, math.MaxInt},
	{1, math.MaxInt64, 63}, {1, math.MaxInt64, 64}, {3, math.MaxInt64, 62},
	{int64(100 * time.Millisecond), int64(10 * time.Second), 40},
	{math.MaxInt64, math.MaxInt64, 2}, {math.MinInt64, 0, -1}, {7, 7, math.MinInt},
	{1 << 40, 1<<62 + 1, 23},
}

// FuzzBackoff checks every backoff constructor over any (initial, max,
// retry): it panics exactly on invalid arguments, naming them; otherwise
// every delay is in [0, max], the un-jittered envelope matches
// min(max, initial·2^(retry−1)) and never decreases with retry, and the
// jittered delay stays under the envelope.
func FuzzBackoff(f *testing.F) {
	for _, s := range backoffSeeds {
		f.Add(s.initial, s.max, s.retry)
	}
	f.Fuzz(func(t *testing.T, initialN, maxN int64, retry int) {
		initial, max := time.Duration(initialN), time.Duration(maxN)
		next := retry
		if next < math.MaxInt {
			next++
		}

		// Constant(initial): any retry, the same delay.
		var c Backoff
		msg, panicked := panicMessage(func() { c = Constant(initial) })
		if panicked != (initial < 0) {
			t.Fatalf("Constant(%v): panicked=%v (%s)", initial, panicked, msg)
		}
		if panicked && !strings.Contains(msg, "d must be >= 0, got "+initial.String()) {
			t.Fatalf("Constant(%v) panic does not name d and its value: %s", initial, msg)
		}
		if !panicked {
			if d := c(retry); d != initial {
				t.Fatalf("Constant(%v)(%d) = %v", initial, retry, d)
			}
		}

		valid := initial > 0 && max >= initial
		for _, name := range []string{"Exponential", "ExponentialJitter"} {
			var b Backoff
			msg, panicked := panicMessage(func() {
				if name == "Exponential" {
					b = Exponential(initial, max)
				} else {
					b = ExponentialJitter(initial, max)
				}
			})
			if panicked == valid {
				t.Fatalf("%s(%v, %v): panicked=%v (%s)", name, initial, max, panicked, msg)
			}
			if panicked {
				field := "initial must be > 0, got " + initial.String()
				if initial > 0 {
					field = "max must be >= initial (" + initial.String() + "), got " + max.String()
				}
				if !strings.Contains(msg, name+" "+field) {
					t.Fatalf("%s(%v, %v) panic does not name the parameter and value: %s", name, initial, max, msg)
				}
				continue
			}
			d := b(retry)
			if d < 0 || d > max {
				t.Fatalf("%s(%v, %v)(%d) = %v, outside [0, max]", name, initial, max, retry, d)
			}
			env := refEnvelope(initial, max, retry)
			if name == "Exponential" {
				if d != env {
					t.Fatalf("Exponential(%v, %v)(%d) = %v, want %v", initial, max, retry, d, env)
				}
				if d2 := b(next); d2 < d {
					t.Fatalf("Exponential(%v, %v): retry %d gives %v, retry %d gives %v: decreasing", initial, max, retry, d, next, d2)
				}
			} else if d > env {
				t.Fatalf("ExponentialJitter(%v, %v)(%d) = %v, above the envelope %v", initial, max, retry, d, env)
			}
		}
	})
}

// errNode is the test's own description of an error tree: the reference
// decision is computed from it, not from the errors built after it.
type errNode struct {
	kind     byte
	children []*errNode
	hint     time.Duration // for opHint
}

const (
	opPlain byte = iota
	opCanceledLeaf
	opBreakerOpen
	opTransientTrue  // a Transient() bool method answering true
	opTransientFalse // ... answering false
	opTimeoutLeaf    // ErrTimeout: matches DeadlineExceeded, decides nothing
	opDeadline
	opLeaves // the kinds below wrap others
	opWrap   // fmt.Errorf("%w")
	opPermanent
	opTransient
	opJoin     // errors.Join(a, b)
	opWrap2    // fmt.Errorf("%w %w", a, b)
	opIsCancel // a wrapper whose Is method matches context.Canceled
	opHint     // a wrapper with RetryAfter()
	opOpsEnd
)

type methodTransient struct{ v bool }

func (e methodTransient) Error() string   { return fmt.Sprint("transient=", e.v) }
func (e methodTransient) Transient() bool { return e.v }

type isCanceled struct{ err error }

func (e *isCanceled) Error() string        { return "canceled-ish: " + e.err.Error() }
func (e *isCanceled) Unwrap() error        { return e.err }
func (e *isCanceled) Is(target error) bool { return target == context.Canceled }

type hinted struct {
	err error
	d   time.Duration
}

func (e *hinted) Error() string             { return "hinted: " + e.err.Error() }
func (e *hinted) Unwrap() error             { return e.err }
func (e *hinted) RetryAfter() time.Duration { return e.d }

// buildErr interprets prog as a small stack program that builds an error
// tree, returning its description (nil for a nil error) and the error.
func buildErr(prog []byte) (*errNode, error) {
	type item struct {
		err  error
		node *errNode
	}
	var stack []item
	pop := func() item { it := stack[len(stack)-1]; stack = stack[:len(stack)-1]; return it }
	for i, op := range prog {
		if i >= 256 {
			break
		}
		k := op % opOpsEnd
		switch {
		case k < opLeaves:
			var e error
			switch k {
			case opPlain:
				e = fmt.Errorf("plain %d", i)
			case opCanceledLeaf:
				e = context.Canceled
			case opBreakerOpen:
				e = ErrBreakerOpen
			case opTransientTrue:
				e = methodTransient{true}
			case opTransientFalse:
				e = methodTransient{false}
			case opTimeoutLeaf:
				e = ErrTimeout
			case opDeadline:
				e = context.DeadlineExceeded
			}
			stack = append(stack, item{e, &errNode{kind: k}})
		case k == opJoin || k == opWrap2:
			if len(stack) < 2 {
				continue
			}
			b, a := pop(), pop()
			var e error
			if k == opJoin {
				e = errors.Join(a.err, b.err)
			} else {
				e = fmt.Errorf("%w and %w", a.err, b.err)
			}
			stack = append(stack, item{e, &errNode{kind: k, children: []*errNode{a.node, b.node}}})
		case k > opLeaves:
			if len(stack) < 1 {
				continue
			}
			a := pop()
			n := &errNode{kind: k, children: []*errNode{a.node}}
			var e error
			switch k {
			case opWrap:
				e = fmt.Errorf("wrapped: %w", a.err)
			case opPermanent:
				e = Permanent(a.err)
			case opTransient:
				e = Transient(a.err)
			case opIsCancel:
				e = &isCanceled{a.err}
			case opHint:
				n.hint = time.Duration(int64(op)<<56>>56) * time.Hour / 7 // negative, zero and positive hints
				e = &hinted{a.err, n.hint}
			}
			stack = append(stack, item{e, n})
		}
	}
	switch len(stack) {
	case 0:
		return nil, nil
	case 1:
		return stack[0].node, stack[0].err
	}
	errs := make([]error, len(stack))
	n := &errNode{kind: opJoin}
	for i, it := range stack {
		errs[i] = it.err
		n.children = append(n.children, it.node)
	}
	return n, errors.Join(errs...)
}

// refRules is IsTransient's rules 2–4 applied along the tree in pre-order,
// as API.md states them; the first node that matches decides.
func refRules(n *errNode) (transient, decided bool) {
	switch n.kind {
	case opPermanent, opTransientFalse, opCanceledLeaf, opBreakerOpen, opIsCancel:
		return false, true
	case opTransient, opTransientTrue:
		return true, true
	}
	for _, c := range n.children {
		if v, ok := refRules(c); ok {
			return v, true
		}
	}
	return false, false
}

// refMark is the first Permanent or Transient mark in pre-order.
func refMark(n *errNode) mark {
	switch n.kind {
	case opPermanent:
		return markPermanent
	case opTransient:
		return markTransient
	}
	for _, c := range n.children {
		if m := refMark(c); m != unmarked {
			return m
		}
	}
	return unmarked
}

// refHint is the first RetryAfter hint in pre-order.
func refHint(n *errNode) (time.Duration, bool) {
	if n.kind == opHint {
		return n.hint, true
	}
	for _, c := range n.children {
		if d, ok := refHint(c); ok {
			return d, true
		}
	}
	return 0, false
}

// FuzzIsTransient builds arbitrarily nested errors (fmt.Errorf %w with one
// or two errors, errors.Join, Permanent and Transient in any order, errors
// with Transient() and Is methods, RetryAfter hints) and compares
// IsTransient, the mark Retry and Breaker go by, and the hint Retry uses,
// with an independent walk of the tree that built them.
func FuzzIsTransient(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{opPlain})
	f.Add([]byte{opPlain, opPermanent, opTransient})
	f.Add([]byte{opPlain, opTransient, opPermanent, opWrap})
	f.Add([]byte{opCanceledLeaf, opTransient, opPlain, opPermanent, opJoin})
	f.Add([]byte{opPlain, opPlain, opPermanent, opWrap2, opTransient})
	f.Add([]byte{opTimeoutLeaf, opWrap, opDeadline, opJoin, opTransientFalse, opWrap2})
	f.Add([]byte{opPlain, opIsCancel, opTransient, opBreakerOpen, opJoin})
	f.Add([]byte{opPlain, opHint + 3*opOpsEnd, opPlain, opHint + 9*opOpsEnd, opJoin, opPermanent})
	f.Add([]byte{opTransientTrue, opPermanent, opPlain, opTransient, opTransientFalse})
	f.Fuzz(func(t *testing.T, prog []byte) {
		node, err := buildErr(prog)
		got := IsTransient(err)
		if node == nil {
			if got {
				t.Fatal("IsTransient(nil) = true")
			}
			return
		}
		want, decided := refRules(node)
		if !decided {
			want = true
		}
		if got != want {
			t.Fatalf("IsTransient(%v) = %v, want %v", err, got, want)
		}
		if m, wm := markOf(err), refMark(node); m != wm {
			t.Fatalf("markOf(%v) = %v, want %v", err, m, wm)
		}
		d, ok := retryAfter(err)
		wd, wok := refHint(node)
		if d != wd || ok != wok {
			t.Fatalf("retryAfter(%v) = %v, %v; want %v, %v", err, d, ok, wd, wok)
		}
		var h interface{ RetryAfter() time.Duration }
		if errors.As(err, &h) != ok || (ok && h.RetryAfter() != d) {
			t.Fatalf("retryAfter(%v) disagrees with errors.As", err)
		}
	})
}

// checkValidate fails t unless Validate() is nil exactly when build does not
// panic, and a panic carries Validate's message.
func checkValidate(t *testing.T, name string, verr error, build func()) {
	t.Helper()
	msg, panicked := panicMessage(build)
	if (verr != nil) != panicked {
		t.Fatalf("%s: Validate() = %v, but the builder panicked=%v (%s)", name, verr, panicked, msg)
	}
	if panicked && msg != verr.Error() {
		t.Fatalf("%s: panic %q differs from Validate() %q", name, msg, verr)
	}
	if verr != nil && !strings.HasPrefix(verr.Error(), "resil: "+name+".") {
		t.Fatalf("%s: Validate() = %q does not name the field", name, verr)
	}
}

// specValid fails t unless Validate() is nil exactly when API.md's rules
// call the policy valid.
func specValid(t *testing.T, name string, verr error, valid bool) {
	t.Helper()
	if (verr == nil) != valid {
		t.Fatalf("%s: Validate() = %v, but the contract says valid=%v", name, verr, valid)
	}
}

// FuzzRetryPolicyValidate: Validate never panics, it is nil exactly when
// the contract's rules call the policy valid, and exactly when Retry
// accepts it.
func FuzzRetryPolicyValidate(f *testing.F) {
	for _, s := range [][2]int64{{0, 0}, {-1, 0}, {0, -1}, {1, 1}, {math.MinInt64, math.MinInt64}, {math.MaxInt64, math.MaxInt64}} {
		f.Add(int(s[0]), s[1])
	}
	f.Fuzz(func(t *testing.T, maxAttempts int, maxElapsed int64) {
		p := RetryPolicy{MaxAttempts: maxAttempts, MaxElapsed: time.Duration(maxElapsed)}
		verr := p.Validate()
		specValid(t, "RetryPolicy", verr, maxAttempts >= 0 && maxElapsed >= 0)
		checkValidate(t, "RetryPolicy", verr, func() { New[int]().Retry(p) })
	})
}

// FuzzBreakerPolicyValidate: Validate never panics, it is nil exactly when
// the contract's rules call the policy valid, and exactly when NewBreaker
// accepts it.
func FuzzBreakerPolicyValidate(f *testing.F) {
	f.Add(0.0, 0, int64(0), int64(0), 0)
	f.Add(1.0, 1, int64(1), int64(1), 1)
	f.Add(math.NaN(), 0, int64(0), int64(0), 0)
	f.Add(math.Inf(1), 0, int64(0), int64(0), 0)
	f.Add(math.Copysign(0, -1), -1, int64(-1), int64(-1), -1)
	f.Add(1.0000000000000002, 0, int64(0), int64(0), 0)
	f.Add(0.5, 0, int64(math.MinInt64), int64(0), 0)
	f.Add(0.5, 0, int64(1), int64(math.MaxInt64), math.MaxInt)
	f.Fuzz(func(t *testing.T, ratio float64, minCalls int, window, openFor int64, halfOpen int) {
		p := BreakerPolicy{
			FailureRatio:  ratio,
			MinCalls:      minCalls,
			Window:        time.Duration(window),
			OpenFor:       time.Duration(openFor),
			HalfOpenCalls: halfOpen,
		}
		verr := p.Validate()
		specValid(t, "BreakerPolicy", verr, ratio >= 0 && ratio <= 1 && // false for NaN
			minCalls >= 0 && window >= 0 && openFor >= 0 && halfOpen >= 0)
		checkValidate(t, "BreakerPolicy", verr, func() { NewBreaker(p) })
	})
}

// FuzzBulkheadPolicyValidate: Validate is nil exactly when the contract's
// rules (MaxConcurrent, MaxWait >= 0) call the policy valid, and exactly
// when NewBulkhead accepts it.
func FuzzBulkheadPolicyValidate(f *testing.F) {
	f.Add(0, int64(0))
	f.Add(-1, int64(0))
	f.Add(1, int64(-1))
	f.Add(math.MaxInt, int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, maxConcurrent int, maxWait int64) {
		p := BulkheadPolicy{MaxConcurrent: maxConcurrent, MaxWait: time.Duration(maxWait)}
		verr := p.Validate()
		specValid(t, "BulkheadPolicy", verr, maxConcurrent >= 0 && maxWait >= 0)
		checkValidate(t, "BulkheadPolicy", verr, func() { NewBulkhead(p) })
	})
}

// FuzzRateLimitPolicyValidate: Validate is nil exactly when the contract's
// rules (Rate > 0 and finite, Burst, MaxWait >= 0) call the policy valid,
// and exactly when NewRateLimiter accepts it.
func FuzzRateLimitPolicyValidate(f *testing.F) {
	f.Add(0.0, 0, int64(0))
	f.Add(1.0, 0, int64(0))
	f.Add(-1.0, 1, int64(1))
	f.Add(math.Inf(1), 1, int64(0))
	f.Add(math.NaN(), 1, int64(0))
	f.Add(math.SmallestNonzeroFloat64, -1, int64(0))
	f.Add(math.MaxFloat64, math.MaxInt, int64(-1))
	f.Fuzz(func(t *testing.T, rate float64, burst int, maxWait int64) {
		p := RateLimitPolicy{Rate: rate, Burst: burst, MaxWait: time.Duration(maxWait)}
		verr := p.Validate()
		specValid(t, "RateLimitPolicy", verr, rate > 0 && !math.IsInf(rate, 1) && burst >= 0 && maxWait >= 0)
		checkValidate(t, "RateLimitPolicy", verr, func() { NewRateLimiter(p) })
	})
}

// FuzzHedgePolicyValidate: Validate never panics; it is nil exactly when
// the contract's rules (Delay > 0, MaxHedges >= 0) call the policy valid,
// and exactly when Hedge accepts it.
func FuzzHedgePolicyValidate(f *testing.F) {
	f.Add(int64(0), 0)
	f.Add(int64(1), 0)
	f.Add(int64(-1), 1)
	f.Add(int64(time.Millisecond), -1)
	f.Add(int64(math.MaxInt64), math.MaxInt)
	f.Fuzz(func(t *testing.T, delay int64, maxHedges int) {
		p := HedgePolicy{Delay: time.Duration(delay), MaxHedges: maxHedges}
		verr := p.Validate()
		specValid(t, "HedgePolicy", verr, delay > 0 && maxHedges >= 0)
		checkValidate(t, "HedgePolicy", verr, func() { New[int]().Hedge(p) })
	})
}

// FuzzRetryBudgetPolicyValidate: Validate never panics; it is nil exactly
// when the contract's rules (Ratio, MinPerSecond, TTL >= 0, not NaN) call
// the policy valid, and exactly when NewRetryBudget accepts it.
func FuzzRetryBudgetPolicyValidate(f *testing.F) {
	f.Add(0.0, 0.0, int64(0))
	f.Add(0.2, 10.0, int64(10*time.Second))
	f.Add(-0.1, 0.0, int64(0))
	f.Add(0.0, -1.0, int64(0))
	f.Add(0.0, 0.0, int64(-1))
	f.Add(math.NaN(), 0.0, int64(0))
	f.Add(0.0, math.NaN(), int64(0))
	f.Add(math.Inf(1), math.Inf(1), int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, ratio, minPerSecond float64, ttl int64) {
		p := RetryBudgetPolicy{Ratio: ratio, MinPerSecond: minPerSecond, TTL: time.Duration(ttl)}
		verr := p.Validate()
		specValid(t, "RetryBudgetPolicy", verr, ratio >= 0 && minPerSecond >= 0 && ttl >= 0) // false for NaN
		checkValidate(t, "RetryBudgetPolicy", verr, func() { NewRetryBudget(p) })
	})
}

// FuzzChaosPolicyValidate: Validate never panics; it is nil exactly when
// the contract's rules (rates in [0, 1], not NaN; Latency >= 0) call the
// policy valid, and exactly when Chaos accepts it.
func FuzzChaosPolicyValidate(f *testing.F) {
	f.Add(0.0, 0.0, int64(0), uint64(0))
	f.Add(1.0, 1.0, int64(time.Second), uint64(1))
	f.Add(1.0000000000000002, 0.0, int64(0), uint64(0))
	f.Add(0.0, -0.1, int64(0), uint64(0))
	f.Add(math.NaN(), 0.0, int64(0), uint64(0))
	f.Add(0.5, math.NaN(), int64(0), uint64(0))
	f.Add(0.5, 0.5, int64(-1), uint64(math.MaxUint64))
	f.Fuzz(func(t *testing.T, faultRate, latencyRate float64, latency int64, seed uint64) {
		p := ChaosPolicy{FaultRate: faultRate, LatencyRate: latencyRate, Latency: time.Duration(latency), Seed: seed}
		verr := p.Validate()
		inUnit := func(r float64) bool { return r >= 0 && r <= 1 }
		specValid(t, "ChaosPolicy", verr, inUnit(faultRate) && inUnit(latencyRate) && latency >= 0)
		checkValidate(t, "ChaosPolicy", verr, func() { New[int]().Chaos(p) })
	})
}
