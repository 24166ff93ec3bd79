package resilhttp_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resilhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRetryFreesLargeFailureBodyConnection: a 503 whose error page is
// beyond the drain limit must not keep its connection while the next
// attempt waits for one. With MaxConnsPerHost 1 the retry would otherwise
// wait for the connection the discarded 503 still holds, until the
// request's deadline.
func TestRetryFreesLargeFailureBodyConnection(t *testing.T) {
	page := strings.Repeat("e", 10<<10)
	for _, chunked := range []bool{false, true} {
		for _, perTry := range []bool{false, true} {
			name := "content-length"
			if chunked {
				name = "chunked"
			}
			if perTry {
				name += "+timeout"
			}
			t.Run(name, func(t *testing.T) {
				var hits atomic.Int32
				h := func(w http.ResponseWriter, r *http.Request) {
					if hits.Add(1) == 1 {
						w.WriteHeader(http.StatusServiceUnavailable)
						if chunked {
							w.(http.Flusher).Flush()
						}
						_, _ = io.WriteString(w, page)
						return
					}
					_, _ = io.WriteString(w, "ok")
				}
				bubble(t, h, func(t *testing.T, s *server, base *http.Transport) {
					base.MaxConnsPerHost = 1
					p := resil.New[*http.Response]()
					if perTry {
						p = p.Timeout(time.Hour)
					}
					p = p.Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)})
					rec := &recorder{rt: base}
					client := &http.Client{Transport: &resilhttp.Transport{Base: rec, Pipeline: p}}
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
					start := time.Now()
					resp, err := client.Do(req)
					require.NoError(t, err)
					assert.Equal(t, http.StatusOK, resp.StatusCode)
					assert.Equal(t, "ok", readBody(t, resp))
					assert.Zero(t, time.Since(start), "the retry did not wait for the 503's connection")
					assert.Equal(t, int32(2), hits.Load())
					assert.Zero(t, rec.unclosed())
				})
			})
		}
	}
}

// TestTimeoutErrorsStayTimeouts: http.Client users tell a timeout by
// net.Error's Timeout (url.Error's asks the error RoundTrip returned). A
// timeout must still say so through resilhttp, as it does without it:
// Base's own timeouts, a per-attempt Timeout stage, the request's deadline,
// whether the request is retried or marked permanent.
func TestTimeoutErrorsStayTimeouts(t *testing.T) {
	hang := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(time.Hour):
		}
	}
	tests := []struct {
		name     string
		method   string
		p        resil.Pipeline[*http.Response]
		deadline time.Duration // the request's; 0: none
		header   time.Duration // Base's ResponseHeaderTimeout; 0: none
		plain    bool          // Base alone, for reference
	}{
		{"plain GET, header timeout", http.MethodGet, resil.Pipeline[*http.Response]{}, 0, time.Second, true},
		{"plain POST, deadline", http.MethodPost, resil.Pipeline[*http.Response]{}, time.Second, 0, true},
		{"POST, header timeout", http.MethodPost, resil.New[*http.Response](), 0, time.Second, false},
		{"POST, deadline", http.MethodPost, resil.New[*http.Response](), time.Second, 0, false},
		{"GET retried, header timeout", http.MethodGet, retry(2), 0, time.Second, false},
		{"GET retried, per-attempt Timeout", http.MethodGet, resil.New[*http.Response]().Timeout(time.Second).Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)}), 0, 0, false},
		{"GET retried, deadline", http.MethodGet, retry(2), time.Second, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, hang, func(t *testing.T, s *server, base *http.Transport) {
				base.ResponseHeaderTimeout = tt.header
				var rt http.RoundTripper = base
				if !tt.plain {
					rt = &resilhttp.Transport{Base: base, Pipeline: tt.p}
				}
				ctx := context.Background()
				if tt.deadline > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.deadline)
					defer cancel()
				}
				req, _ := http.NewRequestWithContext(ctx, tt.method, s.URL, strings.NewReader("x"))
				resp, err := (&http.Client{Transport: rt}).Do(req)
				require.Error(t, err)
				assert.Nil(t, resp)
				var ue *url.Error
				require.ErrorAs(t, err, &ue)
				assert.True(t, ue.Timeout(), "url.Error.Timeout: %v", err)
				var ne net.Error
				require.ErrorAs(t, err, &ne)
				assert.True(t, ne.Timeout(), "net.Error.Timeout: %v", err)
			})
		})
	}
}

// TestPanicInStageClosesResponses: a panic in a stage's callback (here a
// Fallback; an OnRetry, an Observer or OnStateChange alike) propagates to
// RoundTrip's caller, who may recover it (net/http's server does, for a
// handler). The responses the attempts produced are closed first, as they
// would be on return, and the request body too when no attempt sent it:
// otherwise their connections stay busy for good.
func TestPanicInStageClosesResponses(t *testing.T) {
	page := strings.Repeat("e", 10<<10) // beyond what is buffered
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, page)
	}, nil)
	rec := &recorder{rt: base(t)}
	p := retry(2).Fallback(func(context.Context, error) (*http.Response, error) { panic("fallback broke") })
	client := &http.Client{Transport: &resilhttp.Transport{Base: rec, Pipeline: p}}
	require.PanicsWithValue(t, "fallback broke", func() { _, _ = client.Get(s.URL) })
	assert.Equal(t, 2, rec.Calls())
	assert.Zero(t, rec.unclosed(), "every response closed")

	// A panic in OnStateChange after the attempt.
	b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OnStateChange: func(from, to resil.BreakerState) {
		if to == resil.StateOpen {
			panic("observer broke")
		}
	}})
	client = &http.Client{Transport: &resilhttp.Transport{Base: rec, Pipeline: retry(1).Breaker(b)}}
	require.PanicsWithValue(t, "observer broke", func() { _, _ = client.Get(s.URL) })
	assert.Zero(t, rec.unclosed(), "every response closed")
}

// TestPanicBeforeAttemptClosesRequestBody: a panic before any attempt
// (OnStateChange reporting open -> half-open, made by the call) leaves the
// request body closed, as RoundTrip's contract asks.
func TestPanicBeforeAttemptClosesRequestBody(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, OnStateChange: func(from, to resil.BreakerState) {
			if to == resil.StateHalfOpen {
				panic("observer broke")
			}
		}})
		base := &refusingRT{}
		tr := &resilhttp.Transport{Base: base, Pipeline: retry(1).Breaker(b)}
		req, _ := http.NewRequest(http.MethodGet, "http://example.test/", nil)
		_, err := tr.RoundTrip(req)
		require.Error(t, err)
		require.Equal(t, resil.StateOpen, b.State())
		time.Sleep(time.Second)

		body := &closeCounter{Reader: strings.NewReader("abc")}
		req, _ = http.NewRequest(http.MethodPut, "http://example.test/", body)
		require.PanicsWithValue(t, "observer broke", func() { _, _ = tr.RoundTrip(req) })
		assert.Equal(t, int32(1), base.calls.Load(), "no attempt")
		assert.Equal(t, int32(1), body.closed.Load(), "the request body was closed")
	})
}

// panickyRT answers 503 with a tracked body, and panics on call panicOn.
type panickyRT struct {
	panicOn int32
	calls   atomic.Int32
	bodies  []*closeCounter
}

func (rt *panickyRT) RoundTrip(r *http.Request) (*http.Response, error) {
	if rt.calls.Add(1) == rt.panicOn {
		panic("base broke")
	}
	b := &closeCounter{Reader: strings.NewReader(strings.Repeat("e", 10<<10))}
	rt.bodies = append(rt.bodies, b)
	return &http.Response{StatusCode: 503, Status: "503 Service Unavailable", Body: b, ContentLength: -1, Request: r}, nil
}

// TestBasePanicPropagates: Base panicking in a later attempt reaches the
// caller (and does not leave RoundTrip waiting for the attempt it was in);
// the earlier attempt's response is closed.
func TestBasePanicPropagates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := &panickyRT{panicOn: 2}
		tr := &resilhttp.Transport{Base: base, Pipeline: retry(3).Timeout(time.Hour)}
		req, _ := http.NewRequest(http.MethodGet, "http://example.test/", nil)
		require.PanicsWithValue(t, "base broke", func() { _, _ = tr.RoundTrip(req) })
		require.Len(t, base.bodies, 1)
		assert.Equal(t, int32(1), base.bodies[0].closed.Load())
	})
}

// TestDiscardedStalledBodyDoesNotHoldRoundTrip: a failure response that a
// Fallback replaces is drained before RoundTrip returns; a body that
// stalls after the headers must not hold RoundTrip (and the fallback's
// answer) beyond the attempt's Timeout, up to the request's deadline.
func TestDiscardedStalledBodyDoesNotHoldRoundTrip(t *testing.T) {
	for _, method := range []string{http.MethodPost, http.MethodGet} {
		t.Run(method, func(t *testing.T) {
			h := func(w http.ResponseWriter, r *http.Request) {
				code := http.StatusServiceUnavailable // not retried: a POST
				if r.Method == http.MethodGet {
					code = http.StatusNotFound
				}
				w.WriteHeader(code)
				_, _ = io.WriteString(w, "partial")
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
				case <-time.After(time.Hour):
				}
			}
			bubble(t, h, func(t *testing.T, s *server, base *http.Transport) {
				p := resil.New[*http.Response]().Timeout(time.Second).Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)}).
					Fallback(func(context.Context, error) (*http.Response, error) {
						return &http.Response{StatusCode: 200, Status: "200 OK", Body: io.NopCloser(strings.NewReader("cached"))}, nil
					})
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, method, s.URL, strings.NewReader("x"))
				client := &http.Client{Transport: &resilhttp.Transport{Base: base, Pipeline: p}}
				start := time.Now()
				resp, err := client.Do(req)
				require.NoError(t, err)
				assert.Equal(t, "cached", readBody(t, resp))
				assert.LessOrEqual(t, time.Since(start), time.Second, "the fallback's answer came without waiting for the stalled body")
			})
		})
	}
}
