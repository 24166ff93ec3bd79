package resilhttp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
)

// drainLimit bounds what is read of a response that is not returned, as
// net/http's Client does on redirects (2 KiB there): enough for the error
// pages servers send, so the connection goes back to the pool, and not
// enough for a hostile body to keep the client reading.
const drainLimit = 4 << 10

// scratchPool holds the buffers buffer reads into; the bytes kept are copied
// out, so a retry costs one small allocation rather than a 4 KiB one.
var scratchPool = sync.Pool{New: func() any { return new([drainLimit + 1]byte) }}

// buffer reads the body of a failure response, up to drainLimit bytes,
// when a later attempt releases it (see releaseBody): until then the
// response may be the one RoundTrip returns, at once. When the body
// ends within the limit, the original is closed, so its connection goes back
// to the pool before the next attempt; the bytes stay readable in
// resp.Body, for the caller in case this response ends up returned. A body
// longer than that keeps its unread rest attached, until RoundTrip returns
// or a later attempt starts (see call.release).
func buffer(resp *http.Response) {
	body := resp.Body
	if body == nil || body == http.NoBody || resp.ContentLength > drainLimit {
		return
	}
	scratch := scratchPool.Get().(*[drainLimit + 1]byte)
	var (
		n   int
		err error
	)
	for n < len(scratch) && err == nil {
		var m int
		m, err = body.Read(scratch[n:])
		n += m
	}
	kept := bytes.Clone(scratch[:n])
	scratchPool.Put(scratch)
	switch {
	case err == nil: // longer than the limit: keep the rest for a reader
		resp.Body = &bufferedBody{buf: kept, rest: body}
		return
	case err == io.EOF:
		err = nil
	}
	body.Close()
	if len(kept) == 0 && err == nil {
		resp.Body = http.NoBody
		return
	}
	resp.Body = &bufferedBody{buf: kept, err: err}
}

// errReleased is what the body of a failure response reads after its
// start once a later attempt has released its connection (see
// call.release).
var errReleased = errors.New("resilhttp: body not kept: a later attempt was made")

// releaseBody frees the connection held by the body of resp, a failure
// response, keeping in memory what buffer keeps of it (all of a body that
// ends within drainLimit). A success response, or one whose body is all in
// memory already, is left as it is.
func releaseBody(resp *http.Response) {
	if !failureStatus(resp.StatusCode) {
		return
	}
	switch b := resp.Body.(type) {
	case nil, *bufferedBody, *releasedBody:
	default:
		bounded(b, func() { buffer(resp) })
	}
	switch b := resp.Body.(type) {
	case nil, *releasedBody:
	case *bufferedBody:
		if b.rest != nil {
			_ = b.rest.Close()
			resp.Body = &releasedBody{buf: b.buf}
		}
	default:
		if b != http.NoBody { // longer than drainLimit, as its length says
			_ = b.Close()
			resp.Body = &releasedBody{}
		}
	}
}

// releasedBody is the body of a response released by releaseBody.
type releasedBody struct{ buf []byte }

func (b *releasedBody) Read(p []byte) (int, error) {
	if len(b.buf) > 0 {
		n := copy(p, b.buf)
		b.buf = b.buf[n:]
		return n, nil
	}
	return 0, errReleased
}

func (b *releasedBody) Close() error {
	b.buf = nil
	return nil
}

// bufferedBody is a response body whose start has been read already.
type bufferedBody struct {
	buf  []byte
	rest io.ReadCloser // what follows buf; nil when buf is all there is
	err  error         // returned after buf when rest is nil; nil means io.EOF
}

func (b *bufferedBody) Read(p []byte) (int, error) {
	if len(b.buf) > 0 {
		n := copy(p, b.buf)
		b.buf = b.buf[n:]
		return n, nil
	}
	if b.rest != nil {
		return b.rest.Read(p)
	}
	if b.err != nil {
		return 0, b.err
	}
	return 0, io.EOF
}

func (b *bufferedBody) Close() error {
	b.buf = nil
	if b.rest != nil {
		return b.rest.Close()
	}
	return nil
}

// release hands the attempt's context over to resp's body: cancel runs
// when the body is closed or read to its end, or at once when nothing of
// the body is left to read. Until then the body is bound only by the
// request's own context.
func release(resp *http.Response, cancel context.CancelFunc) {
	switch b := resp.Body.(type) {
	case nil:
		cancel()
	case *bufferedBody:
		if b.rest == nil {
			cancel()
		} else {
			b.rest = cancelOnClose(b.rest, cancel)
		}
	default:
		if b == http.NoBody {
			cancel()
		} else {
			resp.Body = cancelOnClose(b, cancel)
		}
	}
}

// cancelOnClose wraps rc so that cancel runs when it is closed or read to
// io.EOF, as net/http's Client does for its timeouts. A body that can also
// be written (a 101 Switching Protocols connection) stays writable and is
// released only by Close.
func cancelOnClose(rc io.ReadCloser, cancel context.CancelFunc) io.ReadCloser {
	if w, ok := rc.(io.ReadWriteCloser); ok {
		return &cancelRWBody{rwc: w, cancel: cancel}
	}
	return &cancelBody{rc: rc, cancel: cancel}
}

type cancelBody struct {
	rc     io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.cancel()
	}
	return n, err
}

func (b *cancelBody) Close() error {
	err := b.rc.Close()
	b.cancel()
	return err
}

type cancelRWBody struct {
	rwc    io.ReadWriteCloser
	cancel context.CancelFunc
}

func (b *cancelRWBody) Read(p []byte) (int, error)  { return b.rwc.Read(p) }
func (b *cancelRWBody) Write(p []byte) (int, error) { return b.rwc.Write(p) }

func (b *cancelRWBody) Close() error {
	err := b.rwc.Close()
	b.cancel()
	return err
}

// drop disposes of a response that is not returned: it reads what is left
// of the body up to drainLimit (unless buffer or releaseBody has done that
// already, the declared length says the end is out of reach, or the body
// is a switched protocol's connection), so the connection can be reused,
// and closes it.
func drop(resp *http.Response) {
	if resp == nil || resp.Body == nil {
		return
	}
	switch b := resp.Body.(type) {
	case *bufferedBody, *releasedBody:
	case io.ReadWriteCloser:
		// A 101 Switching Protocols connection: no end to drain to, and
		// the connection is not the pool's to reuse.
	default:
		if resp.ContentLength <= drainLimit {
			bounded(b, func() { _, _ = io.CopyN(io.Discard, b, drainLimit+1) })
		}
	}
	_ = resp.Body.Close()
}

// drainWait bounds how long a body that an attempt with a context of its
// own produced (one a stage gave it: a Timeout, a Hedge) is waited for once
// its attempt has ended, to drain it or keep its start: what has arrived
// by then is read, and a body that stalls is cut off instead of holding up
// RoundTrip (and a Fallback's answer, or the winner of a hedge) after the
// stages' bounds. http.Transport waits as long for a request's write to
// end before it reuses the connection.
const drainWait = 50 * time.Millisecond

// bounded runs read, which reads body, cancelling body's request after
// drainWait if body is one of an attempt with its own context. Without such
// a context there is nothing to cancel: the request's own context bounds
// read.
func bounded(body io.ReadCloser, read func()) {
	cb, ok := body.(*cancelBody)
	if !ok {
		read()
		return
	}
	t := time.AfterFunc(drainWait, cb.cancel)
	read()
	t.Stop()
}
