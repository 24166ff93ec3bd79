package resilhttp_test

import (
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resilhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// bubble runs f in a synctest bubble with a server for h on an in-memory
// network, and a client transport dialling it. Everything is torn down
// inside the bubble.
func bubble(t *testing.T, h http.HandlerFunc, f func(t *testing.T, s *server, base *http.Transport)) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		l := newMemListener()
		s := newServer(t, h, l)
		tr := &http.Transport{DialContext: l.DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		f(t, s, tr)
	})
}

func TestRetryAfter(t *testing.T) {
	date := func(d time.Duration) func() string {
		return func() string { return time.Now().Add(d).UTC().Format(http.TimeFormat) }
	}
	fixed := func(s string) func() string { return func() string { return s } }
	const backoff = 100 * time.Millisecond
	tests := []struct {
		name     string
		value    func() string
		maxAfter time.Duration
		wait     time.Duration
	}{
		{"seconds", fixed("2"), 0, 2 * time.Second},
		{"zero: the backoff applies", fixed("0"), 0, backoff},
		{"IMF-fixdate", date(3 * time.Second), 0, 3 * time.Second},
		{"RFC 850 date", func() string {
			return time.Now().Add(4 * time.Second).UTC().Format("Monday, 02-Jan-06 15:04:05 GMT")
		}, 0, 4 * time.Second},
		{"asctime date", func() string { return time.Now().Add(5 * time.Second).UTC().Format(time.ANSIC) }, 0, 5 * time.Second},
		{"past date: the backoff applies", date(-time.Hour), 0, backoff},
		{"huge seconds capped", fixed("99999999999999999999999"), 7 * time.Second, 7 * time.Second},
		{"date far ahead capped", fixed("Fri, 31 Dec 9999 23:59:59 GMT"), 7 * time.Second, 7 * time.Second},
		{"default cap 30s", fixed("86400"), 0, 30 * time.Second},
		{"negative cap means 30s", fixed("86400"), -time.Second, 30 * time.Second},
		{"negative: ignored", fixed("-5"), 0, backoff},
		{"garbage: ignored", fixed("soon"), 0, backoff},
		{"fraction: ignored", fixed("1.5"), 0, backoff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hits atomic.Int32
			h := func(w http.ResponseWriter, r *http.Request) {
				if hits.Add(1) == 1 {
					w.Header().Set("Retry-After", tt.value())
					w.WriteHeader(http.StatusTooManyRequests)
					return
				}
				_, _ = io.WriteString(w, "ok")
			}
			bubble(t, h, func(t *testing.T, s *server, base *http.Transport) {
				var waited time.Duration
				p := resil.New[*http.Response]().Retry(resil.RetryPolicy{
					MaxAttempts: 2, Backoff: resil.Constant(backoff),
					OnRetry: func(e resil.RetryEvent) { waited = e.Delay },
				})
				client := &http.Client{Transport: &resilhttp.Transport{Base: base, Pipeline: p, MaxRetryAfter: tt.maxAfter}}
				start := time.Now()
				resp, err := client.Get(s.URL)
				require.NoError(t, err)
				assert.Equal(t, "ok", readBody(t, resp))
				assert.Equal(t, tt.wait, time.Since(start), "the wait honoured")
				assert.Equal(t, tt.wait, waited)
				assert.Equal(t, int32(2), hits.Load())
			})
		})
	}
}

// TestRetryAfterBeyondDeadline: a Retry-After that would cross the request's
// deadline is not waited for: the 429 comes back at once, intact.
func TestRetryAfterBeyondDeadline(t *testing.T) {
	var hits atomic.Int32
	h := func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Retry-After", "20")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, "slow down")
	}
	bubble(t, h, func(t *testing.T, s *server, base *http.Transport) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		client := &http.Client{Transport: &resilhttp.Transport{Base: base, Pipeline: retry(3)}}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
		start := time.Now()
		resp, err := client.Do(req)
		require.NoError(t, err)
		assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
		assert.Equal(t, "slow down", readBody(t, resp))
		assert.Zero(t, time.Since(start), "no wait that cannot finish before the deadline")
		assert.Equal(t, int32(1), hits.Load())
	})
}

func TestContextCanceledMidBackoff(t *testing.T) {
	var hits atomic.Int32
	h := func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	bubble(t, h, func(t *testing.T, s *server, base *http.Transport) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(3*time.Second, cancel)
		p := resil.New[*http.Response]().Retry(resil.RetryPolicy{MaxAttempts: 5, Backoff: resil.Constant(10 * time.Second)})
		rec := &recorder{rt: base}
		client := &http.Client{Transport: &resilhttp.Transport{Base: rec, Pipeline: p}}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
		start := time.Now()
		resp, err := client.Do(req)
		require.ErrorIs(t, err, context.Canceled)
		assert.Nil(t, resp)
		assert.Equal(t, 3*time.Second, time.Since(start), "returns as the context ends, mid-wait")
		assert.Equal(t, int32(1), hits.Load())
		assert.Zero(t, rec.unclosed(), "the failed response was closed")
	})
}

func TestDeadlineMidBackoff(t *testing.T) {
	h := func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }
	bubble(t, h, func(t *testing.T, s *server, base *http.Transport) {
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
		defer cancel()
		// The second wait (10s after 10s) would end at 20s, the third at 30s:
		// Retry gives up before crossing the deadline, and the last 503 comes
		// back.
		p := resil.New[*http.Response]().Retry(resil.RetryPolicy{MaxAttempts: 5, Backoff: resil.Constant(10 * time.Second)})
		client := &http.Client{Transport: &resilhttp.Transport{Base: base, Pipeline: p}}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
		start := time.Now()
		resp, err := client.Do(req)
		require.NoError(t, err)
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		readBody(t, resp)
		assert.Equal(t, 20*time.Second, time.Since(start))
	})
}

// TestTimeoutBoundsHeadersNotBody: a per-attempt Timeout cuts off an
// attempt whose headers are late, but not the body of the response that is
// returned, however long it takes after the stage has returned.
func TestTimeoutBoundsHeadersNotBody(t *testing.T) {
	var hits atomic.Int32
	h := func(w http.ResponseWriter, r *http.Request) {
		switch hits.Add(1) {
		case 1: // headers too late
			time.Sleep(5 * time.Second)
		default: // headers at once, the body slowly
			_, _ = io.WriteString(w, "head ")
			w.(http.Flusher).Flush()
			time.Sleep(5 * time.Second)
			_, _ = io.WriteString(w, "tail")
		}
	}
	bubble(t, h, func(t *testing.T, s *server, base *http.Transport) {
		p := resil.New[*http.Response]().Timeout(time.Second).Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0)})
		client := &http.Client{Transport: &resilhttp.Transport{Base: base, Pipeline: p}}
		start := time.Now()
		resp, err := client.Get(s.URL)
		require.NoError(t, err)
		assert.Equal(t, time.Second, time.Since(start), "the first attempt was cut off after 1s")
		assert.Equal(t, "head tail", readBody(t, resp))
		assert.Equal(t, 6*time.Second, time.Since(start), "the body took 5s more, beyond the attempt's timeout")
		assert.Equal(t, int32(2), hits.Load())
	})
}

func TestTimeoutEveryAttempt(t *testing.T) {
	h := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(time.Hour):
		}
	}
	bubble(t, h, func(t *testing.T, s *server, base *http.Transport) {
		p := resil.New[*http.Response]().Timeout(time.Second).Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0)})
		client := &http.Client{Transport: &resilhttp.Transport{Base: base, Pipeline: p}}
		start := time.Now()
		resp, err := client.Get(s.URL)
		assert.Nil(t, resp)
		require.ErrorIs(t, err, resil.ErrTimeout)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		var re *resil.RetryError
		require.ErrorAs(t, err, &re)
		assert.Equal(t, 3, re.Attempts)
		assert.Equal(t, 3*time.Second, time.Since(start))
	})
}

// TestTimeoutCutsStalledFailureBody: a transient failure's body is read
// (to free its connection) only when the retry starts, and then for 50ms
// at most, since its attempt had a context of its own: a server that
// stalls after the headers of a 503 cannot hold the retry up.
func TestTimeoutCutsStalledFailureBody(t *testing.T) {
	var hits atomic.Int32
	h := func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(time.Hour):
			}
			return
		}
		_, _ = io.WriteString(w, "ok")
	}
	bubble(t, h, func(t *testing.T, s *server, base *http.Transport) {
		p := resil.New[*http.Response]().Timeout(time.Second).Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)})
		client := &http.Client{Transport: &resilhttp.Transport{Base: base, Pipeline: p}}
		start := time.Now()
		resp, err := client.Get(s.URL)
		require.NoError(t, err)
		assert.Equal(t, "ok", readBody(t, resp))
		assert.Equal(t, 50*time.Millisecond, time.Since(start), "the drain's bound, not the attempt's timeout")
	})
}

// TestRequestContextBoundsBody: the returned body is bound by the request's
// own context.
func TestRequestContextBoundsBody(t *testing.T) {
	h := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "head ")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(time.Hour):
		}
	}
	bubble(t, h, func(t *testing.T, s *server, base *http.Transport) {
		ctx, cancel := context.WithCancel(context.Background())
		p := resil.New[*http.Response]().Timeout(time.Second).Retry(resil.RetryPolicy{})
		client := &http.Client{Transport: &resilhttp.Transport{Base: base, Pipeline: p}}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
		resp, err := client.Do(req)
		require.NoError(t, err)
		time.AfterFunc(10*time.Second, cancel)
		start := time.Now()
		_, err = io.ReadAll(resp.Body)
		require.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, 10*time.Second, time.Since(start))
		require.NoError(t, resp.Body.Close())
	})
}
