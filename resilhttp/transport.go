// Package resilhttp runs HTTP requests through a resil pipeline, safely.
//
// Transport is an http.RoundTripper: plug it into any http.Client and every
// request runs through its Pipeline, one Base.RoundTrip per attempt.
//
//	client := &http.Client{Transport: &resilhttp.Transport{
//		Pipeline: resil.New[*http.Response]().
//			Timeout(2 * time.Second). // per attempt, until the headers arrive
//			Retry(resil.RetryPolicy{MaxAttempts: 4}),
//	}}
//
// It is safe by default:
//
//   - Only idempotent requests are sent more than once: GET, HEAD, OPTIONS,
//     TRACE, PUT and DELETE, or a request with an Idempotency-Key (or
//     X-Idempotency-Key) header, and only when its body can be replayed
//     (no body, http.NoBody, or GetBody). Every other request gets one
//     attempt; its failures are marked resil.Permanent.
//   - Network errors and the statuses 408, 429 and 5xx (but 501 and 505) are
//     transient; other 4xx, 501, 505, TLS certificate errors and invalid
//     requests are permanent; 1xx-3xx are plain responses, never retried.
//   - A server's Retry-After sets the next wait, capped by MaxRetryAfter, and
//     a Retry stage never begins a wait that would cross the request's
//     deadline: a hostile value cannot stall the client.
//   - What http.Client users expect comes back: when attempts run out on a
//     failure status, the last response with its body intact and a nil
//     error; every other response is drained (up to 4 KiB) and closed, so
//     connections are reused.
package resilhttp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/internal/errchain"
)

// DefaultMaxRetryAfter is the cap on a server's Retry-After when
// Transport.MaxRetryAfter is <= 0.
const DefaultMaxRetryAfter = 30 * time.Second

// Transport is an http.RoundTripper that runs each request through
// Pipeline, calling Base once per attempt.
//
// The zero Transport is usable: Base is http.DefaultTransport and the empty
// pipeline sends each request once, so it behaves like Base, but for
// classifying failures for stages and for closing every response it does
// not return. A Transport is safe for concurrent use by any number of
// goroutines; its fields must not change once it is in use.
//
// Each attempt's outcome is what the pipeline's stages see: a response with
// status 1xx-3xx is a success; 408, 429 and 5xx (but 501 and 505) fail with
// a transient *StatusError; any other 4xx, 501 and 505 fail with a
// *StatusError marked resil.Permanent; an error from Base is passed on,
// marked resil.Permanent when it cannot change on another attempt (a TLS
// certificate error, an invalid address or request). For a request that may
// not be sent twice (see the package documentation) every failure is marked
// resil.Permanent, and an attempt after the first fails with a permanent
// error without calling Base. RoundTrip's own result follows http.Client's
// expectations, described at RoundTrip.
type Transport struct {
	// Base sends each attempt. nil means http.DefaultTransport.
	Base http.RoundTripper
	// Pipeline holds the stages every request runs through, for example
	// resil.New[*http.Response]().Timeout(perTry).Retry(policy). The zero
	// Pipeline sends each request once.
	Pipeline resil.Pipeline[*http.Response]
	// MaxRetryAfter caps the wait a server's Retry-After asks for (see
	// StatusError.Wait). <= 0 means DefaultMaxRetryAfter, 30s.
	MaxRetryAfter time.Duration
}

var (
	errNilGetBody = errors.New("resilhttp: GetBody: returned a nil body (or http.NoBody) and a nil error for a request with a length")
	errOnce       = errors.New("resilhttp: request not sent again: its method is not idempotent and it has no Idempotency-Key, or its body cannot be replayed")
	// errForeignContext: a stage called fn with a context that does not
	// descend from the one Run was given.
	errForeignContext = errors.New("resilhttp: attempt context does not descend from the request's context")
	errFinished       = errors.New("resilhttp: attempt started after RoundTrip returned")
	errNilResponse    = errors.New("resilhttp: pipeline returned neither a response nor an error")
	errBaseNil        = errors.New("resilhttp: Base returned neither a response nor an error")
)

// RoundTrip sends req through t.Pipeline, one t.Base.RoundTrip per attempt,
// and returns a response or an error, never both, as http.RoundTripper
// requires. It does not modify req: the first attempt sends req itself (or
// a shallow copy when a stage gave it its own context); every later one
// sends a copy whose body comes from req.GetBody, with the same
// Content-Length.
//
// What comes back:
//   - the response the pipeline returned (an attempt's, or a Fallback's);
//   - when the pipeline failed on a failure status (attempts ran out, Retry
//     gave up early, the status was permanent, or the request may not be
//     sent again), that attempt's response with its body intact and a nil
//     error, as http.Client users expect;
//   - when req's context has ended, a nil response and an error matching
//     its Err() with errors.Is;
//   - otherwise a nil response and the pipeline's error (ErrBreakerOpen, a
//     network error, ...).
//
// An error that stands for a timeout (req's deadline, a Timeout stage, a
// timeout of Base's, including one behind a *resil.RetryError or a
// resil.Permanent mark) has a Timeout method that reports true, as
// net.Error's does, so url.Error's Timeout reports it as without
// resilhttp.
//
// A Timeout stage bounds an attempt until its response headers arrive (and,
// for a transient failure status, the first 4 KiB of its body): Base is
// given a request whose context is req's own context, cancelled early only
// when the attempt's context ends first. The returned body is bound only by
// req's context. Every response that is not returned is drained (up to
// 4 KiB) and closed before RoundTrip returns; attempts still running when
// the pipeline returns (hedged ones) are waited for first. When a stage
// gave the attempt a context of its own (a Timeout, a Hedge), its body is
// waited for at most 50ms for that: one that stalls is cut off, and does
// not hold up RoundTrip beyond the stages' bounds. A failure response
// whose body goes on beyond 4 KiB does not hold its connection while a
// later attempt runs: the later attempt supersedes it, and closes the rest
// of its body when it starts. A panic in a stage's callback or in Base goes
// on to RoundTrip's caller once the same has been done.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	c := t.newCall(req)
	defer c.abandon() // a panic (or runtime.Goexit) in a stage or in Base
	resp, err := t.Pipeline.Run(c, attempt)
	return c.end(resp, err)
}

// abandon disposes of what the call holds when the pipeline did not return
// (a stage's callback or Base panicked): the responses the attempts
// produced, and the request's body if no attempt sent it. The panic goes
// on to RoundTrip's caller, who may recover it and must not be left with
// busy connections.
func (c *call) abandon() {
	if c.ended {
		return
	}
	c.finish()
	c.dropAllBut(nil)
	c.closeUnsent()
}

func (t *Transport) newCall(req *http.Request) *call {
	c := &call{
		Context: req.Context(),
		req:     req,
		base:    t.Base,
		maxWait: t.MaxRetryAfter,
		replay:  replayable(req),
	}
	if c.base == nil {
		c.base = http.DefaultTransport
	}
	if c.maxWait <= 0 {
		c.maxWait = DefaultMaxRetryAfter
	}
	return c
}

// end turns what the pipeline returned into RoundTrip's result, once no
// attempt runs any more, and disposes of every other response.
func (c *call) end(resp *http.Response, err error) (*http.Response, error) {
	c.finish()
	if err != nil {
		if resp != nil && !c.owns(resp) {
			drop(resp) // a Fallback's value that came with an error
		}
		resp = nil
		if cerr := c.Err(); cerr != nil {
			if !errchain.Is(err, cerr) {
				err = &contextError{cause: cerr, err: err}
			}
		} else if se := statusErrorOf(err); se != nil && c.owns(se.resp) {
			resp, err = se.resp, nil
		} else if errchain.Is(err, errOnce) {
			// A later (hedged) attempt of a request that may not be sent
			// again failed last; the only answer there is came from the
			// one attempt that called Base: its response, or its error.
			if out := c.out.Load(); out != nil {
				resp, err = out, nil
			} else if first := c.once.Load(); first != nil {
				err = *first
			}
		}
		if resp == nil {
			err = asTimeout(err, c.Err())
			if rh, ok := errchain.As[tls.RecordHeaderError](err); ok && c.Err() == nil {
				// An https request answered in plain HTTP: http.Client
				// reports http.ErrSchemeMismatch only for the bare value
				// (a type assertion), as Base returned it. It is permanent:
				// one attempt was made, and its marks say nothing more.
				err = rh
			}
		}
	} else if resp == nil {
		err = errNilResponse
	}
	c.dropAllBut(resp)
	c.closeUnsent()
	c.ended = true
	return resp, err
}

// closeUnsent closes the request's body when Base never saw it, as a
// RoundTripper must.
func (c *call) closeUnsent() {
	if c.attempts.Load() == 0 && c.req.Body != nil {
		_ = c.req.Body.Close()
	}
}

// CloseIdleConnections closes Base's idle connections, if Base has a
// CloseIdleConnections method (http.Transport does). http.Client's method
// of the same name calls it.
func (t *Transport) CloseIdleConnections() {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if ci, ok := base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// replayable reports whether req may be sent more than once: an idempotent
// method (RFC 9110 section 9.2.2) or an Idempotency-Key header (the keys
// net/http itself accepts), and a body that can be sent again.
func replayable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace,
		http.MethodPut, http.MethodDelete:
		return true
	}
	if _, ok := req.Header["Idempotency-Key"]; ok {
		return true
	}
	_, ok := req.Header["X-Idempotency-Key"]
	return ok
}

// call is one RoundTrip: its state, and the context Run is given. Being the
// context lets the attempt function (a plain function, not a closure built
// per call) find the call from whatever context a stage derived from it,
// so a RoundTrip allocates only this struct on its way through the
// pipeline. Its Done, Err and Deadline are those of the request's context.
type call struct {
	context.Context // the request's own context

	req      *http.Request // the caller's request; never modified
	base     http.RoundTripper
	maxWait  time.Duration
	replay   bool         // later attempts may call Base
	ended    bool         // end has run; read and written by RoundTrip's goroutine only
	attempts atomic.Int32 // attempts that went as far as choosing a body

	// state counts the attempts running (between enter and leave) in its
	// low bits and has finishedBit set once RoundTrip stops waiting for
	// attempts. Atomics, not a mutex: every attempt passes here twice.
	state atomic.Uint64
	out   atomic.Pointer[http.Response] // the first response an attempt produced
	once  atomic.Pointer[error]         // the error of the one attempt that called Base, when !replay

	mu   sync.Mutex       // guards more and idle: rare (retried failures, hedges)
	more []*http.Response // the responses produced after out
	idle chan struct{}    // closed when the last running attempt leaves after finish
}

// callKey finds the *call in a context derived from it.
type callKey struct{}

// Value returns the call for callKey and defers to the request's context
// for every other key.
func (c *call) Value(key any) any {
	if _, ok := key.(callKey); ok {
		return c
	}
	return c.Context.Value(key)
}

// attempt is the function every pipeline runs: one call of Base.
func attempt(ctx context.Context) (*http.Response, error) {
	c, ok := ctx.(*call) // no stage gave the attempt its own context
	if !ok {
		if c, ok = ctx.Value(callKey{}).(*call); !ok {
			return nil, resil.Permanent(errForeignContext)
		}
	}
	if !c.enter() {
		return nil, resil.Permanent(errFinished)
	}
	var kept *http.Response
	defer func() { c.leave(kept) }() // also when Base panics: end and abandon wait for it
	resp, kept, err := c.try(ctx)
	if err != nil && !c.replay && !errchain.Is(err, errOnce) {
		first := err // its own variable: only this path allocates
		c.once.CompareAndSwap(nil, &first)
	}
	return resp, err
}

// try makes one attempt with the attempt's context ctx. It returns the
// pipeline's value and error, and the response the call must dispose of or
// return (the value itself, or the response behind a *StatusError).
func (c *call) try(ctx context.Context) (resp, kept *http.Response, err error) {
	n := c.attempts.Add(1)
	if n > 1 && !c.replay {
		if first := c.once.Load(); first != nil {
			// The one attempt has failed: stages (a Fallback, an
			// Observer, a Breaker) see its failure, not errOnce. It is
			// marked permanent already (mark), and its response, if any,
			// is the call's (end returns it).
			return nil, nil, *first
		}
		return nil, nil, resil.Permanent(errOnce)
	}
	var body io.ReadCloser
	if n > 1 {
		if body, err = c.replayBody(); err != nil {
			return nil, nil, resil.Permanent(err)
		}
		c.release()
	}
	// Which context Base gets. The body of the response must outlive the
	// attempt's context (a Timeout stage cancels it when it returns), so
	// Base gets the request's own context, plus a cancel that fires only
	// when the attempt's context ends before the headers are in.
	var (
		bctx   context.Context // nil: the request's own, unchanged
		cancel context.CancelFunc
		stop   func() bool
	)
	if ctx != context.Context(c) {
		if ctx.Done() == c.Done() {
			// A stage added values but no cancellation of its own.
			bctx = ctx
		} else {
			bctx, cancel = context.WithCancel(c.Context)
			stop = context.AfterFunc(ctx, cancel)
		}
	}
	r := c.req
	switch {
	case bctx != nil:
		r = r.WithContext(bctx)
	case n > 1:
		r = r.WithContext(c.Context)
	}
	if n > 1 {
		r.Body = body
	}

	resp, err = c.base.RoundTrip(r)
	switch { // Base broke the RoundTripper contract
	case err == nil && resp == nil:
		err = resil.Permanent(errBaseNil)
	case err != nil && resp != nil:
		if resp.Body != nil {
			_ = resp.Body.Close()
		}
		resp = nil
	}

	if stop != nil {
		if !stop() {
			// The attempt's context ended first and cancelled Base: what
			// came back, if anything, is cut off.
			cancel()
			if err == nil && resp.Body != nil {
				_ = resp.Body.Close()
			}
			return nil, nil, c.mark(&attemptError{err: ctx.Err()})
		}
		if err != nil {
			cancel()
		} else {
			release(resp, cancel)
		}
	}
	if err != nil {
		if permanentError(err, c.req) {
			return nil, nil, resil.Permanent(err)
		}
		return nil, nil, c.mark(err)
	}
	code := resp.StatusCode
	if !failureStatus(code) {
		return resp, resp, nil
	}
	se := &StatusError{StatusCode: code, Status: resp.Status, resp: resp}
	if v := resp.Header["Retry-After"]; len(v) > 0 {
		// Also for a permanent status: stages other than Retry (a
		// Fallback, an Observer) read Wait too.
		se.Wait = c.retryAfter(v[0])
	}
	if !transientStatus(code) {
		return nil, resp, resil.Permanent(se)
	}
	// Its body is read only if a later attempt is made (see release):
	// until then it may be the response RoundTrip returns, at once.
	return nil, resp, c.mark(se)
}

// mark returns err marked permanent when the request may not be sent again.
func (c *call) mark(err error) error {
	if !c.replay {
		return resil.Permanent(err)
	}
	return err
}

// replayBody returns a fresh copy of the request's body for a later
// attempt.
func (c *call) replayBody() (io.ReadCloser, error) {
	switch b := c.req.Body; {
	case b == nil || b == http.NoBody:
		return b, nil
	case c.req.GetBody == nil: // replayable made sure of it; be defensive
		return nil, errOnce
	}
	b, err := c.req.GetBody()
	if err != nil {
		if b != nil {
			_ = b.Close() // returned with the error: ours to close, unused
		}
		return nil, fmt.Errorf("resilhttp: GetBody: %w", err)
	}
	if (b == nil || b == http.NoBody) && c.req.ContentLength != 0 {
		// Sent as no body with the original ContentLength, net/http would
		// refuse it (and a Retry retry that), or, for http.NoBody, send an
		// empty body with Content-Length 0: not what the first attempt
		// sent. With no length to send, no body is what the request says,
		// as net/http's redirects take it.
		return nil, errNilGetBody
	}
	return b, nil
}

// retryAfter turns a Retry-After value into a wait: 0 when absent,
// unparsable or past, else capped at maxWait.
func (c *call) retryAfter(v string) time.Duration {
	d, ok := ParseRetryAfter(v, time.Now())
	if !ok || d <= 0 {
		return 0
	}
	return min(d, c.maxWait)
}

// finishedBit marks a call whose RoundTrip no longer waits for attempts.
const finishedBit = 1 << 32

// enter starts an attempt, unless RoundTrip has finished.
func (c *call) enter() bool {
	for {
		s := c.state.Load()
		if s&finishedBit != 0 {
			return false
		}
		if c.state.CompareAndSwap(s, s+1) {
			return true
		}
	}
}

// leave ends an attempt, keeping the response it produced, if any.
func (c *call) leave(kept *http.Response) {
	if kept != nil && !c.out.CompareAndSwap(nil, kept) {
		c.mu.Lock()
		c.more = append(c.more, kept)
		c.mu.Unlock()
	}
	if c.state.Add(^uint64(0)) == finishedBit { // the last attempt left after finish
		c.mu.Lock()
		if c.idle != nil {
			close(c.idle)
			c.idle = nil
		}
		c.mu.Unlock()
	}
}

// finish stops new attempts and waits for running ones. Afterwards out and
// more no longer change.
func (c *call) finish() {
	if c.state.Or(finishedBit) == 0 {
		return // nothing running: the fast path
	}
	c.mu.Lock()
	if c.state.Load() == finishedBit { // the last one left meanwhile
		c.mu.Unlock()
		return
	}
	idle := make(chan struct{})
	c.idle = idle
	c.mu.Unlock()
	<-idle
}

// owns reports whether resp is a response an attempt produced.
func (c *call) owns(resp *http.Response) bool {
	if resp == nil {
		return false
	}
	if resp == c.out.Load() {
		return true
	}
	for _, r := range c.more {
		if r == resp {
			return true
		}
	}
	return false
}

// release frees the connections that the failure responses of attempts
// that have ended still hold, before a later attempt calls Base: their
// bodies beyond what buffer kept in memory. Such a response is returned
// only when no later attempt answers, and the later attempt may need the
// connection (with Base's MaxConnsPerHost, or HTTP/2's stream limit) or
// the connection pool would grow by one per retry. A body released here
// yields what was kept, then errReleased.
func (c *call) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if out := c.out.Load(); out != nil {
		releaseBody(out)
	}
	for _, r := range c.more {
		releaseBody(r)
	}
}

// dropAllBut drains and closes every response produced but keep.
func (c *call) dropAllBut(keep *http.Response) {
	if out := c.out.Load(); out != nil && out != keep {
		drop(out)
	}
	for _, r := range c.more {
		if r != keep {
			drop(r)
		}
	}
}

// statusErrorOf returns the first *StatusError in err's chain.
func statusErrorOf(err error) *StatusError {
	se, _ := errchain.As[*StatusError](err)
	return se
}

// attemptError is an attempt whose context ended before its response
// headers arrived. It matches the context's error.
type attemptError struct{ err error }

func (e *attemptError) Error() string {
	return "resilhttp: attempt ended before the response headers: " + e.err.Error()
}

func (e *attemptError) Unwrap() error { return e.err }

// asTimeout returns err, RoundTrip's error, with a Timeout method that
// reports true when it stands for a timeout and does not say so itself.
// It stands for one when cerr, the request context's error, is
// context.DeadlineExceeded, or, while the context is live, when the first
// error in err's chain with a Timeout method reports true.
func asTimeout(err, cerr error) error {
	type timeouter interface{ Timeout() bool }
	if te, ok := err.(timeouter); ok && te.Timeout() {
		return err
	}
	if cerr != nil {
		if errchain.Is(cerr, context.DeadlineExceeded) {
			return &timeoutError{err: err}
		}
	} else if te, ok := errchain.As[timeouter](err); ok && te.Timeout() {
		return &timeoutError{err: err}
	}
	return err
}

// timeoutError is what RoundTrip returns for a timeout whose error does not
// say so itself (a *resil.RetryError, a resil.Permanent mark): url.Error's
// Timeout asks only the error itself, not its chain.
type timeoutError struct{ err error }

func (e *timeoutError) Error() string   { return e.err.Error() }
func (e *timeoutError) Unwrap() error   { return e.err }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

// contextError is what RoundTrip returns when the request's context has
// ended and the pipeline's error does not say so: it matches both.
type contextError struct{ cause, err error }

func (e *contextError) Error() string { return "resilhttp: " + e.cause.Error() + ": " + e.err.Error() }

func (e *contextError) Unwrap() []error { return []error{e.cause, e.err} }
