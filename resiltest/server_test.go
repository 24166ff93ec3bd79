package resiltest_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resiltest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fetch GETs url with c and returns the status and body, or the error.
func fetch(ctx context.Context, c *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestServerInABubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := resiltest.Handler(
			resiltest.Reply{Status: 503, RetryAfter: time.Second, Delay: 2 * time.Second},
			resiltest.Reply{Drop: true},
			resiltest.Reply{Truncate: true, Body: "0123456789"},
			resiltest.Reply{Delay: time.Hour},
			resiltest.Reply{Body: "hello", Delay: 500 * time.Millisecond},
		)
		srv := resiltest.NewServer(h)
		defer srv.Close()
		c := srv.Client()
		start := time.Now()

		status, body, err := fetch(t.Context(), c, srv.URL)
		require.NoError(t, err)
		assert.Equal(t, 503, status)
		assert.Equal(t, "Service Unavailable", body)
		assert.Equal(t, 2*time.Second, time.Since(start), "the delay took fake time")

		_, _, err = fetch(t.Context(), c, srv.URL+"/drop")
		require.Error(t, err, "a dropped connection")

		status, body, err = fetch(t.Context(), c, srv.URL)
		assert.Equal(t, 200, status)
		assert.Equal(t, "01234", body)
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF)

		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, _, err = fetch(ctx, c, srv.URL)
		require.ErrorIs(t, err, context.DeadlineExceeded, "the client gave up during an hour's delay")

		status, body, err = fetch(t.Context(), c, srv.URL)
		require.NoError(t, err)
		assert.Equal(t, 200, status)
		assert.Equal(t, "hello", body)
		assert.Equal(t, 2*time.Second+time.Second+500*time.Millisecond, time.Since(start))

		synctest.Wait() // the handler of the abandoned request has returned
		assert.Equal(t, []int{503, 0, 200, 0, 200}, statuses(h.Calls()))
		assert.ErrorIs(t, h.Calls()[3].Err, context.Canceled)
	})
}

// A pipeline over HTTP in fake time: a per-attempt timeout, retries that
// honour the server's Retry-After, and the waits checked exactly.
func TestPipelineOverHTTPInABubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := resiltest.Handler(
			resiltest.Reply{Delay: time.Minute},                       // cut by the timeout
			resiltest.Reply{Status: 503, RetryAfter: 3 * time.Second}, // the server asks for 3s
			resiltest.Reply{Body: "done"},
		)
		srv := resiltest.NewServer(h)
		defer srv.Close()
		p := resil.New[string]().
			Timeout(5 * time.Second).
			Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(time.Second)})
		v, err := p.Run(t.Context(), func(ctx context.Context) (string, error) {
			status, body, err := fetch(ctx, srv.Client(), srv.URL)
			if err != nil {
				return "", err
			}
			if status == 503 {
				return "", retryAfter(3 * time.Second)
			}
			return body, nil
		})
		require.NoError(t, err)
		assert.Equal(t, "done", v)
		synctest.Wait()
		resiltest.AssertAttempts(t, h, 3)
		calls := h.Calls()
		// The handler sees when each request arrived: 5s timeout + 1s
		// backoff, then the 3s the server asked for.
		assert.Equal(t, 6*time.Second, calls[1].Start.Sub(calls[0].Start))
		assert.Equal(t, 3*time.Second, calls[2].Start.Sub(calls[1].End))
	})
}

// retryAfter is a server's hint, as resil reads it.
type retryAfter time.Duration

func (r retryAfter) Error() string             { return "retry after " + time.Duration(r).String() }
func (r retryAfter) RetryAfter() time.Duration { return time.Duration(r) }

func TestServerCloseEndsRequestsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := resiltest.NewServer(resiltest.Handler(resiltest.Reply{Delay: time.Hour}))
		errc := make(chan error)
		go func() {
			_, _, err := fetch(t.Context(), srv.Client(), srv.URL)
			errc <- err
		}()
		time.Sleep(time.Minute)
		srv.Close()
		err := <-errc
		require.Error(t, err)
		assert.False(t, errors.Is(err, context.DeadlineExceeded))
		_, _, err = fetch(t.Context(), srv.Client(), srv.URL)
		require.Error(t, err, "a closed server accepts nothing")
		assert.NotPanics(t, srv.Close, "closing again does nothing more")
	})
}

// A client that sends a body and gives up during a reply's delay ends the
// handler's wait, as one without a body does: net/http notices that a
// client went away only once the handler has read the request's body.
func TestHandlerDelayEndsWhenAClientWithABodyGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := resiltest.Handler(resiltest.Reply{Delay: time.Hour})
		srv := resiltest.NewServer(h)
		defer srv.Close()
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader(`{"order": 42}`))
		require.NoError(t, err)
		_, err = srv.Client().Do(req)
		require.ErrorIs(t, err, context.DeadlineExceeded)

		synctest.Wait() // the handler has seen the client go
		calls := h.Calls()
		require.Len(t, calls, 1)
		assert.Equal(t, time.Second, calls[0].End.Sub(calls[0].Start))
		assert.ErrorIs(t, calls[0].Err, context.Canceled)
	})
}
