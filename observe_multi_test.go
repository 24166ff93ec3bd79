package resil_test

import (
	"context"
	"errors"
	"testing"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tagObserver appends its tag to a shared log on every event.
type tagObserver struct {
	tag string
	log *[]string
}

func (o tagObserver) Observe(context.Context, resil.Event) { *o.log = append(*o.log, o.tag) }

func TestMultiObserverComposition(t *testing.T) {
	var log []string
	a, b, c := tagObserver{"a", &log}, tagObserver{"b", &log}, tagObserver{"c", &log}
	for _, tc := range []struct {
		name string
		obs  []resil.Observer
		want []string // tags reported for one event, in order; nil: MultiObserver returns nil
	}{
		{"none", nil, nil},
		{"only nils", []resil.Observer{nil, nil}, nil},
		{"nested empty", []resil.Observer{resil.MultiObserver(), nil}, nil},
		{"one", []resil.Observer{a}, []string{"a"}},
		{"one among nils", []resil.Observer{nil, b, nil}, []string{"b"}},
		{"in order", []resil.Observer{c, a, b}, []string{"c", "a", "b"}},
		{"the same twice", []resil.Observer{a, a}, []string{"a", "a"}},
		{"nested, flattened in place", []resil.Observer{a, resil.MultiObserver(b, c), a}, []string{"a", "b", "c", "a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := resil.MultiObserver(tc.obs...)
			if tc.want == nil {
				assert.Nil(t, o)
				return
			}
			require.NotNil(t, o)
			log = nil
			o.Observe(context.Background(), resil.Event{Kind: resil.EventSuccess})
			assert.Equal(t, tc.want, log)
		})
	}
}

func TestMultiObserverSingleIsItself(t *testing.T) {
	r := &obsRecorder{}
	assert.Same(t, r, resil.MultiObserver(nil, r).(*obsRecorder))
}

// Every observer sees every event of a pipeline, the same events a single
// observer would.
func TestMultiObserverPipeline(t *testing.T) {
	single, first, second := &obsRecorder{}, &obsRecorder{}, &obsRecorder{}
	base := resil.New[int]().
		Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)}).
		Fallback(func(context.Context, error) (int, error) { return 7, nil }).
		Named("multi")
	fail := func(context.Context) (int, error) { return 0, resil.Transient(errors.New("503")) }

	v, err := base.Observe(single).Run(context.Background(), fail)
	require.NoError(t, err)
	require.Equal(t, 7, v)
	v, err = base.Observe(resil.MultiObserver(first, second)).Run(context.Background(), fail)
	require.NoError(t, err)
	require.Equal(t, 7, v)

	want := kindsOf(single.take())
	require.NotEmpty(t, want)
	assert.Equal(t, want, kindsOf(first.take()))
	assert.Equal(t, want, kindsOf(second.take()))
}

// kindsOf returns the kinds of events, in order.
func kindsOf(events []resil.Event) []resil.EventKind {
	kinds := make([]resil.EventKind, len(events))
	for i, e := range events {
		kinds[i] = e.Kind
	}
	return kinds
}

// A panic in one observer reaches the caller as from a single observer; the
// observers after it miss that event.
func TestMultiObserverPanic(t *testing.T) {
	var log []string
	boom := &panicky{on: resil.EventSuccess, armed: true}
	o := resil.MultiObserver(tagObserver{"before", &log}, boom, tagObserver{"after", &log})
	assert.PanicsWithValue(t, "observer panic", func() {
		o.Observe(context.Background(), resil.Event{Kind: resil.EventSuccess})
	})
	assert.Equal(t, []string{"before"}, log)
	o.Observe(context.Background(), resil.Event{Kind: resil.EventSuccess}) // disarmed now
	assert.Equal(t, []string{"before", "before", "after"}, log)
}
