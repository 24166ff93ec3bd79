package resilhttp_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is an httptest server that counts the connections it accepted.
type server struct {
	*httptest.Server
	newConns atomic.Int32
}

// newServer starts h on loopback (or, with l non-nil, on l) and closes it
// when the test ends.
func newServer(t testing.TB, h http.HandlerFunc, l net.Listener) *server {
	t.Helper()
	s := &server{Server: httptest.NewUnstartedServer(h)}
	if l != nil {
		s.Listener.Close()
		s.Listener = l
	}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.newConns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// base is a fresh http.Transport whose idle connections are closed when the
// test ends (goleak would see their goroutines otherwise).
func base(t testing.TB) *http.Transport {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// recorder wraps a RoundTripper: it counts the calls, keeps what each
// attempt sent, and tracks whether every response body it handed out was
// closed.
type recorder struct {
	rt http.RoundTripper

	mu     sync.Mutex
	calls  int
	sent   []sent
	bodies []*trackedBody
	reqs   []*http.Request
	errs   []error
	codes  []int
}

type sent struct {
	body          string
	contentLength int64
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var s sent
	s.contentLength = req.ContentLength
	if req.Body != nil {
		b, _ := io.ReadAll(req.Body)
		req.Body.Close()
		s.body = string(b)
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(strings.NewReader(s.body))
		req.ContentLength = s.contentLength
	}
	r.mu.Lock()
	r.calls++
	r.sent = append(r.sent, s)
	r.reqs = append(r.reqs, req)
	r.mu.Unlock()
	resp, err := r.rt.RoundTrip(req)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
	if resp != nil {
		r.codes = append(r.codes, resp.StatusCode)
		tb := &trackedBody{ReadCloser: resp.Body}
		resp.Body = tb
		r.bodies = append(r.bodies, tb)
	}
	return resp, err
}

func (r *recorder) Calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// unclosed counts the bodies handed out and not closed.
func (r *recorder) unclosed() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, b := range r.bodies {
		if !b.closed.Load() {
			n++
		}
	}
	return n
}

type trackedBody struct {
	io.ReadCloser
	closed atomic.Bool
}

func (b *trackedBody) Close() error {
	b.closed.Store(true)
	return b.ReadCloser.Close()
}

// memListener is an in-memory network for tests in a synctest bubble:
// net.Pipe connections, so that every wait is on a channel and the fake
// clock can advance.
type memListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *memListener) Addr() net.Addr { return memAddr{} }

func (l *memListener) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	srv, cli := net.Pipe()
	select {
	case l.conns <- srv:
		return cli, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem.test:80" }
