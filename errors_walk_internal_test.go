package resil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/resil-go/resil/internal/cyclicerr"
)

// hintErr is a server's hint to wait.
type hintErr time.Duration

func (hintErr) Error() string               { return "wait" }
func (e hintErr) RetryAfter() time.Duration { return time.Duration(e) }

// TestClassificationTerminates: a chain that cycles, or that has more paths
// than any real one, must not hang Retry or Breaker (an endless loop) or
// crash the program (an endless recursion overflows the stack, which no
// recover catches). Before the walks were bounded, each case here hung or
// overflowed the stack, as errors.Is does on the same chains.
func TestClassificationTerminates(t *testing.T) {
	hinted := hintErr(time.Second)
	tests := []struct {
		name      string
		err       error
		transient bool
		mark      mark
		hint      bool
	}{
		{"Unwrap returns itself", &cyclicerr.Self{}, true, unmarked, false},
		{"Unwrap() []error holds itself", &cyclicerr.SelfJoin{}, true, unmarked, false},
		{"errors.Join of itself 64 times", cyclicerr.Doubled(io.EOF, 64), true, unmarked, false},
		{"a mark is still found first", cyclicerr.Doubled(Permanent(io.EOF), 64), false, markPermanent, false},
		{"a hint is still found first", cyclicerr.Doubled(hinted, 64), true, unmarked, true},
		{"a cycle behind a mark", Transient(&cyclicerr.Self{}), true, markTransient, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.transient, IsTransient(tt.err), "IsTransient")
			assert.Equal(t, tt.mark, markOf(tt.err), "markOf")
			want := tt.transient
			if tt.mark != unmarked {
				want = tt.mark == markTransient
			}
			assert.Equal(t, want, markedOrTransient(tt.err), "markedOrTransient")
			_, ok := retryAfter(tt.err)
			assert.Equal(t, tt.hint, ok, "retryAfter")
		})
	}
}

// nilUnwrap's Unwrap returns nil: the chain ends there.
type nilUnwrap struct{}

func (nilUnwrap) Error() string { return "nil unwrap" }
func (nilUnwrap) Unwrap() error { return nil }

// nilsJoin's Unwrap() []error holds nils around err.
type nilsJoin struct{ err error }

func (nilsJoin) Error() string     { return "nils" }
func (e nilsJoin) Unwrap() []error { return []error{nil, e.err, nil} }

// panicMsg's Error panics: classification never asks for the message.
type panicMsg struct{}

func (panicMsg) Error() string { panic("Error called") }

// TestClassificationOddChains: chains that end oddly, and chains as long
// and as wide as real programs could make, are classified by the rules,
// the bound on the walk cutting none of them short.
func TestClassificationOddChains(t *testing.T) {
	deep := Permanent(io.EOF)
	for range 10000 {
		deep = fmt.Errorf("w: %w", deep)
	}
	wide := make([]error, 0, 10001)
	for range 10000 {
		wide = append(wide, fmt.Errorf("item: %w", io.EOF))
	}
	wide = append(wide, Permanent(io.EOF))
	tests := []struct {
		name      string
		err       error
		transient bool
		mark      mark
	}{
		{"Unwrap returns nil", nilUnwrap{}, true, unmarked},
		{"Unwrap() []error with nils", nilsJoin{Permanent(io.EOF)}, false, markPermanent},
		{"Error panics", panicMsg{}, true, unmarked},
		{"marked under panicking Errors", Transient(panicMsg{}), true, markTransient},
		{"mark 10000 wraps deep", deep, false, markPermanent},
		{"mark after 10000 joined errors", errors.Join(wide...), false, markPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.transient, IsTransient(tt.err), "IsTransient")
			assert.Equal(t, tt.mark, markOf(tt.err), "markOf")
			assert.Equal(t, tt.transient, markedOrTransient(tt.err), "markedOrTransient")
		})
	}
}

// TestStopErrorWalksAllocateNothing: what Retry returns when its context
// ended is classified by an outer Breaker or Retry, and by IsTransient,
// without an allocation (its Unwrap returns a slice it holds).
func TestStopErrorWalksAllocateNothing(t *testing.T) {
	err := error(&stopError{errs: [2]error{context.Canceled, io.EOF}})
	allocs := testing.AllocsPerRun(100, func() {
		_ = markOf(err)
		_ = IsTransient(err)
		_ = markedOrTransient(err)
		_, _ = retryAfter(err)
	})
	assert.Zero(t, allocs)
	assert.Equal(t, []error{context.Canceled, io.EOF}, err.(interface{ Unwrap() []error }).Unwrap())
}

// asHint has no RetryAfter method, but answers errors.As for one: a
// wrapper that converts to the hint type on request.
type asHint struct{ d time.Duration }

func (asHint) Error() string { return "as hint" }

func (e asHint) As(target any) bool {
	if p, ok := target.(*interface{ RetryAfter() time.Duration }); ok {
		*p = hintErr(e.d)
		return true
	}
	return false
}

// TestRetryAfterFollowsAsMethods: the hint is the first one errors.As
// finds, As methods included, as API.md says.
func TestRetryAfterFollowsAsMethods(t *testing.T) {
	for _, err := range []error{
		asHint{5 * time.Second},
		fmt.Errorf("call: %w", asHint{5 * time.Second}),
		errors.Join(io.EOF, asHint{5 * time.Second}),
	} {
		var h interface{ RetryAfter() time.Duration }
		assert.True(t, errors.As(err, &h), "errors.As finds it in %v", err)
		d, ok := retryAfter(err)
		assert.True(t, ok, "%v", err)
		assert.Equal(t, 5*time.Second, d, "%v", err)
	}
	d, ok := retryAfter(errors.Join(hintErr(time.Second), asHint{5 * time.Second}))
	assert.Equal(t, time.Second, d, "the first in errors.As's order")
	assert.True(t, ok)
	plain := fmt.Errorf("w: %w", hintErr(time.Second))
	assert.Zero(t, testing.AllocsPerRun(100, func() { _, _ = retryAfter(plain) }), "no As method: no allocation")
}

// TestBreakerCauseCheckTerminates: a Breaker asks whether a failure is the
// cause its caller cancelled with; a failure whose chain cycles, or a
// cause's Is method that matches through a cycle, gets an answer instead
// of hanging the call or overflowing the stack.
func TestBreakerCauseCheckTerminates(t *testing.T) {
	b := NewBreaker(BreakerPolicy{})
	cause := errors.New("caller gave up")
	tests := []struct {
		name string
		err  error
		want outcome
	}{
		{"Unwrap returns itself", &cyclicerr.Self{}, failure},
		{"Unwrap() []error holds itself", &cyclicerr.SelfJoin{}, failure},
		{"errors.Join of itself 64 times", cyclicerr.Doubled(io.EOF, 64), failure},
		{"the cause behind a doubled tree", cyclicerr.Doubled(errors.Join(io.EOF, cause), 64), ignored},
		{"the cause before a cycle", errors.Join(cause, &cyclicerr.SelfJoin{}), ignored},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			cancel(cause)
			assert.Equal(t, tt.want, b.classify(ctx, tt.err))
		})
	}
}
