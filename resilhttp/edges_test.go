package resilhttp_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resilhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestServerRejectsClientCertificateIsPermanent: a client certificate the
// server rejects (alert 48, unknown CA; 116, certificate required) is a
// permanent failure: not retried, not a breaker failure. Over TCP,
// crypto/tls reports a received alert as a *net.OpError "remote error"
// (tls.AlertError only over QUIC). A real loopback TLS server, as in
// TestPermanentTransportErrors.
func TestServerRejectsClientCertificateIsPermanent(t *testing.T) {
	for _, tt := range []struct {
		name    string
		version uint16
		present bool // a client certificate the server does not trust; else none
	}{
		{"TLS 1.3, none: certificate required", tls.VersionTLS13, false},
		{"TLS 1.3, untrusted: unknown certificate authority", tls.VersionTLS13, true},
		{"TLS 1.2, untrusted: unknown certificate authority", tls.VersionTLS12, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
			s.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, MaxVersion: tt.version}
			s.StartTLS()
			t.Cleanup(s.Close)
			tr := s.Client().Transport.(*http.Transport).Clone() // trusts the server
			if tt.present {
				tr.TLSClientConfig.Certificates = s.TLS.Certificates // not signed by a CA the server trusts
			}
			t.Cleanup(tr.CloseIdleConnections)
			rec := &recorder{rt: tr}
			var seen error
			p := retry(3).Fallback(func(_ context.Context, err error) (*http.Response, error) {
				seen = err
				return nil, err
			})
			client := &http.Client{Transport: &resilhttp.Transport{Base: rec, Pipeline: p}}
			resp, err := client.Get(s.URL)
			require.Error(t, err)
			assert.Nil(t, resp)
			assert.Equal(t, 1, rec.Calls(), "the server's certificate rejection is not retried")
			assert.False(t, resil.IsTransient(seen), "and is marked permanent")
		})
	}
}

// TestFailureReturnedAtHeaders: when attempts run out on a failure status,
// RoundTrip returns that response as soon as its headers arrive, as Base
// does, its body intact: a failure's body is read (to free its connection)
// only when a later attempt is made. A 503 whose page streams slowly must
// not hold RoundTrip until the request's deadline (and turn into a
// deadline error), nor keep a Hedge from its answer.
func TestFailureReturnedAtHeaders(t *testing.T) {
	h := func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "partial ")
		w.(http.Flusher).Flush()
		select { // the rest of the page comes late
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
			_, _ = io.WriteString(w, "rest")
		}
	}
	for _, tt := range []struct {
		name string
		p    *resil.Pipeline[*http.Response] // nil: Base alone
		want time.Duration                   // when Base alone would answer
	}{
		{"Base alone", nil, 0},
		{"zero pipeline", &resil.Pipeline[*http.Response]{}, 0},
		{"Retry(1)", ptr(retry(1)), 0},
		// The hedge at 1s frees the first 503's connection first, waiting
		// 50ms at most for its stalled body (an attempt with a context of
		// its own), and answers with its own 503.
		{"Hedge", ptr(resil.New[*http.Response]().Hedge(resil.HedgePolicy{Delay: time.Second})), time.Second + 50*time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, h, func(t *testing.T, s *server, base *http.Transport) {
				var rt http.RoundTripper = base
				if tt.p != nil {
					rt = &resilhttp.Transport{Base: base, Pipeline: *tt.p}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
				start := time.Now()
				resp, err := rt.RoundTrip(req)
				require.NoError(t, err, "the 503, as Base returns it")
				assert.Equal(t, tt.want, time.Since(start), "returned when the headers arrived")
				assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
				_ = resp.Body.Close()
			})
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestDiscardedUpgradeDoesNotHoldRoundTrip: a discarded 101 Switching
// Protocols response is closed, not drained: its body is the connection
// itself, with no end to drain to, and it must not hold RoundTrip until
// the peer speaks or hangs up. Two hedged upgrade requests that both
// succeed make the loser such a response; here a Breaker's OnStateChange,
// called on the first attempt's goroutine after its success, holds that
// attempt's answer back so that the second one wins, deterministically.
func TestDiscardedUpgradeDoesNotHoldRoundTrip(t *testing.T) {
	var hangUp chan struct{} // made in the bubble, so that waiting on it is durable
	h := func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
		_ = brw.Flush()
		<-hangUp // a protocol where the client speaks first
	}
	bubble(t, h, func(t *testing.T, s *server, base *http.Transport) {
		hangUp = make(chan struct{})
		defer func() {
			select {
			case <-hangUp:
			default:
				close(hangUp)
			}
		}()
		hold := make(chan struct{})
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, OnStateChange: func(from, to resil.BreakerState) {
			if from == resil.StateHalfOpen && to == resil.StateClosed {
				<-hold // the first attempt, which succeeded, is held back here
			}
		}})
		_, _ = resil.New[int]().Breaker(b).Run(context.Background(), func(context.Context) (int, error) {
			return 0, resil.Transient(errors.New("down"))
		})
		require.Equal(t, resil.StateOpen, b.State())
		time.Sleep(time.Second) // half-open at the next call

		p := resil.New[*http.Response]().Breaker(b).Hedge(resil.HedgePolicy{Delay: time.Second})
		rt := &resilhttp.Transport{Base: base, Pipeline: p}
		req, _ := http.NewRequest(http.MethodGet, s.URL, nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "test")
		type result struct {
			resp *http.Response
			err  error
			took time.Duration
		}
		done := make(chan result, 1)
		start := time.Now()
		go func() {
			resp, err := rt.RoundTrip(req)
			done <- result{resp, err, time.Since(start)}
		}()
		time.Sleep(time.Second) // the hedge starts and wins at 1s
		synctest.Wait()
		close(hold) // the first attempt goes on; its response is the loser's
		time.Sleep(time.Second)
		var got result
		select {
		case got = <-done:
			assert.LessOrEqual(t, got.took, time.Second+50*time.Millisecond, "RoundTrip held by the discarded upgrade")
		default:
			t.Errorf("RoundTrip still waiting %v after the hedge won: draining the discarded 101's connection", time.Since(start)-time.Second)
			close(hangUp)
			got = <-done
		}
		require.NoError(t, got.err)
		assert.Equal(t, http.StatusSwitchingProtocols, got.resp.StatusCode)
		_ = got.resp.Body.Close()
	})
}

// TestHedgedPOSTStagesSeeTheRealFailure: stages see a failure status as
// its StatusError. For a POST under a Hedge, the one attempt that may call
// Base answers 503 before the hedge delay; the hedged attempt, which may
// not send the request again, fails with that same StatusError, so a
// Fallback (an Observer, a Breaker) outside the Hedge sees the 503, not
// "request not sent again".
func TestHedgedPOSTStagesSeeTheRealFailure(t *testing.T) {
	h := func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}
	bubble(t, h, func(t *testing.T, s *server, base *http.Transport) {
		var seen error
		p := resil.New[*http.Response]().Hedge(resil.HedgePolicy{Delay: time.Second}).
			Fallback(func(_ context.Context, err error) (*http.Response, error) {
				seen = err
				return nil, err
			})
		client := &http.Client{Transport: &resilhttp.Transport{Base: base, Pipeline: p}}
		resp, err := client.Post(s.URL, "text/plain", strings.NewReader("charge"))
		require.NoError(t, err)
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "RoundTrip's own answer is right")
		_ = resp.Body.Close()
		var se *resilhttp.StatusError
		assert.ErrorAs(t, seen, &se, "the Fallback saw: %v", seen)
	})
}

// closeTracker is a request body that records whether it was closed.
type closeTracker struct {
	io.Reader
	closed bool
}

func (b *closeTracker) Close() error { b.closed = true; return nil }

// TestGetBodyErrorClosesItsBody: a GetBody that fails but returns a body
// too has that body closed, not leaked; the retry it was for fails with
// GetBody's error.
func TestGetBodyErrorClosesItsBody(t *testing.T) {
	errGetBody := errors.New("body gone")
	h := func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}
	bubble(t, h, func(t *testing.T, s *server, base *http.Transport) {
		var returned *closeTracker
		req, _ := http.NewRequest(http.MethodPut, s.URL, strings.NewReader("x"))
		req.GetBody = func() (io.ReadCloser, error) {
			returned = &closeTracker{Reader: strings.NewReader("x")}
			return returned, errGetBody
		}
		var seen error
		p := retry(2).Fallback(func(_ context.Context, err error) (*http.Response, error) {
			seen = err
			return nil, err
		})
		resp, err := (&resilhttp.Transport{Base: base, Pipeline: p}).RoundTrip(req)
		if err == nil {
			_ = resp.Body.Close()
		}
		require.ErrorIs(t, seen, errGetBody, "the retry failed on GetBody")
		require.NotNil(t, returned)
		assert.True(t, returned.closed, "the body GetBody returned with its error is closed")
	})
}

// TestContentLengthWithoutBodyIsPermanent: a request that declares a
// ContentLength but has no Body is refused by http.Transport every time:
// a permanent failure, not retried.
func TestContentLengthWithoutBodyIsPermanent(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(s.Close)
	tr := s.Client().Transport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	rec := &recorder{rt: tr}
	var seen error
	p := retry(3).Fallback(func(_ context.Context, err error) (*http.Response, error) {
		seen = err
		return nil, err
	})
	req, _ := http.NewRequest(http.MethodPut, s.URL, nil)
	req.ContentLength = 5
	resp, err := (&resilhttp.Transport{Base: rec, Pipeline: p}).RoundTrip(req)
	require.Error(t, err)
	assert.Nil(t, resp)
	assert.Equal(t, 1, rec.Calls(), "not retried")
	assert.False(t, resil.IsTransient(seen), "marked permanent")
}
