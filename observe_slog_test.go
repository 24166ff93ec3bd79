package resil_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// records parses the JSON handler's output, one record a line, dropping the
// time.
func jsonRecords(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(buf)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "line %q", sc.Text())
		delete(m, slog.TimeKey)
		out = append(out, m)
	}
	require.NoError(t, sc.Err())
	return out
}

func TestSlogObserverRecords(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second})
		fb := func(context.Context, error) (int, error) { return 7, nil }
		p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(10 * msec)}).
			Breaker(b).Named("users").Observe(resil.SlogObserver(l))
		ctx := context.Background()

		// Attempt 1 fails, retried; attempt 2 fails: the breaker trips.
		_, err := p.Run(ctx, obsScript(obsStep{err: errFlaky}, obsStep{err: errFlaky}))
		require.Error(t, err)
		// Rejected, then served by a fallback.
		_, err = p.Fallback(fb).Run(ctx, obsScript())
		require.NoError(t, err)
		// Half-open trial succeeds.
		time.Sleep(time.Second)
		_, err = p.Run(ctx, obsScript())
		require.NoError(t, err)

		const d = float64(time.Millisecond) // JSON durations are nanoseconds
		rec := func(level, event string, kv ...any) map[string]any {
			m := map[string]any{"level": level, "msg": "resil " + event, "pipeline": "users", "event": event, "elapsed": 0.0}
			for i := 0; i < len(kv); i += 2 {
				m[kv[i].(string)] = kv[i+1]
			}
			return m
		}
		want := []map[string]any{
			rec("DEBUG", "attempt", "attempt", 1.0),
			rec("WARN", "retry", "attempt", 1.0, "delay", 10*d, "error", "flaky"),
			rec("DEBUG", "attempt", "attempt", 2.0, "elapsed", 10*d),
			rec("WARN", "state-change", "from", "closed", "to", "open", "elapsed", 10*d),
			rec("ERROR", "failure", "error", "resil: gave up after 2 attempts: flaky", "elapsed", 10*d),

			rec("WARN", "rejected", "error", resil.ErrBreakerOpen.Error()),
			rec("WARN", "fallback", "error", resil.ErrBreakerOpen.Error()),
			rec("DEBUG", "success"),

			rec("INFO", "state-change", "from", "open", "to", "half-open"),
			rec("DEBUG", "attempt", "attempt", 1.0),
			rec("INFO", "state-change", "from", "half-open", "to", "closed"),
			rec("DEBUG", "success"),
		}
		assert.Equal(t, want, jsonRecords(t, &buf))
	})
}

func TestSlogObserverLevels(t *testing.T) {
	for _, c := range []struct {
		e     resil.Event
		level string
	}{
		{resil.Event{Kind: resil.EventAttempt, Attempt: 1}, "DEBUG"},
		{resil.Event{Kind: resil.EventSuccess}, "DEBUG"},
		{resil.Event{Kind: resil.EventRetry, Attempt: 1, Err: errFlaky}, "WARN"},
		{resil.Event{Kind: resil.EventTimeout, Err: resil.ErrTimeout}, "WARN"},
		{resil.Event{Kind: resil.EventRejected, Err: resil.ErrBreakerOpen}, "WARN"},
		{resil.Event{Kind: resil.EventFallback, Err: errFlaky}, "WARN"},
		{resil.Event{Kind: resil.EventFailure, Err: errFlaky}, "ERROR"},
		{resil.Event{Kind: resil.EventStateChange, From: resil.StateClosed, To: resil.StateOpen}, "WARN"},
		{resil.Event{Kind: resil.EventStateChange, From: resil.StateOpen, To: resil.StateHalfOpen}, "INFO"},
		{resil.Event{Kind: resil.EventStateChange, From: resil.StateHalfOpen, To: resil.StateClosed}, "INFO"},
		{resil.Event{Kind: resil.EventKind(42)}, "WARN"},
	} {
		t.Run(c.e.Kind.String()+"-"+c.e.To.String(), func(t *testing.T) {
			var buf bytes.Buffer
			l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			resil.SlogObserver(l).Observe(context.Background(), c.e)
			recs := jsonRecords(t, &buf)
			require.Len(t, recs, 1)
			assert.Equal(t, c.level, recs[0]["level"])
			assert.Equal(t, c.e.Kind.String(), recs[0]["event"])
			assert.Equal(t, "resil "+c.e.Kind.String(), recs[0]["msg"])
		})
	}
}

func TestSlogObserverRespectsLevel(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)}).Named("p").Observe(resil.SlogObserver(l))
	_, err := p.Run(context.Background(), obsScript(obsStep{err: errFlaky}))
	require.NoError(t, err)
	recs := jsonRecords(t, &buf)
	require.Len(t, recs, 1, "attempts and the success are Debug")
	assert.Equal(t, "retry", recs[0]["event"])

	// Nothing is built for a disabled level.
	quiet := resil.New[int]().Named("p").Observe(resil.SlogObserver(l))
	ok := func(context.Context) (int, error) { return 1, nil }
	assert.Zero(t, testing.AllocsPerRun(100, func() { _, _ = quiet.Run(context.Background(), ok) }))
}

func TestSlogObserverNilLoggerPanics(t *testing.T) {
	require.PanicsWithValue(t, "resil: SlogObserver l must be non-nil, got nil", func() { resil.SlogObserver(nil) })
}

// A failed call's error text is written as it is, wrapped errors included.
func TestSlogObserverWrappedError(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, nil))
	err := errors.Join(errFlaky, resil.ErrTimeout)
	resil.SlogObserver(l).Observe(context.Background(), resil.Event{Pipeline: "x", Kind: resil.EventFailure, Err: err})
	recs := jsonRecords(t, &buf)
	require.Len(t, recs, 1)
	assert.Equal(t, err.Error(), recs[0]["error"])
	assert.NotContains(t, recs[0], "attempt", "attempt 0 is left out")
	assert.NotContains(t, recs[0], "delay", "delay belongs to retries")
}

// nilPtrError is an error whose Error method dereferences its receiver: a
// typed nil *nilPtrError panics when its text is asked for.
type nilPtrError struct{ msg string }

func (e *nilPtrError) Error() string { return e.msg }

// panicError is an error whose Error method panics.
type panicError struct{}

func (panicError) Error() string { panic("no text") }

// An error whose Error method panics is written as log/slog writes it; the
// observer does not turn a failed call into a panic.
func TestSlogObserverErrorThatPanics(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"typed nil pointer", (*nilPtrError)(nil), "<nil>"},
		{"panicking Error", panicError{}, "!PANIC: no text"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := slog.New(slog.NewJSONHandler(&buf, nil))
			p := resil.New[int]().Named("p").Observe(resil.SlogObserver(l))
			var err error
			require.NotPanics(t, func() {
				_, err = p.Run(context.Background(), func(context.Context) (int, error) { return 0, c.err })
			})
			require.Equal(t, c.err, err)
			recs := jsonRecords(t, &buf)
			require.Len(t, recs, 1)
			assert.Equal(t, "failure", recs[0]["event"])
			assert.Equal(t, c.want, recs[0]["error"])
		})
	}
}

// offHandler is a slog.Handler that enables no level.
type offHandler struct{ slog.Handler }

func (offHandler) Enabled(context.Context, slog.Level) bool { return false }

// textCounter is an error that counts the calls of its Error method.
type textCounter struct{ calls *int }

func (e textCounter) Error() string { *e.calls++; return "counted" }

// A disabled level costs no allocation and no formatting, whatever the
// event.
func TestSlogObserverDisabledCostsNothing(t *testing.T) {
	o := resil.SlogObserver(slog.New(offHandler{}))
	calls := 0
	for k := resil.EventAttempt; k <= resil.EventStateChange+1; k++ {
		e := resil.Event{Pipeline: "p", Kind: k, Attempt: 2, Err: textCounter{&calls}, Delay: msec, To: resil.StateOpen}
		assert.Zero(t, testing.AllocsPerRun(100, func() { o.Observe(context.Background(), e) }), "%v", k)
	}
	assert.Zero(t, calls, "no error text is built")
}
