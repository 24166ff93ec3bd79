package resil

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe" // the type word of an error, for plainTypes
)

// sentinel is a comparable error value that can also match one other error
// under errors.Is (ErrTimeout matches context.DeadlineExceeded).
type sentinel struct {
	msg  string
	also error
}

func (e *sentinel) Error() string { return e.msg }

func (e *sentinel) Is(target error) bool { return e.also != nil && target == e.also }

// ErrTimeout is matched, with errors.Is, by every error a Timeout stage
// returns when its own deadline ended the wrapped stages. It also matches
// context.DeadlineExceeded, so code that only knows the context package
// still recognises it.
var ErrTimeout error = &timeoutSentinel{sentinel{msg: "resil: timeout", also: context.DeadlineExceeded}}

type timeoutSentinel struct{ sentinel }

// Timeout reports true, as net.Error does for timeouts.
func (*timeoutSentinel) Timeout() bool { return true }

// ErrBreakerOpen is returned, as it is, for a call that an open (or full
// half-open) circuit breaker rejected without running the wrapped stages.
// IsTransient reports false for it, so a Retry inside nothing retries it:
// the point of an open breaker is to fail fast.
var ErrBreakerOpen error = &sentinel{msg: "resil: circuit breaker is open"}

// timeoutError is what a Timeout stage returns when its own deadline ended
// its context: it matches ErrTimeout and context.DeadlineExceeded and wraps
// the error the wrapped stages returned.
type timeoutError struct {
	d   time.Duration
	err error
}

func (e *timeoutError) Error() string {
	return "resil: timed out after " + e.d.String() + ": " + e.err.Error()
}

func (e *timeoutError) Unwrap() error { return e.err }

func (e *timeoutError) Is(target error) bool {
	return target == ErrTimeout || target == context.DeadlineExceeded
}

// Timeout reports true, as net.Error does for timeouts.
func (e *timeoutError) Timeout() bool { return true }

// RetryError is returned by a Retry stage that gave up on a retryable error:
// its attempts ran out, or the next wait would have crossed
// RetryPolicy.MaxElapsed or the context's deadline, or a retry budget denied
// the next retry. errors.Is and errors.As see through it to Err. The zero
// RetryError reports 0 attempts and wraps no error.
type RetryError struct {
	Attempts int   // attempts made, the first included
	Err      error // the last attempt's error
}

// Error describes the attempts made and the last error.
func (e *RetryError) Error() string {
	s := "resil: gave up after " + strconv.Itoa(e.Attempts) + " attempt"
	if e.Attempts != 1 {
		s += "s"
	}
	if e.Err == nil {
		return s
	}
	return s + ": " + e.Err.Error()
}

// Unwrap returns the last attempt's error.
func (e *RetryError) Unwrap() error { return e.Err }

// stopError is what Retry returns when its context ended while it was
// waiting, or had ended by the time an attempt failed: it matches the
// context's error and wraps the last attempt's error.
type stopError struct {
	errs [2]error // ctx.Err(), then the last attempt's error; Unwrap returns it without allocating
}

func (e *stopError) Error() string {
	return "resil: " + e.errs[0].Error() + " before the next attempt; last error: " + e.errs[1].Error()
}

func (e *stopError) Unwrap() []error { return e.errs[:] }

// mark is how Permanent and Transient label an error.
type mark uint8

const (
	unmarked mark = iota
	markPermanent
	markTransient
)

// markedError carries a Permanent or Transient mark around an error. It
// adds nothing to the message.
type markedError struct {
	err  error
	mark mark
}

func (e *markedError) Error() string { return e.err.Error() }
func (e *markedError) Unwrap() error { return e.err }

// Permanent marks err as permanent: no Retry stage retries it, whatever its
// RetryIf says, and no Breaker counts it as a failure. errors.Is and
// errors.As see through the mark. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &markedError{err: err, mark: markPermanent}
}

// Transient marks err as transient: every Retry stage retries it while
// attempts, MaxElapsed and the context allow, and every Breaker counts it as
// a failure. errors.Is and errors.As see through the mark. Transient(nil) is
// nil.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &markedError{err: err, mark: markTransient}
}

// maxWalk bounds the errors a walk of a chain looks at. errors.Is never
// returns on a chain that cycles (an Unwrap that returns the error itself
// or an ancestor) and takes 2^n steps on errors.Join(err, err) nested n
// deep; a recursion through a cycle of joins overflows the stack, which
// crashes the program. Retry and Breaker walk every failure's chain, so
// their walks stop after maxWalk errors, as if the chain ended there. The
// bound is far beyond any real chain and costs nothing on one; the worst a
// chain can then do (a join that holds itself: maxWalk nested calls) is a
// few tens of milliseconds.
const maxWalk = 1 << 16

// markOf returns the first Permanent or Transient mark found walking err's
// chain in the order errors.Is walks it (depth-first, outermost first),
// looking at no more than maxWalk errors. It allocates nothing.
func markOf(err error) mark {
	budget := maxWalk
	return markWalk(err, &budget)
}

// markWalk is markOf, with *budget the errors it may still look at.
func markWalk(err error, budget *int) mark {
	for err != nil && *budget > 0 {
		*budget--
		switch e := err.(type) {
		case *markedError:
			return e.mark
		case interface{ Unwrap() error }:
			err = e.Unwrap()
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				if m := markWalk(inner, budget); m != unmarked {
					return m
				}
			}
			return unmarked
		default:
			return unmarked
		}
	}
	return unmarked
}

// IsTransient reports whether err is worth retrying. It walks err's chain as
// errors.Is does (depth-first, outermost first) and at each error applies, in
// order: a Permanent mark means false and a Transient mark true (so the
// outermost mark wins); an error with a method Transient() bool answers for
// itself; context.Canceled and ErrBreakerOpen mean false. The first error
// that matches decides; when none does, the answer is true, because an
// unknown failure is more likely a passing fault than a permanent one.
// IsTransient(nil) is false. It is safe for concurrent use and allocates
// nothing of its own. It never hangs: unlike errors.Is, it stops after
// 65536 errors of the chain, as if the chain ended there, so a chain that
// cycles ends it too.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	budget := maxWalk
	if v, ok := transientRule(err, &budget); ok {
		return v
	}
	return true
}

// transientRule applies rules 2-4 of IsTransient along err's chain and
// reports the first decision, if any, looking at no more than *budget
// errors (see maxWalk).
func transientRule(err error, budget *int) (transient, decided bool) {
	for err != nil && *budget > 0 {
		*budget--
		if e, ok := err.(*markedError); ok {
			return e.mark == markTransient, true
		}
		if t, ok := err.(interface{ Transient() bool }); ok {
			return t.Transient(), true
		}
		if failFast(err) {
			return false, true
		}
		switch e := err.(type) {
		case interface{ Unwrap() error }:
			err = e.Unwrap()
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				if v, ok := transientRule(inner, budget); ok {
					return v, true
				}
			}
			return false, false
		default:
			return false, false
		}
	}
	return false, false
}

// failFast reports whether err itself (not its chain) is context.Canceled or
// ErrBreakerOpen, as one step of errors.Is would find: rule 4 of
// IsTransient. The Is method is looked up once for both.
func failFast(err error) bool {
	if err == context.Canceled || err == ErrBreakerOpen {
		return true
	}
	x, ok := err.(interface{ Is(error) bool })
	return ok && (x.Is(context.Canceled) || x.Is(ErrBreakerOpen))
}

// markedOrTransient is what a Retry stage with the default RetryIf decides:
// the first mark in err's chain (markOf), else IsTransient(err), in one
// walk of the chain instead of two. err is not nil.
func markedOrTransient(err error) bool {
	budget := maxWalk
	m, v, decided := markAndRule(err, &budget)
	switch {
	case m != unmarked:
		return m == markTransient
	case decided:
		return v
	}
	return true
}

// markAndRule walks err's chain as errors.Is does and returns the first
// mark, and the first decision of rules 3-4 of IsTransient (a mark, rule 2,
// ends the walk, so it is only ever the first mark), looking at no more
// than *budget errors (see maxWalk).
func markAndRule(err error, budget *int) (m mark, transient, decided bool) {
	for err != nil && *budget > 0 {
		*budget--
		if e, ok := err.(*markedError); ok {
			return e.mark, transient, decided
		}
		if !decided {
			if t, ok := err.(interface{ Transient() bool }); ok {
				transient, decided = t.Transient(), true
			} else if failFast(err) {
				transient, decided = false, true
			}
		}
		switch e := err.(type) {
		case interface{ Unwrap() error }:
			err = e.Unwrap()
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				im, it, id := markAndRule(inner, budget)
				if im != unmarked {
					return im, transient, decided
				}
				if !decided && id {
					transient, decided = it, true
				}
			}
			return unmarked, transient, decided
		default:
			return unmarked, transient, decided
		}
	}
	return unmarked, transient, decided
}

// retryAfter returns the first RetryAfter hint found in err's chain, in the
// order errors.As looks and asking As methods as it does, looking at no
// more than maxWalk errors. Unlike errors.As it allocates nothing unless
// an error in the chain has an As method.
func retryAfter(err error) (time.Duration, bool) {
	budget := maxWalk
	return hintWalk(err, &budget)
}

// hintWalk is retryAfter, with *budget the errors it may still look at.
func hintWalk(err error, budget *int) (time.Duration, bool) {
	for err != nil && *budget > 0 {
		*budget--
		if h, ok := err.(interface{ RetryAfter() time.Duration }); ok {
			return h.RetryAfter(), true
		}
		if x, ok := err.(interface{ As(any) bool }); ok {
			// As errors.As asks: the target escapes, so only an error
			// with an As method costs an allocation.
			var h interface{ RetryAfter() time.Duration }
			if x.As(&h) && h != nil {
				return h.RetryAfter(), true
			}
		}
		switch e := err.(type) {
		case interface{ Unwrap() error }:
			err = e.Unwrap()
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				if d, ok := hintWalk(inner, budget); ok {
					return d, true
				}
			}
			return 0, false
		default:
			return 0, false
		}
	}
	return 0, false
}

// plainTypes holds the dynamic types of errors found plain: an error of such
// a type has none of the methods the walks above look for (Unwrap of either
// kind, Transient, Is, As, RetryAfter) and is not a mark, so its chain is
// itself alone and it answers nothing: IsTransient's rules see only its
// value (context.Canceled and ErrBreakerOpen are plain too), and it carries
// no RetryAfter hint. A type's methods never change, so an entry never goes
// stale; the slots are filled in turn, and a type that lost its slot is
// found plain again. It spares a Retry that retries a sentinel error (the
// common case) its walks: about 25 ns a retry.
var (
	plainTypes [4]atomic.Pointer[byte] // type words (see typeWord)
	plainNext  atomic.Uint32
)

// typeWord returns the address of err's dynamic type's descriptor: equal
// for two errors exactly when their dynamic types are. err is not nil.
func typeWord(err error) *byte {
	e := any(err)
	return (*byte)((*[2]unsafe.Pointer)(unsafe.Pointer(&e))[0])
}

// isPlain reports whether err's dynamic type is in plainTypes. err is not
// nil.
func isPlain(err error) bool {
	t := typeWord(err)
	for i := range plainTypes {
		if plainTypes[i].Load() == t {
			return true
		}
	}
	return false
}

// notePlain adds err's dynamic type to plainTypes when it is plain. Called
// after the walks found nothing in err, so that only such errors pay for
// the check. err is not nil.
func notePlain(err error) {
	switch err.(type) {
	case interface{ Unwrap() error }, interface{ Unwrap() []error }, *markedError,
		interface{ Transient() bool }, interface{ Is(error) bool },
		interface{ As(any) bool }, interface{ RetryAfter() time.Duration }:
		return
	}
	plainTypes[plainNext.Add(1)%uint32(len(plainTypes))].Store(typeWord(err))
}
