package resil_test

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// listen returns a TCP listener on loopback, or skips the test when there
// is none.
func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no loopback TCP: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// fakeDNS answers every query on a loopback UDP socket with rcode, and
// returns a resolver that asks it whatever the machine's DNS configuration
// says.
func fakeDNS(t *testing.T, rcode byte) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no loopback UDP: %v", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return // closed by the cleanup
			}
			if n < 12 {
				continue
			}
			// The query itself, as a response: QR and RA set, RD kept, the
			// rcode given; no answers (the counts of the other sections,
			// an EDNS record, say, stay as they were).
			msg := append([]byte(nil), buf[:n]...)
			msg[2] |= 0x80
			msg[3] = 0x80 | rcode
			msg[6], msg[7] = 0, 0
			_, _ = pc.WriteTo(msg, from)
		}
	})
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
}

// quietTLSServer is an httptest TLS server whose handshake failures are not
// logged.
func quietTLSServer(t *testing.T) *httptest.Server {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// TestIsTransientRealErrors classifies errors that real programs get, made
// for real over loopback: a network failure, a timeout and an unknown
// failure are transient; a cancellation is not, however the standard
// library wraps it. A certificate that fails verification and a name that
// does not exist are unknown failures to IsTransient (rule 5 of the
// contract): transient unless marked Permanent.
func TestIsTransientRealErrors(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel2()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	tests := []struct {
		name  string
		make  func(t *testing.T) error
		is    error // the error is this one, under errors.Is, if set
		want  bool
		check func(t *testing.T, err error) // more about the error, if set
	}{
		{"dial: connection refused", func(t *testing.T) error {
			l := listen(t)
			addr := l.Addr().String()
			l.Close()
			_, err := net.Dial("tcp", addr)
			return err
		}, syscall.ECONNREFUSED, true, nil},
		{"read: connection reset", func(t *testing.T) error {
			l := listen(t)
			c, err := net.Dial("tcp", l.Addr().String())
			require.NoError(t, err)
			defer c.Close()
			s, err := l.Accept()
			require.NoError(t, err)
			require.NoError(t, s.(*net.TCPConn).SetLinger(0)) // close sends RST
			s.Close()
			_, err = c.Read(make([]byte, 1))
			return err
		}, syscall.ECONNRESET, true, nil},
		{"read: deadline on net.Conn", func(t *testing.T) error {
			l := listen(t)
			c, err := net.Dial("tcp", l.Addr().String())
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.SetReadDeadline(time.Unix(1, 0)))
			_, err = c.Read(make([]byte, 1))
			return err
		}, os.ErrDeadlineExceeded, true, nil},
		{"dial: context canceled", func(t *testing.T) error {
			var d net.Dialer
			_, err := d.DialContext(canceled, "tcp", "127.0.0.1:1")
			return err
		}, context.Canceled, false, nil},
		{"dial: context deadline", func(t *testing.T) error {
			var d net.Dialer
			_, err := d.DialContext(expired, "tcp", "127.0.0.1:1")
			return err
		}, context.DeadlineExceeded, true, nil},
		{"DNS: context canceled", func(t *testing.T) error {
			_, err := fakeDNS(t, 0).LookupHost(canceled, "resil-test.invalid.")
			return err
		}, context.Canceled, false, nil},
		{"DNS: no such host (NXDOMAIN)", func(t *testing.T) error {
			_, err := fakeDNS(t, 3).LookupHost(context.Background(), "resil-test.invalid.")
			return err
		}, nil, true, func(t *testing.T, err error) {
			var dns *net.DNSError
			require.ErrorAs(t, err, &dns)
			assert.True(t, dns.IsNotFound, "%v", err)
		}},
		{"DNS: server failure (SERVFAIL)", func(t *testing.T) error {
			_, err := fakeDNS(t, 2).LookupHost(context.Background(), "resil-test.invalid.")
			return err
		}, nil, true, func(t *testing.T, err error) {
			var dns *net.DNSError
			require.ErrorAs(t, err, &dns)
		}},
		{"HTTP: context canceled (url.Error)", func(t *testing.T) error {
			srv := httptest.NewServer(http.NotFoundHandler())
			defer srv.Close()
			req, err := http.NewRequestWithContext(canceled, http.MethodGet, srv.URL, nil)
			require.NoError(t, err)
			_, err = client.Do(req)
			return err
		}, context.Canceled, false, nil},
		{"HTTP: context deadline (url.Error)", func(t *testing.T) error {
			srv := httptest.NewServer(http.NotFoundHandler())
			defer srv.Close()
			req, err := http.NewRequestWithContext(expired, http.MethodGet, srv.URL, nil)
			require.NoError(t, err)
			_, err = client.Do(req)
			return err
		}, context.DeadlineExceeded, true, nil},
		{"HTTP: server closes before responding", func(t *testing.T) error {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					c.Close()
				}
			}))
			defer srv.Close()
			_, err := client.Get(srv.URL)
			return err
		}, io.EOF, true, nil},
		{"HTTP: body cut short", func(t *testing.T) error {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, buf, err := http.NewResponseController(w).Hijack()
				if err == nil {
					_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
					_ = buf.Flush()
					c.Close()
				}
			}))
			defer srv.Close()
			resp, err := client.Get(srv.URL)
			require.NoError(t, err)
			defer resp.Body.Close()
			_, err = io.ReadAll(resp.Body)
			return err
		}, io.ErrUnexpectedEOF, true, nil},
		{"TLS: self-signed certificate", func(t *testing.T) error {
			_, err := client.Get(quietTLSServer(t).URL)
			return err
		}, nil, true, func(t *testing.T, err error) {
			var cv *tls.CertificateVerificationError
			require.ErrorAs(t, err, &cv)
			assert.Contains(t, cv.Err.Error(), "unknown authority")
		}},
		{"TLS: name mismatch", func(t *testing.T) error {
			srv := quietTLSServer(t)
			c, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{
				ServerName: "resil-test.invalid",
				RootCAs:    srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs,
			})
			if err == nil {
				c.Close()
			}
			return err
		}, nil, true, func(t *testing.T, err error) {
			var cv *tls.CertificateVerificationError
			require.ErrorAs(t, err, &cv)
			assert.Contains(t, cv.Err.Error(), "not resil-test.invalid")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.make(t)
			require.Error(t, err)
			t.Logf("%T: %v", err, err)
			if tt.is != nil {
				require.ErrorIs(t, err, tt.is)
			}
			if tt.check != nil {
				tt.check(t, err)
			}
			assert.Equal(t, tt.want, resil.IsTransient(err), "IsTransient(%T %v)", err, err)
			assert.False(t, resil.IsTransient(resil.Permanent(err)), "a mark decides")
			assert.True(t, resil.IsTransient(resil.Transient(err)), "a mark decides")
		})
	}
}
