package resil

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

// transientMethodErr answers Transient() itself.
type transientMethodErr struct{ v bool }

func (e transientMethodErr) Error() string   { return fmt.Sprint("transient method ", e.v) }
func (e transientMethodErr) Transient() bool { return e.v }

// isCanceledErr matches context.Canceled through an Is method.
type isCanceledErr struct{}

func (isCanceledErr) Error() string         { return "is canceled" }
func (isCanceledErr) Is(target error) bool  { return target == context.Canceled }
func (isCanceledErr) Unwrap() error         { return errors.New("inner") }
func (isCanceledErr) RetryAfter() (d int64) { return 0 } // not the hint signature: ignored
func (isCanceledErr) Transientish() bool    { return true }

// TestMarkedOrTransientMatchesTwoWalks: the one-walk decision of a Retry
// with the default RetryIf equals the contract's two steps, marks first
// (markOf), then IsTransient, over chains that mix marks, Transient
// methods, Is methods, fail-fast errors, wrappers and joins in every order.
func TestMarkedOrTransientMatchesTwoWalks(t *testing.T) {
	plain := errors.New("plain")
	leaves := []error{
		plain, context.Canceled, context.DeadlineExceeded, ErrBreakerOpen,
		transientMethodErr{true}, transientMethodErr{false}, isCanceledErr{},
	}
	wraps := []func(error) error{
		func(e error) error { return e },
		Permanent, Transient,
		func(e error) error { return fmt.Errorf("wrapped: %w", e) },
		func(e error) error { return transientMethodErr{true} }, // replaces
		func(e error) error { return errors.Join(plain, e) },
		func(e error) error { return errors.Join(e, Permanent(plain)) },
		func(e error) error { return errors.Join(transientMethodErr{false}, e) },
		func(e error) error { return fmt.Errorf("two: %w, %w", context.Canceled, e) },
		func(e error) error { return &RetryError{Attempts: 1, Err: e} },
		func(e error) error { return &stopError{errs: [2]error{context.Canceled, e}} },
	}
	twoWalks := func(err error) bool {
		switch markOf(err) {
		case markPermanent:
			return false
		case markTransient:
			return true
		}
		return IsTransient(err)
	}
	n := 0
	for _, leaf := range leaves {
		for _, w1 := range wraps {
			for _, w2 := range wraps {
				for _, w3 := range wraps {
					err := w3(w2(w1(leaf)))
					n++
					if got, want := markedOrTransient(err), twoWalks(err); got != want {
						t.Fatalf("markedOrTransient(%q) = %v, markOf then IsTransient says %v", err, got, want)
					}
				}
			}
		}
	}
	assert.Greater(t, n, 1000)
}
