package resiltest_test

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resiltest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// get makes a GET request of url with a client that keeps no connection.
func get(t *testing.T, url string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	return (&http.Client{Transport: tr}).Do(req)
}

func TestHandlerScriptOverAServer(t *testing.T) {
	h := resiltest.Handler(
		resiltest.Reply{Status: 503, RetryAfter: 1500 * time.Millisecond, Times: 2},
		resiltest.Reply{Status: 429, Header: http.Header{"Retry-After": {"Wed, 21 Oct 2015 07:28:00 GMT"}}, Body: "slow down"},
		resiltest.Reply{Body: "hello"},
	)
	srv := httptest.NewServer(h)
	defer srv.Close()
	want := []struct {
		status     int
		retryAfter string
		body       string
	}{
		{503, "2", "Service Unavailable"},
		{503, "2", "Service Unavailable"},
		{429, "Wed, 21 Oct 2015 07:28:00 GMT", "slow down"},
		{200, "", "hello"},
		{200, "", "hello"},
	}
	for i, w := range want {
		resp, err := get(t, srv.URL)
		require.NoError(t, err, "request %d", i+1)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, w.status, resp.StatusCode, "request %d", i+1)
		assert.Equal(t, w.retryAfter, resp.Header.Get("Retry-After"), "request %d", i+1)
		assert.Equal(t, w.body, string(body), "request %d", i+1)
	}
	calls := h.Calls()
	require.Len(t, calls, len(want))
	for i, c := range calls {
		assert.Equal(t, i+1, c.Attempt)
		assert.Equal(t, want[i].status, c.Status)
	}
	assert.Equal(t, len(want), h.Count())
}

func TestHandlerDropsAndTruncates(t *testing.T) {
	h := resiltest.Handler(resiltest.Reply{Drop: true}, resiltest.Reply{Truncate: true, Body: "0123456789"}, resiltest.Reply{})
	srv := httptest.NewServer(h)
	defer srv.Close()

	_, err := get(t, srv.URL)
	require.Error(t, err, "a dropped connection")
	assert.True(t, errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF), "got %v", err)

	resp, err := get(t, srv.URL)
	require.NoError(t, err, "a truncated body still has its headers")
	assert.Equal(t, int64(10), resp.ContentLength)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.Equal(t, "01234", string(body))

	resp, err = get(t, srv.URL)
	require.NoError(t, err)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "OK", string(body))
	assert.Equal(t, []int{0, 200, 200}, statuses(h.Calls()))
}

func statuses(calls []resiltest.Call) []int {
	out := make([]int, len(calls))
	for i, c := range calls {
		out[i] = c.Status
	}
	return out
}

func TestHandlerDelayInFakeTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := resiltest.Handler(resiltest.Reply{Delay: 3 * time.Second, Body: "late"}, resiltest.Reply{Delay: time.Hour})
		start := time.Now()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), "GET", "/", nil))
		assert.Equal(t, 3*time.Second, time.Since(start))
		assert.Equal(t, "late", rec.Body.String())

		// A client that gives up during the delay gets no answer.
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, "GET", "/", nil))
		assert.False(t, rec.Flushed)
		assert.Empty(t, rec.Body.String())
		c := h.Calls()[1]
		assert.Equal(t, time.Second, c.End.Sub(c.Start))
		assert.Equal(t, 0, c.Status)
		assert.ErrorIs(t, c.Err, context.DeadlineExceeded)
		assert.Equal(t, c.Start.Add(time.Second), c.Deadline)
	})
}

func TestHandlerDropWithoutHijackAborts(t *testing.T) {
	h := resiltest.Handler(resiltest.Reply{Drop: true})
	require.PanicsWithValue(t, http.ErrAbortHandler, func() {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	})
}

// RetryAfter is sent in whole seconds, rounded up, over the whole range
// of time.Duration.
func TestHandlerRetryAfterHeader(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{time.Nanosecond, "1"},
		{time.Second, "1"},
		{1500 * time.Millisecond, "2"},
		{math.MaxInt64, "9223372037"},
		{math.MaxInt64 - time.Second/2, "9223372037"},
	}
	for _, tt := range tests {
		h := resiltest.Handler(resiltest.Reply{Status: http.StatusServiceUnavailable, RetryAfter: tt.d})
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		assert.Equal(t, tt.want, rec.Header().Get("Retry-After"), "RetryAfter %v", tt.d)
	}
}

func TestHandlerBadReplyPanics(t *testing.T) {
	tests := []struct {
		bad  resiltest.Reply
		want string
	}{
		{resiltest.Reply{Times: -1}, "resiltest: Handler reply 2: Reply.Times must be >= 0, got -1"},
		{resiltest.Reply{Status: 42}, "resiltest: Handler reply 2: Reply.Status must be 0 or a final status code (200-999), got 42"},
		{resiltest.Reply{Status: -1}, "resiltest: Handler reply 2: Reply.Status must be 0 or a final status code (200-999), got -1"},
		{resiltest.Reply{Status: 1000}, "resiltest: Handler reply 2: Reply.Status must be 0 or a final status code (200-999), got 1000"},
		{resiltest.Reply{Status: 103}, "resiltest: Handler reply 2: Reply.Status must be 0 or a final status code (200-999), got 103"},
		{resiltest.Reply{RetryAfter: -time.Second}, "resiltest: Handler reply 2: Reply.RetryAfter must be >= 0, got -1s"},
		{resiltest.Reply{RetryAfter: -1}, "resiltest: Handler reply 2: Reply.RetryAfter must be >= 0, got -1ns"},
		{resiltest.Reply{Delay: -time.Millisecond}, "resiltest: Handler reply 2: Reply.Delay must be >= 0, got -1ms"},
		{resiltest.Reply{Delay: math.MinInt64}, "resiltest: Handler reply 2: Reply.Delay must be >= 0, got -2562047h47m16.854775808s"},
	}
	for _, tt := range tests {
		require.PanicsWithValue(t, tt.want, func() { resiltest.Handler(resiltest.Reply{}, tt.bad) })
	}
	for _, ok := range []int{0, 200, 599, 999} {
		require.NotPanics(t, func() { resiltest.Handler(resiltest.Reply{Status: ok}) }, "Status %d", ok)
	}
}

// TestZeroFlakyHandler: the zero FlakyHandler is Handler(), as its doc
// says: every request is answered 200 "OK" and recorded.
func TestZeroFlakyHandler(t *testing.T) {
	var h resiltest.FlakyHandler
	for range 2 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		assert.Equal(t, http.StatusOK, rec.Code)
		assert.Equal(t, "OK", rec.Body.String())
	}
	require.Len(t, h.Calls(), 2)
	assert.Equal(t, http.StatusOK, h.Calls()[1].Status)
}

// serve answers n requests with h through a recorder and returns their
// statuses (0 for a dropped connection, -1 for a truncated body).
func serve(h http.Handler, n int) []int {
	out := make([]int, n)
	for i := range out {
		rec := httptest.NewRecorder()
		func() {
			defer func() {
				if recover() != nil {
					out[i] = 0
				}
			}()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			out[i] = rec.Code
			if rec.Body.Len() < len("OK") {
				out[i] = -1
			}
		}()
	}
	return out
}

func TestRandomHandlerIsReproducibleWithItsRates(t *testing.T) {
	f := resiltest.HTTPFaults{Seed: 9, ErrorRate: 0.2, DropRate: 0.1, TruncateRate: 0.1}
	const n = 4000
	a := serve(resiltest.RandomHandler(f), n)
	require.Equal(t, a, serve(resiltest.RandomHandler(f), n))
	f.Seed = 10
	require.NotEqual(t, a, serve(resiltest.RandomHandler(f), n))
	counts := map[int]int{}
	for _, s := range a {
		counts[s]++
	}
	near := func(got int, rate float64) {
		sd := math.Sqrt(n * rate * (1 - rate))
		assert.InDelta(t, n*rate, float64(got), 5*sd)
	}
	near(counts[503], 0.2)
	near(counts[0], 0.1)
	near(counts[-1], 0.1)
	near(counts[200], 0.6)
}

func TestRandomHandlerStatusAndLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := resiltest.RandomHandler(resiltest.HTTPFaults{ErrorRate: 1, Status: 429, RetryAfter: time.Second,
			Latency: 10 * time.Millisecond, Jitter: 10 * time.Millisecond})
		for range 50 {
			start := time.Now()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			d := time.Since(start)
			require.Equal(t, 429, rec.Code)
			require.Equal(t, "1", rec.Header().Get("Retry-After"))
			require.GreaterOrEqual(t, d, 10*time.Millisecond)
			require.LessOrEqual(t, d, 20*time.Millisecond)
		}
	})
}

func TestHTTPFaultsValidate(t *testing.T) {
	tests := []struct {
		name string
		f    resiltest.HTTPFaults
		msg  string
	}{
		{"ErrorRate", resiltest.HTTPFaults{ErrorRate: math.NaN()}, "resiltest: HTTPFaults.ErrorRate must be in [0, 1], got NaN"},
		{"DropRate", resiltest.HTTPFaults{DropRate: -1}, "resiltest: HTTPFaults.DropRate must be in [0, 1], got -1"},
		{"TruncateRate", resiltest.HTTPFaults{TruncateRate: 1.1}, "resiltest: HTTPFaults.TruncateRate must be in [0, 1], got 1.1"},
		{"sum", resiltest.HTTPFaults{ErrorRate: 0.5, DropRate: 0.5, TruncateRate: 0.25}, "resiltest: HTTPFaults.ErrorRate+DropRate+TruncateRate must be <= 1, got 1.25"},
		{"Status", resiltest.HTTPFaults{Status: 42}, "resiltest: HTTPFaults.Status must be a final status code (200-999), got 42"},
		{"Status 1xx", resiltest.HTTPFaults{Status: 100}, "resiltest: HTTPFaults.Status must be a final status code (200-999), got 100"},
		{"RetryAfter", resiltest.HTTPFaults{RetryAfter: -time.Second}, "resiltest: HTTPFaults.RetryAfter must be >= 0, got -1s"},
		{"Latency", resiltest.HTTPFaults{Latency: -1}, "resiltest: HTTPFaults.Latency must be >= 0, got -1ns"},
		{"Jitter", resiltest.HTTPFaults{Jitter: -1}, "resiltest: HTTPFaults.Jitter must be >= 0, got -1ns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.EqualError(t, tt.f.Validate(), tt.msg)
			require.PanicsWithValue(t, tt.msg, func() { resiltest.RandomHandler(tt.f) })
		})
	}
	require.NoError(t, resiltest.HTTPFaults{ErrorRate: 1}.Validate())
}

// statusError makes a 5xx response an error a pipeline retries.
type statusError int

func (e statusError) Error() string { return http.StatusText(int(e)) }

// A pipeline retries through a dropped connection, a truncated body and a
// 503 to the answer.
func TestPipelineRetriesThroughHTTPFaults(t *testing.T) {
	h := resiltest.Handler(resiltest.Reply{Drop: true}, resiltest.Reply{Truncate: true, Body: "partial body"},
		resiltest.Reply{Status: 503}, resiltest.Reply{Body: "done"})
	srv := httptest.NewServer(h)
	defer srv.Close()
	p := resil.New[string]().Retry(resil.RetryPolicy{MaxAttempts: 5, Backoff: resil.Constant(0)})
	body, err := p.Run(t.Context(), func(ctx context.Context) (string, error) {
		resp, err := get(t, srv.URL)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", err
		}
		if resp.StatusCode >= 500 {
			return "", statusError(resp.StatusCode)
		}
		return string(b), nil
	})
	require.NoError(t, err)
	require.Equal(t, "done", body)
	resiltest.AssertAttempts(t, h, 4)
}

// Reply.Header's keys are sent as http.Header.Set would: a key spelt in
// lower case replaces the handler's default, it is not sent beside it.
func TestHandlerHeaderKeysAreCanonical(t *testing.T) {
	h := resiltest.Handler(resiltest.Reply{Header: http.Header{
		"content-type": {"application/json"},
		"retry-after":  {"Wed, 21 Oct 2015 07:28:00 GMT"},
	}, Body: "{}"})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	assert.Equal(t, []string{"application/json"}, rec.Header().Values("Content-Type"))
	assert.Equal(t, "Wed, 21 Oct 2015 07:28:00 GMT", rec.Header().Get("Retry-After"))

	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := get(t, srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, []string{"application/json"}, resp.Header.Values("Content-Type"))
}

// A dropped connection reaches a client that keeps connections alive
// (httptest.Server.Client, http.DefaultClient): its transport would resend
// a GET on its own when a reused connection closes without an answer, and
// the test would see the next reply in place of the drop.
func TestHandlerDropReachesAKeepAliveClient(t *testing.T) {
	tests := []struct {
		name string
		h    *resiltest.FlakyHandler
	}{
		{"Handler", resiltest.Handler(resiltest.Reply{}, resiltest.Reply{Drop: true}, resiltest.Reply{Body: "after"})},
		{"RandomHandler", resiltest.RandomHandler(resiltest.HTTPFaults{Seed: 1, DropRate: 0.5})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.h)
			defer srv.Close()
			c := srv.Client()
			defer c.CloseIdleConnections()
			var got []int
			for range 20 {
				resp, err := c.Get(srv.URL)
				if err != nil {
					got = append(got, 0)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				got = append(got, resp.StatusCode)
			}
			require.Equal(t, 20, tt.h.Count(), "each request reached the handler once")
			assert.Equal(t, statuses(tt.h.Calls()), got, "the client saw every drop")
		})
	}
}
