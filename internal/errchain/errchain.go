// Package errchain walks error chains as errors.Is and errors.As do, but
// never hangs and never overflows the stack: errors.Is and errors.As loop
// for ever on a chain that cycles (an Unwrap that returns the error itself
// or an ancestor), take 2^n steps on errors.Join(err, err) nested n deep,
// and recurse without end through a join that holds itself, which crashes
// the program. The walks here stop after MaxWalk errors, as if the chain
// ended there; on every chain shorter than that they answer exactly as
// errors.Is and errors.As do.
package errchain

import "reflect"

// MaxWalk bounds the errors one walk looks at. It is far beyond any real
// chain and costs nothing on one; the worst a chain can then do (a join
// that holds itself: MaxWalk nested calls) is a few tens of milliseconds.
const MaxWalk = 1 << 16

// Is reports errors.Is(err, target), looking at no more than MaxWalk
// errors of err's chain.
func Is(err, target error) bool {
	if err == nil || target == nil {
		return err == target
	}
	budget := MaxWalk
	return is(err, target, reflect.TypeOf(target).Comparable(), &budget)
}

func is(err, target error, comparable bool, budget *int) bool {
	for err != nil && *budget > 0 {
		*budget--
		if comparable && err == target {
			return true
		}
		if x, ok := err.(interface{ Is(error) bool }); ok && x.Is(target) {
			return true
		}
		switch x := err.(type) {
		case interface{ Unwrap() error }:
			err = x.Unwrap()
		case interface{ Unwrap() []error }:
			for _, inner := range x.Unwrap() {
				if is(inner, target, comparable, budget) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}

// As returns what errors.As(err, &e) finds for an e of type E: the first
// error in err's chain that is an E (E may be an interface type), or that
// an As method converts to one, looking at no more than MaxWalk errors of
// the chain.
func As[E any](err error) (E, bool) {
	budget := MaxWalk
	return as[E](err, &budget)
}

func as[E any](err error, budget *int) (E, bool) {
	var zero E
	for err != nil && *budget > 0 {
		*budget--
		if e, ok := err.(E); ok {
			return e, true
		}
		if x, ok := err.(interface{ As(any) bool }); ok {
			var e E
			if x.As(&e) {
				return e, true
			}
		}
		switch x := err.(type) {
		case interface{ Unwrap() error }:
			err = x.Unwrap()
		case interface{ Unwrap() []error }:
			for _, inner := range x.Unwrap() {
				if e, ok := as[E](inner, budget); ok {
					return e, true
				}
			}
			return zero, false
		default:
			return zero, false
		}
	}
	return zero, false
}
