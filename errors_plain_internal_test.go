package resil

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

type plainStruct struct{ code int }

func (e plainStruct) Error() string { return fmt.Sprint("code ", e.code) }

type withTransient struct{ t bool }

func (e withTransient) Error() string   { return "t" }
func (e withTransient) Transient() bool { return e.t }

type withIs struct{}

func (withIs) Error() string        { return "is" }
func (withIs) Is(target error) bool { return target == context.Canceled }

type withAs struct{}

func (withAs) Error() string { return "as" }
func (withAs) As(any) bool   { return false }

type withHint struct{}

func (withHint) Error() string             { return "hint" }
func (withHint) RetryAfter() time.Duration { return time.Second }

type withJoin struct{}

func (withJoin) Error() string   { return "join" }
func (withJoin) Unwrap() []error { return nil }

// notePlain takes only types with none of the methods the walks look for,
// and a plain type's errors classify as the walks classify them.
func TestPlainTypes(t *testing.T) {
	tests := []struct {
		err   error
		plain bool
	}{
		{errors.New("x"), true},
		{context.Canceled, true},
		{ErrBreakerOpen, false}, // a *sentinel: it has Is
		{plainStruct{1}, true},
		{&plainStruct{1}, true},
		{withTransient{true}, false},
		{withIs{}, false},
		{withAs{}, false},
		{withHint{}, false},
		{withJoin{}, false},
		{fmt.Errorf("w: %w", errors.New("x")), false},
		{Permanent(errors.New("x")), false},
		{Transient(errors.New("x")), false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%T %v", tt.err, tt.err), func(t *testing.T) {
			clearPlain()
			defer clearPlain()
			notePlain(tt.err)
			assert.Equal(t, tt.plain, isPlain(tt.err))
			if !tt.plain {
				return
			}
			_, hint := retryAfter(tt.err)
			assert.False(t, hint)
			for _, defaultIf := range []bool{true, false} {
				p := &retryPolicy{defaultIf: defaultIf, retryIf: IsTransient}
				if !defaultIf {
					p.retryIf = func(err error) bool { return err == tt.err }
				}
				assert.Equal(t, p.retryable(tt.err, false), p.retryable(tt.err, true), "defaultIf %v", defaultIf)
			}
		})
	}
	// context.Canceled is an *errors.errorString, as errors.New's are: the
	// type is plain, and the value still decides.
	clearPlain()
	defer clearPlain()
	notePlain(errors.New("x"))
	assert.True(t, isPlain(context.Canceled))
	p := &retryPolicy{defaultIf: true, retryIf: IsTransient}
	assert.False(t, p.retryable(context.Canceled, true))
	assert.True(t, p.retryable(errors.New("y"), true))
}

// The slots are taken in turn: more plain types than slots evict the
// oldest, which is found plain again when noted again.
func TestPlainTypesEvict(t *testing.T) {
	clearPlain()
	defer clearPlain()
	type p1 struct{ plainStruct }
	type p2 struct{ plainStruct }
	type p3 struct{ plainStruct }
	type p4 struct{ plainStruct }
	errs := []error{plainStruct{}, p1{}, p2{}, p3{}, p4{}}
	for _, err := range errs {
		notePlain(err)
	}
	assert.False(t, isPlain(errs[0]), "evicted")
	for _, err := range errs[1:] {
		assert.True(t, isPlain(err))
	}
	notePlain(errs[0])
	assert.True(t, isPlain(errs[0]))
}

func clearPlain() {
	for i := range plainTypes {
		plainTypes[i].Store(nil)
	}
}
