package resilhttp_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
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

// retry is a pipeline with n attempts and no wait between them.
func retry(n int) resil.Pipeline[*http.Response] {
	return resil.New[*http.Response]().Retry(resil.RetryPolicy{MaxAttempts: n, Backoff: resil.Constant(0)})
}

func readBody(t testing.TB, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return string(b)
}

func TestRetry503Then200(t *testing.T) {
	var hits atomic.Int32
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) < 3 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}, nil)
	rec := &recorder{rt: base(t)}
	client := &http.Client{Transport: &resilhttp.Transport{Base: rec, Pipeline: retry(3)}}

	resp, err := client.Get(s.URL)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "ok", readBody(t, resp))
	assert.Equal(t, int32(3), hits.Load())
	assert.Equal(t, 3, rec.Calls())
	assert.Equal(t, []int{503, 503, 200}, rec.codes)
	assert.Zero(t, rec.unclosed(), "every response body is closed")
	assert.Equal(t, int32(1), s.newConns.Load(), "the retried responses were drained: one connection for all attempts")
}

func TestStatusClassification(t *testing.T) {
	tests := []struct {
		code     int
		attempts int // of 3
	}{
		{200, 1}, {201, 1}, {204, 1}, {301, 1}, {302, 1}, {304, 1}, {307, 1},
		{400, 1}, {401, 1}, {403, 1}, {404, 1}, {409, 1}, {422, 1}, {501, 1}, {505, 1},
		{408, 3}, {429, 3}, {500, 3}, {502, 3}, {503, 3}, {504, 3}, {507, 3}, {599, 3},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.code), func(t *testing.T) {
			var hits atomic.Int32
			s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				n := hits.Add(1)
				if tt.code/100 == 3 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tt.code)
				_, _ = io.WriteString(w, "attempt "+strconv.Itoa(int(n)))
			}, nil)
			rec := &recorder{rt: base(t)}
			client := &http.Client{
				Transport:     &resilhttp.Transport{Base: rec, Pipeline: retry(3)},
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			}
			resp, err := client.Get(s.URL)
			require.NoError(t, err, "a status is never an error from RoundTrip")
			assert.Equal(t, tt.code, resp.StatusCode)
			body := readBody(t, resp)
			if tt.code != 204 && tt.code != 304 {
				assert.Equal(t, "attempt "+strconv.Itoa(tt.attempts), body, "the last response, its body intact")
			}
			assert.Equal(t, int32(tt.attempts), hits.Load())
			assert.Zero(t, rec.unclosed())
			if tt.code != 408 { // net/http closes a connection that answered 408
				assert.Equal(t, int32(1), s.newConns.Load())
			}
		})
	}
}

// TestStatusErrorSeenByStages checks what stages see: a transient
// *StatusError for 503, a permanent one for 401, and a Breaker that counts
// only the former. Wait is the server's Retry-After whether or not the
// status is retried.
func TestStatusErrorSeenByStages(t *testing.T) {
	for _, tt := range []struct {
		code      int
		transient bool
	}{{503, true}, {429, true}, {401, false}, {404, false}, {413, false}, {501, false}} {
		t.Run(strconv.Itoa(tt.code), func(t *testing.T) {
			s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", "7")
				w.WriteHeader(tt.code)
			}, nil)
			var seen error
			p := resil.New[*http.Response]().Fallback(func(_ context.Context, err error) (*http.Response, error) {
				seen = err
				return nil, err
			})
			client := &http.Client{Transport: &resilhttp.Transport{Base: base(t), Pipeline: p}}
			resp, err := client.Get(s.URL)
			require.NoError(t, err)
			readBody(t, resp)
			var se *resilhttp.StatusError
			require.ErrorAs(t, seen, &se)
			assert.Equal(t, tt.code, se.StatusCode)
			assert.Equal(t, resp.Status, se.Status)
			assert.Equal(t, tt.transient, resil.IsTransient(seen))
			assert.Equal(t, tt.transient, se.Transient())
			assert.Equal(t, 7*time.Second, se.Wait, "the server's Retry-After")
			assert.Equal(t, 7*time.Second, se.RetryAfter())
		})
	}
}

func TestRequestsThatMayNotBeRetried(t *testing.T) {
	payload := "payload: the same bytes every time"
	tests := []struct {
		name     string
		req      func(url string) *http.Request
		attempts int
	}{
		{"POST", func(u string) *http.Request {
			r, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(payload))
			return r
		}, 1},
		{"PATCH", func(u string) *http.Request {
			r, _ := http.NewRequest(http.MethodPatch, u, strings.NewReader(payload))
			return r
		}, 1},
		{"POST with Idempotency-Key", func(u string) *http.Request {
			r, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(payload))
			r.Header.Set("Idempotency-Key", "k-1")
			return r
		}, 3},
		{"PUT bytes", func(u string) *http.Request {
			r, _ := http.NewRequest(http.MethodPut, u, bytes.NewReader([]byte(payload)))
			return r
		}, 3},
		{"DELETE", func(u string) *http.Request {
			r, _ := http.NewRequest(http.MethodDelete, u, nil)
			return r
		}, 3},
		{"PUT NoBody", func(u string) *http.Request {
			r, _ := http.NewRequest(http.MethodPut, u, http.NoBody)
			return r
		}, 3},
		{"PUT body without GetBody", func(u string) *http.Request {
			r, _ := http.NewRequest(http.MethodPut, u, io.NopCloser(strings.NewReader(payload)))
			return r
		}, 1},
		{"PUT chunked with GetBody", func(u string) *http.Request {
			r, _ := http.NewRequest(http.MethodPut, u, io.NopCloser(strings.NewReader(payload)))
			r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(payload)), nil }
			return r
		}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type got struct {
				body string
				cl   int64
				te   []string
			}
			var (
				mu    sync.Mutex
				seen  []got
				empty = tt.name == "DELETE" || tt.name == "PUT NoBody"
			)
			s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				seen = append(seen, got{string(b), r.ContentLength, r.TransferEncoding})
				mu.Unlock()
				http.Error(w, "busy", http.StatusServiceUnavailable)
			}, nil)
			rec := &recorder{rt: base(t)}
			client := &http.Client{Transport: &resilhttp.Transport{Base: rec, Pipeline: retry(3)}}
			req := tt.req(s.URL)
			resp, err := client.Do(req)
			require.NoError(t, err)
			assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
			assert.Equal(t, "busy\n", readBody(t, resp))
			assert.Equal(t, tt.attempts, rec.Calls(), "Base is called once per attempt")
			require.Len(t, seen, tt.attempts)
			for i, g := range seen {
				assert.Equal(t, seen[0], g, "attempt %d sends what the first sent", i+1)
				if !empty {
					assert.Equal(t, payload, g.body)
				}
			}
			assert.Zero(t, rec.unclosed())
		})
	}
}

// TestPermanentMarkForUnsafeRequests: a POST's transient failure is marked
// Permanent, so a RetryIf that accepts everything still does not retry it.
func TestPermanentMarkForUnsafeRequests(t *testing.T) {
	var hits atomic.Int32
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}, nil)
	var seen error
	p := resil.New[*http.Response]().
		Retry(resil.RetryPolicy{MaxAttempts: 5, Backoff: resil.Constant(0), RetryIf: func(error) bool { return true }}).
		Fallback(func(_ context.Context, err error) (*http.Response, error) { seen = err; return nil, err })
	client := &http.Client{Transport: &resilhttp.Transport{Base: base(t), Pipeline: p}}
	resp, err := client.Post(s.URL, "text/plain", strings.NewReader("x"))
	require.NoError(t, err)
	readBody(t, resp)
	assert.Equal(t, int32(1), hits.Load())
	assert.False(t, resil.IsTransient(seen))
}

func TestRequestNotModified(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	}, nil)
	tr := &resilhttp.Transport{Base: base(t), Pipeline: retry(3).Timeout(10 * time.Second)}
	ctx := context.WithValue(context.Background(), ctxKey{}, 1)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, s.URL, strings.NewReader("abc"))
	require.NoError(t, err)
	req.Header.Set("X-A", "1")
	before := *req
	beforeURL := *req.URL
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	readBody(t, resp)
	assert.Equal(t, http.Header{"X-A": {"1"}}, req.Header)
	assert.Equal(t, beforeURL, *req.URL)
	assert.True(t, before.Body == req.Body, "Body field unchanged")
	assert.True(t, before.Context() == req.Context(), "context unchanged")
	assert.Equal(t, before.ContentLength, req.ContentLength)
	assert.Equal(t, before.Method, req.Method)
}

type ctxKey struct{}

func TestConnectionReuseAcrossCalls(t *testing.T) {
	var hits atomic.Int32
	big := strings.Repeat("x", 3000) // an error page within the drain limit
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1)%2 == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, big)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}, nil)
	client := &http.Client{Transport: &resilhttp.Transport{Base: base(t), Pipeline: retry(2)}}
	for range 10 {
		resp, err := client.Get(s.URL)
		require.NoError(t, err)
		assert.Equal(t, "ok", readBody(t, resp))
	}
	assert.Equal(t, int32(20), hits.Load())
	assert.Equal(t, int32(1), s.newConns.Load())
}

func TestChunkedFailureBodyReused(t *testing.T) {
	// A failure page of unknown length is read to its end when short.
	var hits atomic.Int32
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, "part 1 ")
			w.(http.Flusher).Flush() // forces chunked encoding
			_, _ = io.WriteString(w, "part 2")
			return
		}
		_, _ = io.WriteString(w, "ok")
	}, nil)
	client := &http.Client{Transport: &resilhttp.Transport{Base: base(t), Pipeline: retry(2)}}
	resp, err := client.Get(s.URL)
	require.NoError(t, err)
	assert.Equal(t, "ok", readBody(t, resp))
	assert.Equal(t, int32(1), s.newConns.Load())
}

func TestLargeFailureBodyReturnedIntact(t *testing.T) {
	big := strings.Repeat("0123456789", 1000) // 10 KB: beyond the drain limit
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, big)
	}, nil)
	for _, cl := range []bool{true, false} {
		t.Run("content-length="+strconv.FormatBool(cl), func(t *testing.T) {
			rec := &recorder{rt: base(t)}
			client := &http.Client{Transport: &resilhttp.Transport{Base: rec, Pipeline: retry(2)}}
			resp, err := client.Get(s.URL)
			require.NoError(t, err)
			assert.Equal(t, big, readBody(t, resp))
			assert.Zero(t, rec.unclosed())
		})
	}
}

func TestBreakerOpenClosesRequestBody(t *testing.T) {
	var hits atomic.Int32
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}, nil)
	b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 2, FailureRatio: 0.5, OpenFor: 1 << 62})
	client := &http.Client{Transport: &resilhttp.Transport{Base: base(t), Pipeline: retry(1).Breaker(b)}}
	for range 2 {
		resp, err := client.Get(s.URL)
		require.NoError(t, err)
		readBody(t, resp)
	}
	require.Equal(t, resil.StateOpen, b.State())

	body := &closeCounter{Reader: strings.NewReader("abc")}
	req, _ := http.NewRequest(http.MethodPut, s.URL, body)
	resp, err := client.Do(req)
	require.ErrorIs(t, err, resil.ErrBreakerOpen)
	assert.Nil(t, resp)
	assert.Equal(t, int32(2), hits.Load())
	assert.Equal(t, int32(1), body.closed.Load(), "a RoundTripper closes the request body, even when Base never saw it")
}

type closeCounter struct {
	io.Reader
	closed atomic.Int32
}

func (c *closeCounter) Close() error { c.closed.Add(1); return nil }

func TestFallbackReplacesFailure(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "down")
	}, nil)
	p := retry(2).Fallback(func(ctx context.Context, err error) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Status: "200 OK", Body: io.NopCloser(strings.NewReader("cached"))}, nil
	})
	rec := &recorder{rt: base(t)}
	client := &http.Client{Transport: &resilhttp.Transport{Base: rec, Pipeline: p}}
	resp, err := client.Get(s.URL)
	require.NoError(t, err)
	assert.Equal(t, "cached", readBody(t, resp))
	assert.Equal(t, 2, rec.Calls())
	assert.Zero(t, rec.unclosed(), "the replaced responses were closed")
}

func TestFallbackValueWithErrorIsClosed(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) }, nil)
	fb := &closeCounter{Reader: strings.NewReader("x")}
	boom := errors.New("boom")
	p := retry(1).Fallback(func(ctx context.Context, err error) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Body: fb}, boom
	})
	client := &http.Client{Transport: &resilhttp.Transport{Base: base(t), Pipeline: p}}
	resp, err := client.Get(s.URL)
	require.ErrorIs(t, err, boom)
	assert.Nil(t, resp)
	assert.Equal(t, int32(1), fb.closed.Load())
}

func TestNetworkErrorsAreTransient(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens: connection refused
	rec := &recorder{rt: base(t)}
	client := &http.Client{Transport: &resilhttp.Transport{Base: rec, Pipeline: retry(3)}}
	resp, err := client.Get("http://" + addr)
	require.Error(t, err)
	assert.Nil(t, resp)
	assert.Equal(t, 3, rec.Calls())
	var re *resil.RetryError
	assert.ErrorAs(t, err, &re)
	var oe *net.OpError
	assert.ErrorAs(t, err, &oe)
}

func TestPermanentTransportErrors(t *testing.T) {
	tlsServer := newTLSServer(t)
	tests := []struct {
		name string
		url  string
		is   func(t *testing.T, err error)
	}{
		{"unsupported scheme", "ftp://example.test/", nil},
		{"no host", "http:///path", nil},
		{"invalid port", "http://127.0.0.1:99999/", nil},
		{"certificate", tlsServer.URL, func(t *testing.T, err error) {
			var cv *tls.CertificateVerificationError
			assert.ErrorAs(t, err, &cv)
			var ua x509.UnknownAuthorityError
			assert.ErrorAs(t, err, &ua)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{rt: base(t)}
			var seen error
			p := retry(3).Fallback(func(_ context.Context, err error) (*http.Response, error) {
				seen = err
				return nil, err
			})
			client := &http.Client{Transport: &resilhttp.Transport{Base: rec, Pipeline: p}}
			resp, err := client.Get(tt.url)
			require.Error(t, err)
			assert.Nil(t, resp)
			assert.Equal(t, 1, rec.Calls(), "a permanent error is not retried")
			assert.False(t, resil.IsTransient(seen))
			if tt.is != nil {
				tt.is(t, err)
			}
		})
	}
}

func newTLSServer(t *testing.T) *httptest.Server {
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(s.Close)
	return s
}

func TestZeroTransport(t *testing.T) {
	t.Cleanup(http.DefaultTransport.(*http.Transport).CloseIdleConnections)
	var hits atomic.Int32
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "busy")
	}, nil)
	client := &http.Client{Transport: &resilhttp.Transport{}}
	resp, err := client.Get(s.URL)
	require.NoError(t, err)
	assert.Equal(t, 503, resp.StatusCode)
	assert.Equal(t, "busy", readBody(t, resp))
	assert.Equal(t, int32(1), hits.Load())
}

func TestContextCanceledInOnRetry(t *testing.T) {
	// The context ends before the wait: RoundTrip returns the context's
	// error, and the failed response is closed.
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := resil.New[*http.Response]().Retry(resil.RetryPolicy{
		MaxAttempts: 3, Backoff: resil.Constant(1 << 62), OnRetry: func(resil.RetryEvent) { cancel() },
	})
	rec := &recorder{rt: base(t)}
	client := &http.Client{Transport: &resilhttp.Transport{Base: rec, Pipeline: p}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	resp, err := client.Do(req)
	require.ErrorIs(t, err, context.Canceled)
	assert.Nil(t, resp)
	assert.Equal(t, 1, rec.Calls())
	assert.Zero(t, rec.unclosed())
}
