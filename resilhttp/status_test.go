package resilhttp_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resilhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStatusErrorMethods(t *testing.T) {
	e := &resilhttp.StatusError{StatusCode: 503, Status: "503 Service Unavailable", Wait: 2 * time.Second}
	assert.Equal(t, "resilhttp: 503 Service Unavailable", e.Error())
	assert.Equal(t, 2*time.Second, e.RetryAfter())
	assert.True(t, e.Transient())

	var zero resilhttp.StatusError
	assert.Equal(t, "resilhttp: status 0", zero.Error())
	assert.False(t, zero.Transient())
	assert.Zero(t, zero.RetryAfter())
}

func TestStatusErrorTransientEveryCode(t *testing.T) {
	for code := 0; code < 1000; code++ {
		want := code == 408 || code == 429 || (code >= 500 && code <= 599 && code != 501 && code != 505)
		e := &resilhttp.StatusError{StatusCode: code}
		assert.Equal(t, want, e.Transient(), "%d", code)
		assert.Equal(t, want, resil.IsTransient(e), "%d", code)
	}
}

func TestXIdempotencyKey(t *testing.T) {
	var hits atomic.Int32
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}, nil)
	client := &http.Client{Transport: &resilhttp.Transport{Base: base(t), Pipeline: retry(3)}}
	req, _ := http.NewRequest(http.MethodPost, s.URL, strings.NewReader("x"))
	req.Header.Set("X-Idempotency-Key", "k")
	resp, err := client.Do(req)
	require.NoError(t, err)
	assert.Equal(t, "ok", readBody(t, resp))
	assert.Equal(t, int32(2), hits.Load())
}

func TestGetBodyFailure(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }, nil)
	rec := &recorder{rt: base(t)}
	client := &http.Client{Transport: &resilhttp.Transport{Base: rec, Pipeline: retry(3)}}
	req, _ := http.NewRequest(http.MethodPut, s.URL, strings.NewReader("x"))
	broken := errors.New("body gone")
	req.GetBody = func() (io.ReadCloser, error) { return nil, broken }
	resp, err := client.Do(req)
	require.ErrorIs(t, err, broken)
	assert.Nil(t, resp)
	assert.Equal(t, 1, rec.Calls(), "no attempt without its body")
	assert.Zero(t, rec.unclosed())
}

// TestGetBodyNilBody: a GetBody that returns no body and no error fails
// the attempt at once, naming GetBody, instead of sending a body-less copy
// that net/http refuses (and a Retry would retry).
func TestGetBodyNilBody(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }, nil)
	rec := &recorder{rt: base(t)}
	client := &http.Client{Transport: &resilhttp.Transport{Base: rec, Pipeline: retry(3)}}
	req, _ := http.NewRequest(http.MethodPut, s.URL, strings.NewReader("payload"))
	req.GetBody = func() (io.ReadCloser, error) { return nil, nil }
	resp, err := client.Do(req)
	require.ErrorContains(t, err, "resilhttp: GetBody: returned a nil body")
	assert.Nil(t, resp)
	assert.Equal(t, 1, rec.Calls(), "no attempt without its body")
	assert.Zero(t, rec.unclosed())
}

// TestGetBodyNoBodyWithLength: a GetBody that returns http.NoBody for a
// request with a length to send fails the attempt at once, as a nil body
// does: net/http would send it as an empty body with Content-Length 0, not
// the bytes the first attempt sent.
func TestGetBodyNoBodyWithLength(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []string
	)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, string(b))
		mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
	}, nil)
	client := &http.Client{Transport: &resilhttp.Transport{Base: base(t), Pipeline: retry(3)}}
	req, _ := http.NewRequest(http.MethodPut, s.URL, strings.NewReader("payload"))
	req.GetBody = func() (io.ReadCloser, error) { return http.NoBody, nil }
	resp, err := client.Do(req)
	require.ErrorContains(t, err, "resilhttp: GetBody: returned")
	assert.Nil(t, resp)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"payload"}, seen, "no attempt without its body")
}

// TestGetBodyNilBodyNoLength: with a ContentLength of 0, a GetBody that
// returns no body is a request without one, and later attempts are sent.
func TestGetBodyNilBodyNoLength(t *testing.T) {
	var hits atomic.Int32
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}, nil)
	rec := &recorder{rt: base(t)}
	client := &http.Client{Transport: &resilhttp.Transport{Base: rec, Pipeline: retry(3)}}
	req, _ := http.NewRequest(http.MethodPut, s.URL, io.NopCloser(strings.NewReader("")))
	req.ContentLength = 0
	req.GetBody = func() (io.ReadCloser, error) { return nil, nil }
	resp, err := client.Do(req)
	require.NoError(t, err)
	readBody(t, resp)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, 2, rec.Calls())
}

// TestObserverSeesStatusErrors: the stages' observer sees each failed
// attempt's *StatusError; the caller sees the final response.
func TestObserverSeesStatusErrors(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTooManyRequests) }, nil)
	var retries atomic.Int32
	p := retry(2).Observe(observerFunc(func(_ context.Context, e resil.Event) {
		var se *resilhttp.StatusError
		if e.Kind == resil.EventRetry && errors.As(e.Err, &se) && se.StatusCode == 429 {
			retries.Add(1)
		}
	}))
	client := &http.Client{Transport: &resilhttp.Transport{Base: base(t), Pipeline: p}}
	resp, err := client.Get(s.URL)
	require.NoError(t, err)
	readBody(t, resp)
	assert.Equal(t, 429, resp.StatusCode)
	assert.Equal(t, int32(1), retries.Load())
}

type observerFunc func(context.Context, resil.Event)

func (f observerFunc) Observe(ctx context.Context, e resil.Event) { f(ctx, e) }
