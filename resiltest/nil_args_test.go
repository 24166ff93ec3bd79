package resiltest_test

import (
	"testing"

	"github.com/resil-go/resil/resiltest"
	"github.com/stretchr/testify/assert"
)

// TestNilArgsPanic: Waits and the assertions panic with a message naming
// the nil parameter, not with a nil pointer dereference.
func TestNilArgsPanic(t *testing.T) {
	var (
		tb  = &spyTB{}
		r   = resiltest.Script[int]()
		log = &resiltest.BreakerLog{}
	)
	tests := []struct {
		name string
		call func()
		want string
	}{
		{"Waits r", func() { resiltest.Waits(nil) }, "resiltest: Waits r must be non-nil, got nil"},
		{"AssertAttempts t", func() { resiltest.AssertAttempts(nil, r, 1) }, "resiltest: AssertAttempts t must be non-nil, got nil"},
		{"AssertAttempts r", func() { resiltest.AssertAttempts(tb, nil, 1) }, "resiltest: AssertAttempts r must be non-nil, got nil"},
		{"AssertWaits t", func() { resiltest.AssertWaits(nil, r) }, "resiltest: AssertWaits t must be non-nil, got nil"},
		{"AssertWaits r", func() { resiltest.AssertWaits(tb, nil) }, "resiltest: AssertWaits r must be non-nil, got nil"},
		{"AssertBreakerStates t", func() { resiltest.AssertBreakerStates(nil, log) }, "resiltest: AssertBreakerStates t must be non-nil, got nil"},
		{"AssertBreakerStates l", func() { resiltest.AssertBreakerStates(tb, nil) }, "resiltest: AssertBreakerStates l must be non-nil, got nil"},
		{"AssertNoCallWhileOpen t", func() { resiltest.AssertNoCallWhileOpen(nil, r, log) }, "resiltest: AssertNoCallWhileOpen t must be non-nil, got nil"},
		{"AssertNoCallWhileOpen r", func() { resiltest.AssertNoCallWhileOpen(tb, nil, log) }, "resiltest: AssertNoCallWhileOpen r must be non-nil, got nil"},
		{"AssertNoCallWhileOpen l", func() { resiltest.AssertNoCallWhileOpen(tb, r, nil) }, "resiltest: AssertNoCallWhileOpen l must be non-nil, got nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.PanicsWithValue(t, tt.want, tt.call)
		})
	}
	assert.Zero(t, tb.helpers, "no assertion got as far as t.Helper")
	assert.Empty(t, tb.errs, "no assertion reported")
}
