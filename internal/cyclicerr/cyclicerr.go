// Package cyclicerr holds errors whose chains errors.Is and errors.As never
// finish walking, for the tests of every package that walks chains: a walk
// must stop on them (see package errchain).
package cyclicerr

import "errors"

// Self's Unwrap returns itself: a cycle of one error. errors.Is loops on
// it for ever. The zero value is ready to use.
type Self struct{}

func (*Self) Error() string { return "self" }

// Unwrap returns e itself.
func (e *Self) Unwrap() error { return e }

// SelfJoin's Unwrap() []error holds itself, twice: a cycle through a join
// that would also double the paths at every step. errors.Is recurses on it
// until the stack overflows, which crashes the program. The zero value is
// ready to use.
type SelfJoin struct{}

func (*SelfJoin) Error() string { return "self join" }

// Unwrap returns e twice.
func (e *SelfJoin) Unwrap() []error { return []error{e, e} }

// Doubled joins err with itself n times: a tree of n levels that shares
// each level, so it has 2^n paths to its leaf and few nodes. errors.Is
// takes 2^n steps on it.
func Doubled(err error, n int) error {
	for range n {
		err = errors.Join(err, err)
	}
	return err
}
