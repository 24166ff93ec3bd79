package resilhttp_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resilhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHedgeWinnerBodyOutlivesTheRace: the first attempt hangs, the hedge
// wins; the loser is cancelled and its connection closed before RoundTrip
// returns, and the winner's body, read after the hedge stage has cancelled
// its attempts' context, arrives whole.
func TestHedgeWinnerBodyOutlivesTheRace(t *testing.T) {
	var hits atomic.Int32
	h := func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			select { // the slow one: answers only when cancelled
			case <-r.Context().Done():
			case <-time.After(time.Hour):
			}
			return
		}
		_, _ = io.WriteString(w, "head ")
		w.(http.Flusher).Flush()
		time.Sleep(3 * time.Second)
		_, _ = io.WriteString(w, "tail")
	}
	bubble(t, h, func(t *testing.T, s *server, base *http.Transport) {
		rec := &recorder{rt: base}
		p := resil.New[*http.Response]().Hedge(resil.HedgePolicy{Delay: time.Second})
		client := &http.Client{Transport: &resilhttp.Transport{Base: rec, Pipeline: p}}
		start := time.Now()
		resp, err := client.Get(s.URL)
		require.NoError(t, err)
		assert.Equal(t, time.Second, time.Since(start), "the hedge answered after its delay")
		assert.Equal(t, "head tail", readBody(t, resp))
		assert.Equal(t, 4*time.Second, time.Since(start))
		assert.Equal(t, 2, rec.Calls())
		assert.Zero(t, rec.unclosed())
	})
}

// TestHedgeNeverResendsPOST: a POST is not hedged: the hedged attempt fails
// without calling Base, and the caller gets the one real answer.
func TestHedgeNeverResendsPOST(t *testing.T) {
	var hits atomic.Int32
	h := func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		time.Sleep(3 * time.Second)
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}
	bubble(t, h, func(t *testing.T, s *server, base *http.Transport) {
		p := resil.New[*http.Response]().Hedge(resil.HedgePolicy{Delay: time.Second, MaxHedges: 3})
		client := &http.Client{Transport: &resilhttp.Transport{Base: base, Pipeline: p}}
		resp, err := client.Post(s.URL, "text/plain", strings.NewReader("charge the card"))
		require.NoError(t, err)
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		assert.Equal(t, "busy\n", readBody(t, resp))
		assert.Equal(t, int32(1), hits.Load())
	})
}

// refusingRT fails every request as a refused connection would.
type refusingRT struct{ calls atomic.Int32 }

func (rt *refusingRT) RoundTrip(r *http.Request) (*http.Response, error) {
	rt.calls.Add(1)
	if r.Body != nil {
		_ = r.Body.Close()
	}
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
}

// TestHedgedPOSTKeepsItsNetworkError: the one attempt of a POST fails
// without a response; the hedge scheduled after it may not send the POST
// again and fails last, but the caller gets the attempt's network error,
// as without Hedge.
func TestHedgedPOSTKeepsItsNetworkError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := &refusingRT{}
		p := resil.New[*http.Response]().Hedge(resil.HedgePolicy{Delay: 20 * time.Millisecond})
		client := &http.Client{Transport: &resilhttp.Transport{Base: base, Pipeline: p}}
		_, err := client.Post("http://127.0.0.1:1/", "text/plain", strings.NewReader("charge"))
		require.ErrorIs(t, err, syscall.ECONNREFUSED)
		var op *net.OpError
		assert.ErrorAs(t, err, &op)
		assert.Equal(t, int32(1), base.calls.Load(), "sent once")
	})
}

// TestHedgeLoserCancelled: the slow first attempt loses to the hedge; it
// is cancelled when the race ends and leaves nothing open.
func TestHedgeLoserCancelled(t *testing.T) {
	var hits atomic.Int32
	h := func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		if n == 1 {
			time.Sleep(1500 * time.Millisecond)
		}
		_, _ = io.WriteString(w, "answer")
	}
	bubble(t, h, func(t *testing.T, s *server, base *http.Transport) {
		rec := &recorder{rt: base}
		p := resil.New[*http.Response]().Hedge(resil.HedgePolicy{Delay: time.Second, MaxHedges: 1})
		client := &http.Client{Transport: &resilhttp.Transport{Base: rec, Pipeline: p}}
		start := time.Now()
		resp, err := client.Get(s.URL)
		require.NoError(t, err)
		assert.Equal(t, time.Second, time.Since(start))
		assert.Equal(t, "answer", readBody(t, resp))
		assert.Equal(t, 2, rec.Calls())
		assert.Zero(t, rec.unclosed())
	})
}
