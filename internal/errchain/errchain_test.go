package errchain_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"

	"github.com/resil-go/resil/internal/cyclicerr"
	"github.com/resil-go/resil/internal/errchain"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// isEOF matches io.EOF through its Is method, not by value.
type isEOF struct{}

func (isEOF) Error() string        { return "is EOF" }
func (isEOF) Is(target error) bool { return target == io.EOF }

// asPath converts to a *fs.PathError through its As method.
type asPath struct{}

func (asPath) Error() string { return "as path" }
func (asPath) As(target any) bool {
	if p, ok := target.(**fs.PathError); ok {
		*p = &fs.PathError{Op: "as"}
		return true
	}
	return false
}

// uncomparable has a slice field: == on two of them panics.
type uncomparable struct{ s []int }

func (uncomparable) Error() string { return "uncomparable" }

// TestAgreesWithErrors: on chains errors.Is and errors.AsType handle, Is
// and As answer as they do.
func TestAgreesWithErrors(t *testing.T) {
	path := &fs.PathError{Op: "open", Err: io.EOF}
	chains := []error{
		nil,
		io.EOF,
		fmt.Errorf("w: %w", io.EOF),
		fmt.Errorf("w: %w", path),
		errors.Join(io.ErrUnexpectedEOF, fmt.Errorf("w: %w", path)),
		errors.Join(nil, io.ErrUnexpectedEOF),
		isEOF{},
		fmt.Errorf("w: %w", asPath{}),
		uncomparable{s: []int{1}},
		fmt.Errorf("a: %w, b: %w", uncomparable{s: []int{1}}, context.Canceled),
		os.ErrNotExist,
		cyclicerr.Doubled(io.EOF, 10),
	}
	targets := []error{nil, io.EOF, io.ErrUnexpectedEOF, context.Canceled, fs.ErrNotExist, path, uncomparable{s: []int{2}}}
	for i, err := range chains {
		for j, target := range targets {
			assert.Equal(t, errors.Is(err, target), errchain.Is(err, target), "chain %d, target %d", i, j)
		}
		want, wantOK := errors.AsType[*fs.PathError](err)
		got, gotOK := errchain.As[*fs.PathError](err)
		assert.Equal(t, wantOK, gotOK, "chain %d", i)
		assert.Equal(t, want, got, "chain %d", i)
		wantU, wantOK := errors.AsType[uncomparable](err)
		gotU, gotOK := errchain.As[uncomparable](err)
		assert.Equal(t, wantOK, gotOK, "chain %d", i)
		assert.Equal(t, wantU, gotU, "chain %d", i)
	}
}

// TestTerminates: chains on which errors.Is and errors.As never return (or
// overflow the stack) get an answer, and one found before the walk is cut
// short is still found.
func TestTerminates(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		isEOF  bool
		asPath bool
	}{
		{"Unwrap returns itself", &cyclicerr.Self{}, false, false},
		{"Unwrap() []error holds itself", &cyclicerr.SelfJoin{}, false, false},
		{"errors.Join of itself 64 times", cyclicerr.Doubled(io.ErrUnexpectedEOF, 64), false, false},
		{"found before the cycle", errors.Join(io.EOF, &fs.PathError{}, &cyclicerr.SelfJoin{}), true, true},
		{"found in a doubled tree", cyclicerr.Doubled(errors.Join(io.EOF, &fs.PathError{}), 64), true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.isEOF, errchain.Is(tt.err, io.EOF))
			_, ok := errchain.As[*fs.PathError](tt.err)
			assert.Equal(t, tt.asPath, ok)
		})
	}
}
