package resiltest

import (
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Reply is one entry of a FlakyHandler's script: how it answers a request.
// The zero Reply answers 200 with the body "OK", once, at once.
type Reply struct {
	// Status is the status code: 0 (meaning 200) or 200 to 999. A 1xx is
	// refused: net/http sends it as an informational response followed by
	// a 200, which the client would see instead.
	Status int
	// RetryAfter, when > 0, is sent as a Retry-After header in whole
	// seconds, rounded up. 0 means no header; negative is invalid. For an
	// HTTP-date, set Header instead.
	RetryAfter time.Duration
	// Header holds more headers to send.
	Header http.Header
	// Body is the response body. "" means http.StatusText(Status), or
	// "status N" for a status with no text.
	Body string
	// Delay is how long the handler waits before it answers. 0 means no
	// wait; negative is invalid. When the request's context ends during
	// the wait (the client gave up), the handler returns without
	// answering.
	Delay time.Duration
	// Drop closes the connection without a response (the client sees an
	// EOF or a reset), by hijacking it. Where the connection cannot be
	// hijacked (HTTP/2, httptest.ResponseRecorder) the handler panics with
	// http.ErrAbortHandler, which a server answers by aborting the response.
	// A FlakyHandler that may drop a connection answers every request with
	// "Connection: close", so that no connection is reused: http.Transport
	// resends a request on its own when a reused connection closes without
	// an answer, and the client would see the next reply, not the drop.
	Drop bool
	// Truncate announces the whole body's Content-Length, sends the first
	// half and closes the connection: the client reads the headers, then
	// an io.ErrUnexpectedEOF from the body. Where the connection cannot be
	// hijacked, the handler just stops writing (a server closes the
	// connection when a response is shorter than it announced).
	Truncate bool
	// Times is how many requests the reply serves. 0 means 1; negative is
	// invalid.
	Times int
}

// FlakyHandler is an http.Handler for httptest servers that answers each
// request with the next reply of its script (Handler) or a seeded random
// one (RandomHandler), and records each request as a Call (Start, End,
// Status; Attempt is the request's number). It is safe for concurrent
// use; concurrent requests take the replies in the order they arrive.
// Create it with Handler or RandomHandler; the zero FlakyHandler is
// Handler(): it answers every request 200 "OK". Its methods panic, naming
// the method, when called on a nil *FlakyHandler.
type FlakyHandler struct {
	replies []Reply
	gen     func(n int) Reply
	close   bool // a reply may drop its connection: reuse none (see Reply.Drop)
	mu      sync.Mutex
	calls   []Call // guarded by mu
}

// Handler returns a FlakyHandler that answers requests with replies, in
// order; when they run out, the last reply repeats forever. With no
// replies every request is answered 200 "OK". It panics, naming the reply,
// the field and its value, when a reply's Times, RetryAfter or Delay is
// negative or its Status is not 0 or a final status code (200 to 999).
//
//	h := resiltest.Handler(
//		resiltest.Reply{Status: 503, RetryAfter: time.Second, Times: 2},
//		resiltest.Reply{Body: "hello"},
//	)
//	srv := httptest.NewServer(h)
func Handler(replies ...Reply) *FlakyHandler {
	for i, r := range replies {
		if r.Times < 0 {
			panic("resiltest: Handler reply " + strconv.Itoa(i+1) + ": Reply.Times must be >= 0, got " + strconv.Itoa(r.Times))
		}
		if r.Status != 0 && (r.Status < 200 || r.Status > 999) {
			panic("resiltest: Handler reply " + strconv.Itoa(i+1) + ": Reply.Status must be 0 or a final status code (200-999), got " + strconv.Itoa(r.Status))
		}
		if r.RetryAfter < 0 {
			panic("resiltest: Handler reply " + strconv.Itoa(i+1) + ": Reply.RetryAfter must be >= 0, got " + r.RetryAfter.String())
		}
		if r.Delay < 0 {
			panic("resiltest: Handler reply " + strconv.Itoa(i+1) + ": Reply.Delay must be >= 0, got " + r.Delay.String())
		}
	}
	h := &FlakyHandler{replies: append([]Reply(nil), replies...)}
	for _, r := range replies {
		h.close = h.close || r.Drop
	}
	return h
}

// HTTPFaults describes the random replies of a RandomHandler. The zero
// value answers every request 200 "OK" at once. The reply to the n-th
// request depends only on Seed and n.
type HTTPFaults struct {
	// Seed picks the sequence; 0 is a seed like any other.
	Seed uint64
	// ErrorRate is the share of requests, in [0, 1], answered with Status.
	ErrorRate float64
	// Status is the status of the failed requests. 0 means 503.
	Status int
	// RetryAfter, when > 0, goes with the failed requests as a Retry-After
	// header (see Reply.RetryAfter). 0 means no header; negative is
	// invalid.
	RetryAfter time.Duration
	// DropRate is the share of requests, in [0, 1], whose connection is
	// closed without a response (see Reply.Drop).
	DropRate float64
	// TruncateRate is the share of requests, in [0, 1], answered with a
	// truncated body (see Reply.Truncate). ErrorRate, DropRate and
	// TruncateRate must add up to at most 1.
	TruncateRate float64
	// Latency delays every reply; Jitter adds a uniformly random delay in
	// [0, Jitter]. 0 means none; negative is invalid for both.
	Latency, Jitter time.Duration
	// Body is the body of the other requests' 200 replies. "" means "OK".
	Body string
}

// Validate returns nil when f is valid, or an error naming the first
// invalid field and its value, with the message RandomHandler panics with.
func (f HTTPFaults) Validate() error {
	rate := func(name string, r float64) error {
		if math.IsNaN(r) || r < 0 || r > 1 {
			return errors.New("resiltest: HTTPFaults." + name + " must be in [0, 1], got " + strconv.FormatFloat(r, 'g', -1, 64))
		}
		return nil
	}
	dur := func(name string, d time.Duration) error {
		if d < 0 {
			return errors.New("resiltest: HTTPFaults." + name + " must be >= 0, got " + d.String())
		}
		return nil
	}
	status := func() error {
		if f.Status != 0 && (f.Status < 200 || f.Status > 999) {
			return errors.New("resiltest: HTTPFaults.Status must be a final status code (200-999), got " + strconv.Itoa(f.Status))
		}
		return nil
	}
	sum := func() error {
		// Rates that add up to 1 in decimal may add up to a hair more in
		// float64 (0.33+0.56+0.11): that is still 1.
		if s := f.ErrorRate + f.DropRate + f.TruncateRate; s > 1+1e-12 {
			return errors.New("resiltest: HTTPFaults.ErrorRate+DropRate+TruncateRate must be <= 1, got " + strconv.FormatFloat(s, 'g', -1, 64))
		}
		return nil
	}
	for _, err := range []error{ // in the order of the fields, the sum after its last
		rate("ErrorRate", f.ErrorRate),
		status(),
		dur("RetryAfter", f.RetryAfter),
		rate("DropRate", f.DropRate),
		rate("TruncateRate", f.TruncateRate),
		sum(),
		dur("Latency", f.Latency),
		dur("Jitter", f.Jitter),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// RandomHandler returns a FlakyHandler whose replies fail, drop, truncate
// and take time at random as f describes, reproducibly from f.Seed. It
// panics when f is invalid (see HTTPFaults.Validate).
func RandomHandler(f HTTPFaults) *FlakyHandler {
	if err := f.Validate(); err != nil {
		panic(err.Error())
	}
	return &FlakyHandler{gen: f.reply, close: f.DropRate > 0}
}

// reply draws the reply to request n, always with the same draws.
func (f HTTPFaults) reply(n int) Reply {
	r := rand.New(rand.NewPCG(f.Seed, uint64(n)))
	u, jitter := r.Float64(), r.Float64()
	rep := Reply{Delay: addSat(f.Latency, part(jitter, f.Jitter)), Body: f.Body}
	switch {
	case u < f.ErrorRate:
		rep.Status, rep.RetryAfter, rep.Body = f.Status, f.RetryAfter, ""
		if rep.Status == 0 {
			rep.Status = http.StatusServiceUnavailable
		}
	case u < f.ErrorRate+f.DropRate:
		rep.Drop = true
	case u < f.ErrorRate+f.DropRate+f.TruncateRate:
		rep.Truncate = true
	}
	return rep
}

// replyFor returns the reply to request n (from 1).
func (h *FlakyHandler) replyFor(n int) Reply {
	if h.gen != nil {
		return h.gen(n)
	}
	if len(h.replies) == 0 {
		return Reply{}
	}
	for _, r := range h.replies {
		c := max(r.Times, 1)
		if n <= c {
			return r
		}
		n -= c
	}
	return h.replies[len(h.replies)-1]
}

// mustBe panics, naming method, when h is nil (see Fake.mustBe).
func (h *FlakyHandler) mustBe(method string) {
	if h == nil {
		panic("resiltest: " + method + " called on a nil *FlakyHandler")
	}
}

// ServeHTTP answers r with the reply of this request and records it. It
// reads r's body to the end before it waits or answers.
func (h *FlakyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mustBe("ServeHTTP")
	var c Call
	ctx := r.Context()
	if d, ok := ctx.Deadline(); ok {
		c.Deadline = d
	}
	h.mu.Lock()
	c.Start, c.seq = time.Now(), seq.Add(1) // under the lock: see Fake.Call
	c.Attempt = len(h.calls) + 1
	idx := len(h.calls)
	h.calls = append(h.calls, c)
	h.mu.Unlock()

	rep := h.replyFor(c.Attempt)
	// Read the body first: net/http watches for the client going away,
	// and ends the request's context, only once the body has been read.
	_, _ = io.Copy(io.Discard, r.Body)
	if rep.Delay > 0 {
		t := time.NewTimer(rep.Delay)
		select {
		case <-ctx.Done():
			t.Stop()
			h.finish(idx, 0, ctx.Err())
			return
		case <-t.C:
		}
	}
	rc := http.NewResponseController(w)
	if rep.Drop {
		h.finish(idx, 0, nil)
		conn, _, err := rc.Hijack()
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		conn.Close()
		return
	}
	status := rep.Status
	if status == 0 {
		status = http.StatusOK
	}
	body := rep.Body
	if body == "" {
		body = http.StatusText(status)
	}
	if body == "" { // a status with no text: a body all the same, so that Truncate can cut it
		body = "status " + strconv.Itoa(status)
	}
	hdr := w.Header()
	for k, vs := range rep.Header {
		hdr[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	if rep.RetryAfter > 0 {
		secs := rep.RetryAfter / time.Second // rounded up without overflowing
		if rep.RetryAfter%time.Second != 0 {
			secs++
		}
		hdr.Set("Retry-After", strconv.FormatInt(int64(secs), 10))
	}
	if hdr.Get("Content-Type") == "" {
		hdr.Set("Content-Type", "text/plain; charset=utf-8")
	}
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	if h.close {
		hdr.Set("Connection", "close")
	}
	h.finish(idx, status, nil)
	w.WriteHeader(status)
	if !rep.Truncate {
		_, _ = w.Write([]byte(body))
		return
	}
	_, _ = w.Write([]byte(body[:len(body)/2]))
	if rc.Flush() == nil {
		if conn, _, err := rc.Hijack(); err == nil {
			conn.Close()
		}
	}
}

func (h *FlakyHandler) finish(idx, status int, err error) {
	h.mu.Lock()
	c := &h.calls[idx]
	c.End, c.Status, c.Err = time.Now(), status, err
	h.mu.Unlock()
}

// Calls returns a copy of the record of every request so far, in the
// order they arrived. A request's End is when its answer began (or the
// connection was dropped); Status is 0 for a dropped connection and for a
// request whose client gave up during the delay (Err is then the
// request context's error).
func (h *FlakyHandler) Calls() []Call {
	h.mustBe("Calls")
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Call(nil), h.calls...)
}

// Count returns the number of requests so far, those still being served
// included.
func (h *FlakyHandler) Count() int {
	h.mustBe("Count")
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.calls)
}
