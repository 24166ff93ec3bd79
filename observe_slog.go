package resil

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
)

// Attribute keys of the records SlogObserver writes. They are stable: log
// queries and dashboards may rely on them.
const (
	slogPipeline = "pipeline" // Event.Pipeline, on every record
	slogEvent    = "event"    // Event.Kind.String(), on every record
	slogAttempt  = "attempt"  // Event.Attempt, when it is > 0
	slogDelay    = "delay"    // Event.Delay, on retry records
	slogElapsed  = "elapsed"  // Event.Elapsed, on every record
	slogError    = "error"    // Event.Err.Error(), when Err is non-nil
	slogFrom     = "from"     // Event.From.String(), on state-change records
	slogTo       = "to"       // Event.To.String(), on state-change records
)

// SlogObserver returns an Observer that writes each event as one structured
// record to l, with the message "resil " followed by the event's kind
// ("resil retry") and these attributes:
//
//	pipeline  string    the pipeline's name (every record)
//	event     string    the kind: attempt, retry, success, ... (every record)
//	attempt   int       the attempt, when the event has one
//	delay     duration  the wait before the next attempt (retry)
//	elapsed   duration  time spent in the call so far (every record)
//	error     string    the error's text, when there is one (an Error
//	                    method that panics gives what log/slog writes for
//	                    it: "<nil>" for a nil pointer, else "!PANIC: ...")
//	from, to  string    closed, open, half-open (state-change)
//
// Levels: attempts and successes are Debug; a breaker that closes or turns
// half-open is Info; retries, timeouts, rejections, fallbacks and a breaker
// that opens are Warn; a call that fails is Error. An event whose level l
// does not enable costs one Enabled call and nothing more.
//
// The returned Observer is safe for concurrent use when l's handler is (the
// handlers of log/slog are). It panics when l is nil.
func SlogObserver(l *slog.Logger) Observer {
	if l == nil {
		panic("resil: SlogObserver l must be non-nil, got nil")
	}
	return slogObserver{l: l}
}

type slogObserver struct{ l *slog.Logger }

// slogMessages are the records' messages, by kind, built once.
var slogMessages = [...]string{
	EventAttempt:     "resil " + EventAttempt.String(),
	EventRetry:       "resil " + EventRetry.String(),
	EventSuccess:     "resil " + EventSuccess.String(),
	EventFailure:     "resil " + EventFailure.String(),
	EventTimeout:     "resil " + EventTimeout.String(),
	EventRejected:    "resil " + EventRejected.String(),
	EventFallback:    "resil " + EventFallback.String(),
	EventStateChange: "resil " + EventStateChange.String(),
}

// slogLevel is the level an event is written at.
func slogLevel(e *Event) slog.Level {
	switch e.Kind {
	case EventAttempt, EventSuccess:
		return slog.LevelDebug
	case EventFailure:
		return slog.LevelError
	case EventStateChange:
		if e.To == StateOpen {
			return slog.LevelWarn
		}
		return slog.LevelInfo
	}
	return slog.LevelWarn
}

func (o slogObserver) Observe(ctx context.Context, e Event) {
	level := slogLevel(&e)
	if !o.l.Enabled(ctx, level) {
		return
	}
	msg := "resil " + e.Kind.String()
	if e.Kind >= 0 && int(e.Kind) < len(slogMessages) {
		msg = slogMessages[e.Kind]
	}
	// At most 8 attributes; an array on the stack rather than a slice built
	// by appending.
	var buf [8]slog.Attr
	attrs := buf[:0]
	attrs = append(attrs,
		slog.String(slogPipeline, e.Pipeline),
		slog.String(slogEvent, e.Kind.String()),
	)
	if e.Attempt > 0 {
		attrs = append(attrs, slog.Int(slogAttempt, e.Attempt))
	}
	if e.Kind == EventRetry {
		attrs = append(attrs, slog.Duration(slogDelay, e.Delay))
	}
	attrs = append(attrs, slog.Duration(slogElapsed, e.Elapsed))
	if e.Err != nil {
		attrs = append(attrs, slog.String(slogError, slogErrorText(e.Err)))
	}
	if e.Kind == EventStateChange {
		attrs = append(attrs, slog.String(slogFrom, e.From.String()), slog.String(slogTo, e.To.String()))
	}
	o.l.LogAttrs(ctx, level, msg, attrs...)
}

// slogErrorText returns err.Error(). An Error method that panics (a typed
// nil pointer whose method dereferences it, most often) gives what log/slog
// writes for such an error: "<nil>" for a nil pointer, else "!PANIC: " and
// the panic's value. Observing a call must not turn its error into a
// panic.
func slogErrorText(err error) (text string) {
	defer func() {
		if r := recover(); r != nil {
			if v := reflect.ValueOf(err); v.Kind() == reflect.Pointer && v.IsNil() {
				text = "<nil>"
				return
			}
			text = fmt.Sprintf("!PANIC: %v", r)
		}
	}()
	return err.Error()
}
