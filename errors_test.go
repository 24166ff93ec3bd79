package resil_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
)

type codeError struct{ code int }

func (e *codeError) Error() string { return fmt.Sprint("code ", e.code) }

func TestIsTransient(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"unknown", io.ErrUnexpectedEOF, true},
		{"Permanent", resil.Permanent(io.EOF), false},
		{"Transient", resil.Transient(io.EOF), true},
		{"Transient(Permanent): outermost wins", resil.Transient(resil.Permanent(io.EOF)), true},
		{"Permanent(Transient): outermost wins", resil.Permanent(resil.Transient(io.EOF)), false},
		{"mark under %w", fmt.Errorf("op: %w", resil.Permanent(io.EOF)), false},
		{"Transient() false", transientErr(false), false},
		{"Transient() true", transientErr(true), true},
		{"mark beats an inner Transient() method", resil.Transient(transientErr(false)), true},
		{"Transient() method beats an inner mark", fmt.Errorf("%w: %w", transientErr(true), resil.Permanent(io.EOF)), true},
		{"context.Canceled", context.Canceled, false},
		{"wrapped context.Canceled", fmt.Errorf("op: %w", context.Canceled), false},
		{"context.DeadlineExceeded", context.DeadlineExceeded, true},
		{"ErrBreakerOpen", resil.ErrBreakerOpen, false},
		{"ErrTimeout", resil.ErrTimeout, true},
		{"ErrHedgeLost: a cancellation", resil.ErrHedgeLost, false},
		{"Join: first decides", errors.Join(resil.Permanent(io.EOF), resil.Transient(io.EOF)), false},
		{"Join: depth first", errors.Join(fmt.Errorf("a: %w", context.Canceled), resil.Transient(io.EOF)), false},
		{"Join: nothing decides", errors.Join(io.EOF, &codeError{1}), true},
		{"RetryError of a permanent", &resil.RetryError{Attempts: 1, Err: resil.Permanent(io.EOF)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, resil.IsTransient(tt.err))
		})
	}
}

func TestMarksKeepTheChain(t *testing.T) {
	base := &codeError{404}
	for name, mark := range map[string]func(error) error{"Permanent": resil.Permanent, "Transient": resil.Transient} {
		t.Run(name, func(t *testing.T) {
			err := mark(fmt.Errorf("get user: %w", base))
			assert.ErrorIs(t, err, base)
			var ce *codeError
			assert.ErrorAs(t, err, &ce)
			assert.Equal(t, 404, ce.code)
			assert.Equal(t, "get user: code 404", err.Error(), "the mark adds nothing to the message")
			assert.NoError(t, mark(nil))
		})
	}
}

func TestSentinelMessages(t *testing.T) {
	assert.Equal(t, "resil: timeout", resil.ErrTimeout.Error())
	assert.Equal(t, "resil: circuit breaker is open", resil.ErrBreakerOpen.Error())
	assert.Equal(t, "resil: another hedged attempt answered first", resil.ErrHedgeLost.Error())
	assert.ErrorIs(t, resil.ErrHedgeLost, context.Canceled)
}
