package resilhttp

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
)

// drainLimit bounds what is read of a response that is not returned, as
// net/http's Client does on redirects (2 KiB there): enough for the error
// pages servers send, so the connection goes back to the pool, and not
// enough for a hostile body to keep the client reading.
const drainLimit = 4 << 10

// scratchPool holds the buffers buffer reads into; the bytes kept are copied
// out, so a retry costs one small allocation rather than a 4 KiB one.
var scratchPool = sync.Pool{New: func() any { return new([drainLimit + 1]byte) }}

// buffer reads the body of a transient failure response, up to drainLimit
// bytes, while the attempt is still bounded by its own context (a body that
// stalls is cut off by a Timeout stage like the headers are). When the body
// ends within the limit, the original is closed, so its connection goes back
// to the pool before the next attempt; the bytes stay readable in
// resp.Body, for the caller in case this response ends up returned. A body
// longer than that keeps its unread rest attached.
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
// of the body up to drainLimit (unless buffer has done that already, or the
// declared length says the end is out of reach), so the connection can be
// reused, and closes it.
func drop(resp *http.Response) {
	if resp == nil || resp.Body == nil {
		return
	}
	if _, done := resp.Body.(*bufferedBody); !done && resp.ContentLength <= drainLimit {
		_, _ = io.CopyN(io.Discard, resp.Body, drainLimit+1)
	}
	_ = resp.Body.Close()
}
