package resil

import (
	"math"
	"math/bits"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// RetryBudgetPolicy configures a RetryBudget. The zero value is valid: each
// call allows 0.2 retries over the next 10s, and 10 retries per second are
// always allowed (100 in any 10s).
type RetryBudgetPolicy struct {
	// Ratio is how many retries each call allows while it counts (for
	// TTL): 0.2 lets retries add at most 20% to the calls. 0 means 0.2.
	// Valid: >= 0, not NaN.
	Ratio float64
	// MinPerSecond is how many retries per second are allowed whatever the
	// calls, so that a service with little traffic can still retry: the
	// budget holds MinPerSecond × TTL (in seconds) retries in reserve.
	// 0 means 10. Valid: >= 0, not NaN.
	MinPerSecond float64
	// TTL is how long a call (its deposit) and a retry (its withdrawal)
	// count. 0 means 10s; below 10µs it counts as 10µs. Negative is
	// invalid.
	TTL time.Duration
}

// Validate returns nil when p is a valid policy, or an error naming the
// first invalid field and its value, with the message NewRetryBudget would
// panic with.
func (p RetryBudgetPolicy) Validate() error {
	switch {
	case math.IsNaN(p.Ratio) || p.Ratio < 0:
		return configError("RetryBudgetPolicy.Ratio must be >= 0, got " + strconv.FormatFloat(p.Ratio, 'g', -1, 64))
	case math.IsNaN(p.MinPerSecond) || p.MinPerSecond < 0:
		return configError("RetryBudgetPolicy.MinPerSecond must be >= 0, got " + strconv.FormatFloat(p.MinPerSecond, 'g', -1, 64))
	case p.TTL < 0:
		return configError("RetryBudgetPolicy.TTL must be >= 0, got " + p.TTL.String())
	}
	return nil
}

// ErrRetryBudgetExhausted is matched, with errors.Is, by the error a Retry
// stage returns when its RetryPolicy.Budget denied a retry. That error is
// also a *RetryError (errors.As finds it) holding the attempts made and the
// last attempt's error. It is the Err of the EventRejected a denial reports.
var ErrRetryBudgetExhausted error = &sentinel{msg: "resil: retry budget exhausted"}

// budgetError is what Retry returns when the budget denied a retry: a
// *RetryError for errors.As, ErrRetryBudgetExhausted for errors.Is.
type budgetError struct{ r *RetryError }

func (e *budgetError) Error() string {
	return "resil: retry budget exhausted; " + strings.TrimPrefix(e.r.Error(), "resil: ")
}

func (e *budgetError) Unwrap() error { return e.r }

func (e *budgetError) Is(target error) bool { return target == ErrRetryBudgetExhausted }

const (
	budgetBuckets = 10                // the TTL is kept in buckets of TTL/10
	budgetSlots   = budgetBuckets + 1 // one more, so retries can be kept a full TTL
)

// RetryBudget caps retries relative to calls, in the way of Finagle's and
// Linkerd's retry budgets, so that retries cannot multiply the load on a
// dependency that is down: with N calls, at most Ratio·N retries more, plus
// a small reserve. Share one budget between every Retry stage that calls the
// same dependency (set RetryPolicy.Budget); it may be shared by any number
// of pipelines of any T and is safe for concurrent use. Create it with
// NewRetryBudget; the zero RetryBudget is not usable (RetryPolicy.Validate
// refuses it).
//
// A call is one run of a Retry stage that makes its first attempt, whatever
// its outcome; it counts for TTL. A retry is allowed only when, counting
// itself, the retries of the last TTL stay within Ratio × the calls of the
// last TTL + MinPerSecond × TTL (in seconds). Time is kept in buckets of
// TTL/10, rounded so that the rule holds: a retry counts for between TTL and
// 1.1·TTL, a call for at most TTL (see below). A call's share of a retry is
// spent once: over any stretch of time, retries are at most Ratio × the
// calls made in it or within TTL before it, plus MinPerSecond × TTL for
// each TTL the stretch begins (MinPerSecond × max(stretch, TTL) for a
// stretch of whole TTLs).
//
// Recording a call takes no lock, allocates nothing and, while calls come
// often, reads no clock: it adds one to the counter of the bucket the last
// clock reading fell in, and reads the clock again only every so many calls
// (1 to 64, adapted so that readings come about a quarter to half a bucket
// apart; every call when calls are rare). A call may thus be dated up to
// about half a bucket early, and count for that much less than TTL, never
// more; when traffic falls sharply, the calls made after the fall and
// before the next reading (at most 63) are dated at the last reading, early
// by up to the pause, and may count for less. Asking for a retry, which follows a failure, reads the
// clock and takes a short lock, so that concurrent retries cannot overdraw.
type RetryBudget struct {
	// Read and written by every call, lock-free.
	cur   atomic.Int64  // the bucket calls are dated in: the last clock reading's
	batch atomic.Uint32 // calls of a bucket per clock reading; a power of 2
	last  atomic.Int64  // clock() of the last reading by a call
	// calls[i] is tag<<32 | count for the bucket whose index has i as its
	// remainder by budgetSlots, tag being the index's low 32 bits.
	calls [budgetSlots]atomic.Uint64
	_     [cacheLine]byte // keeps the counters' lines apart from the lock's

	ttl     int64   // TTL in clock() ns, at least 10µs; bucket k starts at ceil(k·ttl/10)
	width   int64   // bucket width in clock() ns: ttl/10, rounded down
	ratio   float64 // retries per call
	reserve float64 // MinPerSecond × TTL

	mu      sync.Mutex
	retries [budgetSlots]budgetBucket // guarded by mu
}

type budgetBucket struct {
	idx int64 // the bucket index n counts for
	n   uint64
}

// maxBudgetBatch is the most calls between two clock readings.
const maxBudgetBatch = 64

// NewRetryBudget returns an empty budget configured by policy: until calls
// are made only the reserve (MinPerSecond × TTL retries) is available. It
// panics when policy is invalid (see RetryBudgetPolicy.Validate).
func NewRetryBudget(policy RetryBudgetPolicy) *RetryBudget {
	mustValid(policy.Validate())
	b := &RetryBudget{ratio: policy.Ratio}
	if b.ratio == 0 {
		b.ratio = 0.2
	}
	perSecond := policy.MinPerSecond
	if perSecond == 0 {
		perSecond = 10
	}
	ttl := policy.TTL
	if ttl == 0 {
		ttl = 10 * time.Second
	}
	b.reserve = perSecond * max(ttl, 10*time.Microsecond).Seconds()
	// At least 10µs, buckets of at least 1µs: a counter's 32-bit tag is
	// taken for a bucket 11·2^32 buckets later (13 hours at 1µs) only when
	// the counter stayed untouched for exactly that long, to the bucket.
	b.ttl = max(int64(ttl), int64(10*time.Microsecond))
	b.width = b.ttl / budgetBuckets
	now := clock()
	idx := b.bucket(now)
	b.cur.Store(idx)
	b.last.Store(now)
	b.batch.Store(1)
	// Counter tags start out naming a bucket already out of the window.
	old := uint64(uint32(idx-2*budgetSlots)) << 32
	for i := range b.calls {
		b.calls[i].Store(old)
		b.retries[i].idx = math.MinInt64
	}
	return b
}

// deposit records a call made now. It takes no lock and allocates nothing;
// while calls come often it reads no clock either: one atomic load of the
// current bucket, one of its counter and one atomic add.
func (b *RetryBudget) deposit() {
	idx := b.cur.Load()
	c := &b.calls[floorMod(idx, budgetSlots)]
	w := c.Load()
	if w&^math.MaxUint32 == uint64(uint32(idx))<<32 && uint32(w) < math.MaxUint32-depositMargin &&
		(uint32(w)+1)&(b.batch.Load()-1) != 0 {
		// An add, not a compare-and-swap, so that concurrent calls do not
		// retry each other out. Should the counter be recycled for a later
		// bucket between the load and the add (this goroutine stalled for a
		// whole TTL), the call counts as made then; retries are still
		// bounded by the calls, only a TTL late. Adds that loaded the same
		// count cannot carry into the tag: the last depositMargin counts
		// of a bucket take depositAt's compare-and-swap, which saturates.
		c.Add(1)
		return
	}
	b.depositAt(clock())
}

// depositMargin is how far below saturation a bucket's call count must be
// for deposit's plain add: more than the goroutines that could load the
// same count before any of them adds.
const depositMargin = 1 << 20

// depositAt records a call made at now, the time just read: it moves the
// current bucket forward, adapts the batch and counts the call, starting
// the bucket's counter if it is the bucket's first call.
func (b *RetryBudget) depositAt(now int64) {
	idx := b.bucket(now)
	b.advance(idx)
	// Readings a quarter bucket apart or less: read half as often; more
	// than half a bucket: twice as often; more than a bucket: every call.
	// Races between concurrent readers only blur the adaptation.
	dt, k := now-b.last.Swap(now), b.batch.Load()
	switch {
	case dt > b.width:
		b.batch.Store(1)
	case dt > b.width/2 && k > 1:
		b.batch.Store(k / 2)
	case dt <= b.width/4 && k < maxBudgetBatch:
		b.batch.Store(k * 2)
	}
	tag := uint64(uint32(idx)) << 32
	c := &b.calls[floorMod(idx, budgetSlots)]
	for {
		w := c.Load()
		var nw uint64
		switch {
		case w&^math.MaxUint32 != tag:
			// A new bucket. (Should the counter hold a later one, because
			// this goroutine stalled for a TTL, the later calls are lost:
			// fewer calls only tighten the budget.)
			nw = tag | 1
		case uint32(w) == math.MaxUint32:
			return // saturated: an uncounted call only tightens the budget
		default:
			nw = w + 1
		}
		if c.CompareAndSwap(w, nw) {
			return
		}
	}
}

// bucket returns the index of the bucket that clock() time now falls in:
// floor(now·10/ttl), computed without overflow. Bucket k starts at
// ceil(k·ttl/10), so any budgetBuckets consecutive buckets span exactly
// TTL, whatever TTL is (buckets of TTL/10 rounded to whole nanoseconds
// would span up to 9ns less, and a retry could stop counting before it is
// TTL old).
func (b *RetryBudget) bucket(now int64) int64 {
	q, r := floorDiv(now, b.ttl), floorMod(now, b.ttl) // r in [0, ttl)
	hi, lo := bits.Mul64(uint64(r), budgetBuckets)
	f, _ := bits.Div64(hi, lo, uint64(b.ttl)) // < budgetBuckets, since r < ttl
	return q*budgetBuckets + int64(f)
}

// advance makes idx the current bucket, unless a later one already is.
func (b *RetryBudget) advance(idx int64) {
	for {
		cur := b.cur.Load()
		if idx <= cur || b.cur.CompareAndSwap(cur, idx) {
			return
		}
	}
}

// take asks for a retry at now and records it when allowed, in the bucket
// it returns (for refund).
func (b *RetryBudget) take(now int64) (int64, bool) {
	idx := b.bucket(now)
	b.advance(idx) // later calls are dated in this bucket, or a later one
	b.mu.Lock()
	defer b.mu.Unlock()
	// A reading that went stale before the lock (this goroutine stalled
	// while others moved the current bucket on) is decided as of the
	// current bucket, itself a reading no later than now: an older bucket
	// would miss the retries made since, and take their slot.
	idx = max(idx, b.cur.Load())
	// Retries count in the current bucket and the budgetBuckets before it:
	// every retry of (now-TTL, now] and possibly some a little older.
	var retries uint64
	for i := range b.retries {
		r := &b.retries[i]
		if r.idx > idx-budgetSlots && r.idx <= idx {
			retries += r.n
		}
	}
	// Calls count in the current bucket and the budgetBuckets-1 before it:
	// calls of (now-TTL, now] only.
	var calls uint64
	for k := int64(0); k < budgetBuckets; k++ {
		j := idx - k
		w := b.calls[floorMod(j, budgetSlots)].Load()
		if uint32(w>>32) == uint32(j) {
			calls += uint64(uint32(w))
		}
	}
	allowed := b.reserve
	if calls > 0 {
		allowed += b.ratio * float64(calls)
	}
	if float64(retries+1) > allowed {
		return idx, false
	}
	r := &b.retries[floorMod(idx, budgetSlots)]
	if r.idx != idx {
		r.idx, r.n = idx, 0
	}
	r.n++
	return idx, true
}

// refund gives back a retry that take recorded in bucket idx and that was
// not made after all (its wait was cut short by the context, or a callback
// announcing it panicked). A bucket that has since been reused no longer
// counts, and is left alone.
func (b *RetryBudget) refund(idx int64) {
	b.mu.Lock()
	if r := &b.retries[floorMod(idx, budgetSlots)]; r.idx == idx && r.n > 0 {
		r.n--
	}
	b.mu.Unlock()
}
