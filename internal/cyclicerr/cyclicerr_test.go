package cyclicerr_test

import (
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"

	"github.com/resil-go/resil/internal/cyclicerr"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestShapes: the errors are the cycles and trees their docs describe.
func TestShapes(t *testing.T) {
	self := &cyclicerr.Self{}
	assert.Same(t, self, self.Unwrap())
	join := &cyclicerr.SelfJoin{}
	assert.Equal(t, []error{join, join}, join.Unwrap())
	d := cyclicerr.Doubled(io.EOF, 3)
	for range 3 {
		inner := d.(interface{ Unwrap() []error }).Unwrap()
		assert.Len(t, inner, 2)
		assert.Same(t, inner[0], inner[1], "each level shares the one below")
		d = inner[0]
	}
	assert.Equal(t, io.EOF, d)
	assert.True(t, errors.Is(cyclicerr.Doubled(io.EOF, 3), io.EOF))
}
