package resiltest

import (
	"context"
	"net"
	"net/http"
	"sync"
)

// Server serves an http.Handler over in-memory connections (net.Pipe)
// instead of the loopback network. Use it where httptest.Server cannot go:
// inside a testing/synctest bubble, whose fake clock stops while a
// goroutine waits on a socket, but not on a pipe. Requests reach it only
// through Client or Transport, whatever the URL's host. Create it with
// NewServer, inside the bubble that uses it (the zero Server is not
// usable), and Close it before the bubble ends. It is safe for concurrent
// use.
//
// Its transport opens a new connection for every request (no keep-alive),
// so a request never fails for what happened to an earlier one, and
// http.Transport never resends a request on its own after a dropped
// connection: each request a test makes reaches the handler exactly once.
type Server struct {
	// URL is the base URL of the server, "http://resiltest.invalid".
	URL string

	srv  *http.Server
	l    *pipeListener
	tr   *http.Transport
	done chan struct{} // closed when Serve has returned
}

// NewServer starts a Server that serves h.
func NewServer(h http.Handler) *Server {
	l := &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
	s := &Server{
		URL:  "http://resiltest.invalid",
		srv:  &http.Server{Handler: h},
		l:    l,
		done: make(chan struct{}),
	}
	s.tr = &http.Transport{
		DisableKeepAlives: true,
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return l.dial(ctx) },
	}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(l)
	}()
	return s
}

// Client returns an HTTP client whose requests go to s. It panics on a
// Server not made by NewServer.
func (s *Server) Client() *http.Client {
	s.mustBeMade("Client")
	return &http.Client{Transport: s.tr}
}

// Transport returns the transport that connects to s, to use as the base
// of another RoundTripper. It panics on a Server not made by NewServer.
func (s *Server) Transport() *http.Transport {
	s.mustBeMade("Transport")
	return s.tr
}

// Close closes the server, its connections and the transport's idle
// connections, and returns once the server has stopped. Requests still
// being served see their connection closed. Closing it again does nothing
// more. It panics on a Server not made by NewServer.
func (s *Server) Close() {
	s.mustBeMade("Close")
	_ = s.srv.Close()
	s.tr.CloseIdleConnections()
	<-s.done
}

// mustBeMade panics, naming method, unless s was made by NewServer: a nil
// or zero Server has no server to reach, and would otherwise fail later
// with a nil pointer dereference, far from the mistake.
func (s *Server) mustBeMade(method string) {
	switch {
	case s == nil:
		panic("resiltest: Server." + method + " called on a nil *Server: make it with NewServer")
	case s.srv == nil:
		panic("resiltest: Server." + method + " called on a zero Server: make it with NewServer")
	}
}

// pipeListener hands the server ends of net.Pipe connections to Serve.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// dial returns the client end of a new connection once the server has
// accepted its other end.
func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.closed:
		client.Close()
		server.Close()
		return nil, net.ErrClosed
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "resiltest.invalid" }
