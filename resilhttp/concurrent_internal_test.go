package resilhttp

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests drive attempt the way a hedging stage does: several attempts
// of one call at once, each with a context of its own, some still running
// when the pipeline has returned.

// gate is a Base that answers each request once release is closed, or
// fails when the request's context ends first.
type gate struct {
	release chan struct{}
	calls   atomic.Int32
	bodies  sync.Map // *trackBody -> struct{}
}

type trackBody struct {
	io.Reader
	closed atomic.Bool
}

func (b *trackBody) Close() error { b.closed.Store(true); return nil }

func (g *gate) RoundTrip(r *http.Request) (*http.Response, error) {
	g.calls.Add(1)
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	select {
	case <-g.release:
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	b := &trackBody{Reader: strings.NewReader("ok")}
	g.bodies.Store(b, struct{}{})
	return &http.Response{StatusCode: 200, Status: "200 OK", Body: b, ContentLength: 2, Request: r}, nil
}

func (g *gate) unclosed() int {
	n := 0
	g.bodies.Range(func(k, _ any) bool {
		if !k.(*trackBody).closed.Load() {
			n++
		}
		return true
	})
	return n
}

func TestHedgedAttemptOfUnsafeRequestFailsWithoutBase(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &gate{release: make(chan struct{})}
		tr := &Transport{Base: g}
		req, _ := http.NewRequest(http.MethodPost, "http://example.test/", strings.NewReader("x"))
		c := tr.newCall(req)

		var first *http.Response
		done := make(chan struct{})
		go func() {
			defer close(done)
			ctx, cancel := context.WithCancel(c)
			defer cancel()
			first, _ = attempt(ctx)
		}()
		synctest.Wait() // the first attempt is in Base

		ctx, cancel := context.WithCancel(c)
		resp, err := attempt(ctx)
		cancel()
		assert.Nil(t, resp)
		require.ErrorIs(t, err, errOnce)
		assert.False(t, resil.IsTransient(err), "marked Permanent")
		assert.Equal(t, int32(1), g.calls.Load(), "the hedged attempt did not call Base")

		close(g.release)
		<-done
		got, err := c.end(first, nil)
		require.NoError(t, err)
		assert.Same(t, first, got)
		got.Body.Close()
	})
}

func TestEndWaitsForRunningAttemptsAndDropsTheirResponses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &gate{release: make(chan struct{})}
		tr := &Transport{Base: g}
		req, _ := http.NewRequest(http.MethodGet, "http://example.test/", nil)
		c := tr.newCall(req)

		// A loser still in Base when the pipeline returns its winner, and
		// whose context nobody cancels.
		go func() { _, _ = attempt(c) }()
		synctest.Wait()

		winner := &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("w"))}
		var ended atomic.Bool
		go func() {
			_, _ = c.end(winner, nil)
			ended.Store(true)
		}()
		synctest.Wait()
		assert.False(t, ended.Load(), "end waits for the running attempt")

		close(g.release)
		synctest.Wait()
		assert.True(t, ended.Load())
		assert.Zero(t, g.unclosed(), "the loser's response was closed before end returned")

		// An attempt that starts after end does not call Base.
		_, err := attempt(c)
		require.ErrorIs(t, err, errFinished)
		assert.Equal(t, int32(1), g.calls.Load())
	})
}

func TestCanceledHedgeLoser(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &gate{release: make(chan struct{})}
		tr := &Transport{Base: g}
		req, _ := http.NewRequest(http.MethodGet, "http://example.test/", nil)
		c := tr.newCall(req)

		loserCtx, cancelLoser := context.WithCancel(c)
		var loserErr error
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, loserErr = attempt(loserCtx)
		}()
		synctest.Wait()
		cancelLoser() // what a hedge does once another attempt has won
		<-done
		require.ErrorIs(t, loserErr, context.Canceled)
		var ae *attemptError
		assert.True(t, errors.As(loserErr, &ae))

		close(g.release)
		winCtx, cancelWin := context.WithTimeout(c, time.Minute)
		resp, err := attempt(winCtx)
		cancelWin() // the stage returns: the body must survive it
		require.NoError(t, err)
		got, err := c.end(resp, nil)
		require.NoError(t, err)
		b, err := io.ReadAll(got.Body)
		require.NoError(t, err)
		assert.Equal(t, "ok", string(b))
		require.NoError(t, got.Body.Close())
		assert.Equal(t, int32(2), g.calls.Load())
	})
}

func TestForeignContext(t *testing.T) {
	resp, err := attempt(context.Background())
	assert.Nil(t, resp)
	require.ErrorIs(t, err, errForeignContext)
	assert.False(t, resil.IsTransient(err))
}

type brokenBase struct {
	resp *http.Response
	err  error
}

func (b brokenBase) RoundTrip(*http.Request) (*http.Response, error) { return b.resp, b.err }

func TestBaseBreakingTheContract(t *testing.T) {
	req, _ := http.NewRequest(http.MethodGet, "http://example.test/", nil)
	p := resil.New[*http.Response]().Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0)})

	resp, err := (&Transport{Base: brokenBase{}, Pipeline: p}).RoundTrip(req)
	assert.Nil(t, resp)
	require.ErrorIs(t, err, errBaseNil)

	body := &trackBody{Reader: strings.NewReader("x")}
	boom := errors.New("boom")
	resp, err = (&Transport{Base: brokenBase{&http.Response{StatusCode: 200, Body: body}, boom}, Pipeline: p}).RoundTrip(req)
	assert.Nil(t, resp)
	require.ErrorIs(t, err, boom)
	assert.True(t, body.closed.Load())
}

// TestUnsafeRequestLastHedgeFailsAfterFirstAnswer: with hedging, a later
// attempt of a POST fails without calling Base; once the one real attempt
// has answered 503, it fails with that attempt's StatusError (what stages
// see), and the caller still gets that 503.
func TestUnsafeRequestLastHedgeFailsAfterFirstAnswer(t *testing.T) {
	body := &trackBody{Reader: strings.NewReader("busy")}
	b := brokenBase{resp: &http.Response{StatusCode: 503, Status: "503 Service Unavailable", Body: body}}
	req, _ := http.NewRequest(http.MethodPost, "http://example.test/", strings.NewReader("x"))
	c := (&Transport{Base: b}).newCall(req)

	_, err1 := attempt(c)
	var se *StatusError
	require.ErrorAs(t, err1, &se)
	_, err2 := attempt(c)
	require.NotErrorIs(t, err2, errOnce)
	var se2 *StatusError
	require.ErrorAs(t, err2, &se2)
	assert.Same(t, se, se2, "the one attempt's failure")
	assert.False(t, resil.IsTransient(err2), "not retried: the request may not be sent again")

	resp, err := c.end(nil, err2) // the error that arrived last
	require.NoError(t, err)
	assert.Equal(t, 503, resp.StatusCode)
	assert.False(t, body.closed.Load(), "returned, not dropped")
}
