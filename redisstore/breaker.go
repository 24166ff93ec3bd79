package redisstore

import (
	"context"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/resil-go/resil"
)

// fleetBreaker is one breaker's share of the fleet: the resil.BreakerShare
// the breaker calls on its rare paths, and the state the sync goroutine
// keeps for it.
//
// The fleet's state in Redis is authoritative while Redis answers. The
// breaker's own transitions are proposals: a trip (or a reopen the fleet
// did not hear of) opens the fleet; trials that succeeded while Redis could
// not be asked close a half-open fleet. The fleet's epoch orders them: a
// proposal made against an epoch the fleet has left is dropped, and the
// breaker adopts the fleet's state; but a trip made after the fleet's last
// transition opens a closed fleet whatever epoch the replica knew, when the
// state keeps that transition's time (one written by an earlier version
// may not, and then only a replica new to it may open it so). A sync the
// store gave up on that reaches Redis after a newer one of the store's was
// applied changes nothing.
type fleetBreaker struct {
	s        *Store
	keys     []string // state, counts, trials, syncs
	link     resil.BreakerLink
	openFor  int64 // ms
	halfOpen int64
	seq      atomic.Uint64 // for lease ids
	// sent numbers the syncs sent (each send, a retry's too), from 1:
	// the script ignores one sent before a sync it has applied (see
	// syncScript).
	sent atomic.Uint64

	mu      sync.Mutex
	epoch   uint64 // the fleet's epoch as last adopted
	inc     string // the name of the fleet's state as last adopted: it changes when Redis loses it
	synced  uint64 // the breaker's generation after the last adoption
	version uint64 // bumped when a trial moves the epoch, voiding a sync in flight
	tripped uint64 // the breaker's own trips (BreakerSnapshot.Trips) the fleet knows of: those beyond are news
	// staleReopen is 1 + the epoch whose failed trials' reopen (the fleet
	// had left it) has been counted in tripped; 0 for none.
	staleReopen uint64
	leases      []lease // trial places held
	// orphans are leases whose acquire failed without an answer (a
	// timeout, a lost connection): the script may have run, or may still
	// run (a command on its way), leaving a fleet-wide trial place nobody
	// will settle. Every sync removes them until their lease could have
	// expired, so they do not hold a place until then.
	orphans []orphan
}

// orphan is a lease id to remove, until its lease could have expired.
type orphan struct {
	id    string
	until time.Time
}

// maxOrphans bounds the lease ids kept for removal; beyond it the oldest
// are left to expire with their lease.
const maxOrphans = 64

type lease struct {
	id    string
	epoch uint64
}

// syncRequest is what one sync sends for a breaker, and what its reply is
// applied against.
type syncRequest struct {
	snap     resil.BreakerSnapshot
	epoch    uint64
	inc      string
	version  uint64
	proposal int       // 0 none, 1 open, 2 closed, 3 open and already half-open
	release  []string  // orphaned lease ids to remove (see fleetBreaker.orphans)
	age      int64     // ms since the breaker last tripped, with proposal 1 or 3; else -1
	taken    time.Time // when the request was made: age is as of then
}

// Tripped wakes the sync goroutine, so that the trip reaches the fleet in
// one round trip rather than at the next tick.
func (fb *fleetBreaker) Tripped() {
	fb.s.wake()
}

// AcquireTrial takes a fleet-wide trial place with a lease in Redis: one
// round trip, bounded by Options.Timeout. Without Redis, the breaker
// decides alone.
func (fb *fleetBreaker) AcquireTrial() resil.ShareAnswer {
	if !fb.s.available() {
		return resil.ShareUnavailable
	}
	fb.mu.Lock()
	epoch := fb.epoch
	fb.mu.Unlock()
	// Replica:nonce.seq: a store made again under the same Replica name
	// (a restarted process) takes new ids, not its predecessor's places.
	id := fb.s.opts.Replica + ":" + fb.s.nonce + "." + strconv.FormatUint(fb.seq.Add(1), 10)
	res, err := do(fb.s, func(ctx context.Context) ([]int64, error) {
		return acquireScript.Run(ctx, fb.s.client, []string{fb.keys[0], fb.keys[2]},
			epoch, fb.halfOpen, id, ms(fb.s.opts.TrialLease)).Int64Slice()
	})
	if err != nil {
		// The script may have run, or may still run, and grant a place
		// the breaker will not use (it decides alone now): the syncs give
		// it back.
		fb.orphan(id, time.Now())
		fb.s.wake()
		return resil.ShareUnavailable
	}
	if len(res) != 2 {
		return resil.ShareUnavailable
	}
	switch res[0] {
	case 1:
		fb.mu.Lock()
		fb.leases = append(fb.leases, lease{id: id, epoch: epoch})
		fb.mu.Unlock()
		return resil.ShareYes
	case 0:
		return resil.ShareNo
	}
	return resil.ShareUnavailable
}

// orphan keeps, for the syncs to remove, the id of a lease whose acquire
// failed at now. Its script may have run before, or may run after (a
// command still on its way); the lease lasts TrialLease from then.
// Removing it for twice TrialLease after the failure covers a command
// delayed by up to TrialLease.
func (fb *fleetBreaker) orphan(id string, now time.Time) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	keep := fb.s.opts.TrialLease
	keep += min(keep, math.MaxInt64-keep) // twice TrialLease, saturated
	fb.orphans = append(fb.orphans, orphan{id: id, until: now.Add(keep)})
	if n := len(fb.orphans) - maxOrphans; n > 0 {
		fb.orphans = slices.Delete(fb.orphans, 0, n)
	}
}

// releases returns the ids of the orphaned leases that may still be held,
// forgetting the others. fb.mu must be held.
func (fb *fleetBreaker) releases(now time.Time) []string {
	fb.orphans = slices.DeleteFunc(fb.orphans, func(o orphan) bool { return !now.Before(o.until) })
	if len(fb.orphans) == 0 {
		return nil
	}
	ids := make([]string, len(fb.orphans))
	for i, o := range fb.orphans {
		ids[i] = o.id
	}
	return ids
}

// SettleTrial ends a trial's lease with its outcome: one round trip,
// bounded by Options.Timeout.
func (fb *fleetBreaker) SettleTrial(o resil.TrialOutcome) resil.ShareAnswer {
	fb.mu.Lock()
	if len(fb.leases) == 0 {
		fb.mu.Unlock()
		return resil.ShareUnavailable // no lease held: the breaker settles only granted trials
	}
	l := fb.leases[len(fb.leases)-1]
	fb.leases = fb.leases[:len(fb.leases)-1]
	moved := l.epoch != fb.epoch
	fb.mu.Unlock()
	if moved {
		return resil.ShareNo // the fleet has left this half-open period
	}
	if !fb.s.available() {
		fb.orphan(l.id, time.Now()) // not settled: the syncs give its place back
		return resil.ShareUnavailable
	}
	outcome := 3
	switch o {
	case resil.TrialSucceeded:
		outcome = 1
	case resil.TrialFailed:
		outcome = 2
	}
	res, err := do(fb.s, func(ctx context.Context) ([]int64, error) {
		return settleScript.Run(ctx, fb.s.client, []string{fb.keys[0], fb.keys[2]},
			l.epoch, l.id, outcome, fb.halfOpen, fb.openFor).Int64Slice()
	})
	if err != nil || len(res) != 2 {
		// The settle may not have run: the syncs give the place back (a
		// removal after it ran finds nothing).
		fb.orphan(l.id, time.Now())
		fb.s.wake()
		return resil.ShareUnavailable
	}
	switch res[0] {
	case -1:
		// The fleet left the trial's epoch before this settle: the next
		// sync adopts its state (the breaker makes no transition of its
		// own on a success or an ignored outcome).
		if outcome == 2 {
			fb.mu.Lock()
			if fb.epoch == l.epoch && fb.staleReopen != l.epoch+1 {
				// The breaker reopens on return, as for any failed
				// trial: a trial of a period the fleet has left, its
				// reopen is no news (the next sync adopts the fleet's
				// state). It reopens once, however many of its trials
				// fail so: counted once per epoch. Should the reopen not
				// come, the next sync's adoption, which moves the
				// breaker, sets the count right.
				fb.tripped++
				fb.staleReopen = l.epoch + 1
			}
			fb.mu.Unlock()
		}
		return resil.ShareNo
	case -2:
		// The fleet did not count the success: the lease had expired, or
		// this settle already ran (the client sent it again after losing
		// the reply). The breaker counts it as a local breaker would, so
		// that its trial place is not lost.
		return resil.ShareUnavailable
	}
	if epoch := uint64(res[1]); epoch != l.epoch {
		fb.mu.Lock()
		if fb.epoch == l.epoch {
			// This settle moved the fleet (closed it, or reopened it):
			// the breaker makes the same transition itself on return,
			// and a reopen counts as a trip of its own, which the fleet
			// has heard of.
			fb.epoch = epoch
			fb.version++
			fb.leases = nil
			if outcome == 2 {
				fb.tripped++
			}
		}
		fb.mu.Unlock()
	}
	if res[0] == 1 {
		return resil.ShareYes
	}
	return resil.ShareNo
}

// request takes the breaker's snapshot for a sync, with the transition it
// proposes: one it made itself since the last adoption.
func (fb *fleetBreaker) request() syncRequest {
	snap := fb.link.Snapshot()
	fb.mu.Lock()
	defer fb.mu.Unlock()
	r := syncRequest{snap: snap, epoch: fb.epoch, inc: fb.inc, version: fb.version, release: fb.releases(time.Now()), age: -1, taken: time.Now()}
	// A trip of its own the fleet has not heard of: the snapshot counts
	// the breaker's trips with its state, so one made as the snapshot is
	// taken is in both or neither.
	news := snap.Trips > fb.tripped
	if snap.Gen != fb.synced {
		switch snap.State {
		case resil.StateOpen:
			// Open by a trip (or a failed trial) of its own: a failed
			// trial the fleet settled, and reopened itself, is not news.
			if news {
				r.proposal = 1
			}
		case resil.StateClosed:
			r.proposal = 2
		case resil.StateHalfOpen:
			// Half-open by its own open period's end, after a trip of its
			// own the fleet has not heard of (Redis was down, or OpenFor
			// is shorter than the sync took): the trip is still news to
			// the fleet, which goes half-open too, so that trials decide
			// before anyone closes. Half-open after an open period the
			// fleet gave it, it has nothing to propose.
			if news {
				r.proposal = 3
			}
		}
	}
	if r.proposal == 1 || r.proposal == 3 {
		r.age = snap.SinceTrip.Milliseconds() // timed with the count: the trip proposed
	}
	return r
}

// syncCmd queues the breaker's sync script on pipe.
func (fb *fleetBreaker) syncCmd(ctx context.Context, pipe redis.Pipeliner, r syncRequest) *redis.Cmd {
	s := fb.s
	state := 0
	switch r.snap.State {
	case resil.StateOpen:
		state = 1
	case resil.StateHalfOpen:
		state = 2
	}
	if len(r.release) > 0 {
		// Lease ids are this replica's own and never reused: removing one
		// takes no place another trial holds.
		pipe.ZRem(ctx, fb.keys[2], anys(r.release)...)
	}
	age := r.age
	if age >= 0 {
		age += time.Since(r.taken).Milliseconds() // as of this send: a sync tried again sends the trip's age then
	}
	return syncScript.EvalSha(ctx, pipe, fb.keys, s.opts.Replica, r.snap.Successes, r.snap.Failures,
		r.epoch, r.proposal, fb.openFor, ms(s.stale()), ms(keyTTL), state, ms(r.snap.Remaining), r.inc, age,
		s.nonce, fb.sent.Add(1))
}

// lost drops the fleet's counts when a sync failed: the breaker decides on
// its own counts until Redis answers again.
func (fb *fleetBreaker) lost(r syncRequest) { fb.link.SetFleet(r.snap.Gen, 0, 0) }

// anys returns ids as a []any, as go-redis takes members.
func anys(ids []string) []any {
	out := make([]any, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

// parseReply reads a sync script's reply: {epoch, open, remaining ms,
// successes, failures} and the state's name.
func parseReply(cmd *redis.Cmd) (v [5]int64, inc string, ok bool) {
	vals, err := cmd.Slice()
	if err != nil || len(vals) != 6 {
		return v, "", false
	}
	for i := range v {
		if v[i], ok = vals[i].(int64); !ok {
			return v, "", false
		}
	}
	inc, ok = vals[5].(string)
	return v, inc, ok
}

// adopt applies a sync's reply: the breaker takes the fleet's state when
// they differ, and the rest of the fleet's counts.
func (fb *fleetBreaker) adopt(r syncRequest, cmd *redis.Cmd) {
	v, inc, ok := parseReply(cmd)
	if !ok {
		fb.lost(r)
		return
	}
	epoch, open, remaining := uint64(v[0]), v[1] == 1, fromMs(v[2])
	// fb.mu is held from the version check to the update, Force included
	// (the breaker never calls its share with its own lock held, so this
	// order is safe): a settle that moves the epoch comes wholly before
	// (voiding this reply) or after (seeing this adoption), never between
	// a check and a Force that would undo the transition it expects.
	fb.mu.Lock()
	gen, ok := fb.apply(r, epoch, inc, open, remaining)
	fb.mu.Unlock()
	if ok {
		fb.link.SetFleet(gen, uint64(max(v[3], 0)), uint64(max(v[4], 0)))
	}
}

// ownClose reports whether a reply of epoch and inc to r is the close r
// proposed (the breaker closed on its own, from a half-open period of the
// epoch it knew) and nothing more: the fleet made one transition since
// that epoch, to closed. Its window then holds the outcomes of calls
// admitted since its own close, after every transition the fleet made
// before it: they count in the new epoch, as they would have had the
// fleet closed first.
func ownClose(r syncRequest, epoch uint64, inc string) bool {
	return r.proposal == 2 && epoch == r.epoch+1 && inc == r.inc
}

// apply makes the breaker take the fleet's state from a sync's reply, and
// records it as adopted; it returns the breaker's generation after, and
// whether the reply was applied. fb.mu must be held.
func (fb *fleetBreaker) apply(r syncRequest, epoch uint64, inc string, open bool, remaining time.Duration) (uint64, bool) {
	if fb.version != r.version {
		return 0, false // a trial moved the epoch meanwhile; the next sync starts from there
	}
	moved := epoch != r.epoch || inc != r.inc // another state's epochs are another count
	local := r.snap.State
	// Open, or half-open (open with no time left: Force takes a remaining
	// <= 0 as half-open at the next look). A breaker half-open in a period
	// the fleet has left goes through open too, so that it starts the new
	// period with its trial places free.
	to, need := resil.StateOpen, local == resil.StateClosed || moved
	if !open {
		to, need = resil.StateClosed, local != resil.StateClosed
	}
	gen := r.snap.Gen
	forced := false // the snapshot's generation ended here
	if need {
		g, ok := fb.link.Force(gen, to, remaining)
		if !ok {
			// The breaker made a transition of its own since the
			// snapshot, in the epoch it knew: it stays that epoch's
			// proposal, which the next sync makes against that epoch
			// (dropped if the fleet has left it, and the fleet's state
			// adopted then), never against this reply's. Its transition
			// cleared the fleet's counts it held.
			return 0, false
		}
		gen, forced = g, true
	} else if moved && local == resil.StateClosed && !ownClose(r, epoch, inc) {
		// Closed as the fleet is, but the fleet went through transitions
		// since the epoch the breaker knew (it opened and closed again
		// between two syncs): the outcomes in the breaker's window were
		// admitted before them, and must not count in the new epoch.
		g, ok := fb.link.ClearWindow(gen)
		if !ok {
			return 0, false // it tripped since the snapshot: as when Force loses
		}
		gen, forced = g, true
	}
	if moved {
		fb.leases = nil
		fb.staleReopen = 0 // a state made again may number its epochs anew
	}
	// A settle that reopened the fleet may have counted the trip the
	// breaker makes on its return (see SettleTrial) before this snapshot
	// could: max keeps it. But when this adoption ended the snapshot's
	// generation, that trip will not come (the breaker's settle finds its
	// generation gone): the snapshot's count is the whole count.
	tripped := max(fb.tripped, r.snap.Trips)
	if forced {
		tripped = r.snap.Trips
	}
	fb.epoch, fb.inc, fb.synced, fb.tripped = epoch, inc, gen, tripped
	return gen, true
}
