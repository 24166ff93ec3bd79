package resiltest_test

import (
	"net/http"
	"net/http/httptest"
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

// TestNilRecorderPanics: a nil *Fake or *FlakyHandler, also one passed as
// a Recorder (a non-nil interface holding nil), panics with a message
// naming the method and the type, not with a nil pointer dereference.
func TestNilRecorderPanics(t *testing.T) {
	var (
		f  *resiltest.Fake[int]
		h  *resiltest.FlakyHandler
		tb = &spyTB{}
	)
	tests := []struct {
		name string
		call func()
		want string
	}{
		{"Fake.Call", func() { _, _ = f.Call(t.Context()) }, "resiltest: Call called on a nil *Fake[int]"},
		{"Fake.Calls", func() { f.Calls() }, "resiltest: Calls called on a nil *Fake[int]"},
		{"Fake.Count", func() { f.Count() }, "resiltest: Count called on a nil *Fake[int]"},
		{"Fake.MaxConcurrent", func() { f.MaxConcurrent() }, "resiltest: MaxConcurrent called on a nil *Fake[int]"},
		{"Fake as Recorder", func() { resiltest.AssertAttempts(tb, f, 1) }, "resiltest: Calls called on a nil *Fake[int]"},
		{"FlakyHandler.ServeHTTP", func() { h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil)) }, "resiltest: ServeHTTP called on a nil *FlakyHandler"},
		{"FlakyHandler.Calls", func() { h.Calls() }, "resiltest: Calls called on a nil *FlakyHandler"},
		{"FlakyHandler.Count", func() { h.Count() }, "resiltest: Count called on a nil *FlakyHandler"},
		{"FlakyHandler as Recorder", func() { resiltest.Waits(h) }, "resiltest: Calls called on a nil *FlakyHandler"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.PanicsWithValue(t, tt.want, tt.call)
		})
	}
}

// TestZeroFake: the zero Fake is Script[T](), as its doc says: every call
// returns T's zero value and a nil error, and is recorded.
func TestZeroFake(t *testing.T) {
	var f resiltest.Fake[string]
	for range 2 {
		v, err := f.Call(t.Context())
		assert.NoError(t, err)
		assert.Empty(t, v)
	}
	assert.Equal(t, 2, f.Count())
	assert.Len(t, f.Calls(), 2)
}

// TestUnmadeServerPanics: a nil or zero Server (one not made by NewServer)
// panics with a message naming the method and NewServer, not with a nil
// pointer dereference, at the call, not later at a request.
func TestUnmadeServerPanics(t *testing.T) {
	var (
		nilServer  *resiltest.Server
		zeroServer = &resiltest.Server{}
	)
	tests := []struct {
		name string
		call func()
		want string
	}{
		{"nil Client", func() { nilServer.Client() }, "resiltest: Server.Client called on a nil *Server: make it with NewServer"},
		{"nil Transport", func() { nilServer.Transport() }, "resiltest: Server.Transport called on a nil *Server: make it with NewServer"},
		{"nil Close", func() { nilServer.Close() }, "resiltest: Server.Close called on a nil *Server: make it with NewServer"},
		{"zero Client", func() { zeroServer.Client() }, "resiltest: Server.Client called on a zero Server: make it with NewServer"},
		{"zero Transport", func() { zeroServer.Transport() }, "resiltest: Server.Transport called on a zero Server: make it with NewServer"},
		{"zero Close", func() { zeroServer.Close() }, "resiltest: Server.Close called on a zero Server: make it with NewServer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.PanicsWithValue(t, tt.want, tt.call)
		})
	}
}
