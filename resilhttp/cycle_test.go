package resilhttp_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/resil-go/resil/internal/cyclicerr"
	"github.com/resil-go/resil/resilhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// baseFunc is a RoundTripper made of a function.
type baseFunc func(*http.Request) (*http.Response, error)

func (f baseFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestRoundTripTerminatesOnCyclicBaseError: Base's error is looked into
// (for a status, a permanent TLS or address failure, a timeout, the
// request context's end); an error whose chain cycles, on which errors.Is
// and errors.As never return or overflow the stack, is returned all the
// same, after the attempts the pipeline allows.
func TestRoundTripTerminatesOnCyclicBaseError(t *testing.T) {
	for _, tt := range []struct {
		name   string
		err    error
		method string
		cancel bool // the request's context ends while Base runs
	}{
		{"GET, Unwrap returns itself", &cyclicerr.Self{}, http.MethodGet, false},
		{"GET, Unwrap() []error holds itself", &cyclicerr.SelfJoin{}, http.MethodGet, false},
		{"POST, Unwrap returns itself", &cyclicerr.Self{}, http.MethodPost, false},
		{"POST, Unwrap() []error holds itself", &cyclicerr.SelfJoin{}, http.MethodPost, false},
		{"GET, context ends, Unwrap returns itself", &cyclicerr.Self{}, http.MethodGet, true},
		{"GET, context ends, Unwrap() []error holds itself", &cyclicerr.SelfJoin{}, http.MethodGet, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			calls := 0
			base := baseFunc(func(*http.Request) (*http.Response, error) {
				calls++
				if tt.cancel {
					cancel(errors.New("caller gave up"))
				}
				return nil, tt.err
			})
			client := &http.Client{Transport: &resilhttp.Transport{Base: base, Pipeline: retry(3)}}
			req, err := http.NewRequestWithContext(ctx, tt.method, "http://example.invalid/", strings.NewReader("body"))
			require.NoError(t, err)
			resp, err := client.Do(req)
			require.Error(t, err)
			assert.Nil(t, resp)
			want := 3
			if tt.method == http.MethodPost || tt.cancel {
				want = 1 // not sent again, or no one waits any more
			}
			assert.Equal(t, want, calls)
		})
	}
}
