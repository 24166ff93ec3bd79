package redisstore

import "github.com/redis/go-redis/v9"

// The Lua scripts the store runs. Each runs atomically on the server and
// reads the server's clock (TIME), so the fleet's deadlines never depend on
// the replicas' clocks agreeing. Times are milliseconds.
//
// A breaker's fleet state lives in four keys sharing one hash tag (one
// cluster slot):
//
//	state   hash: epoch (a counter bumped by every fleet transition),
//	        open (0/1), until (end of the open period; open and past it
//	        means half-open), passed (trials that succeeded this half-open),
//	        since (when the last transition was made; 0 when seeded closed
//	        after a loss; absent when written by an earlier version), inc
//	        (the state's name)
//	counts  hash: replica -> "epoch successes failures stamp", each
//	        replica's own window counts as of its last sync
//	trials  sorted set: half-open trial leases, scored by their expiry
//	syncs   hash: replica:nonce (one store instance) -> "sequence stamp",
//	        the highest sync sequence applied for it and when; kept for
//	        the keys' ttl after that

// timeLua sets now to the server's time in milliseconds.
const timeLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// syncScript publishes a replica's counts (and, with a proposal, its own
// transition) and returns the fleet's state and the rest of the fleet's
// counts.
//
// A sync the replica gave up on (Options.Timeout) may still reach Redis
// later, after newer ones: it is late, and changes nothing (see late
// below).
//
// KEYS: state, counts, trials, syncs
// ARGV: replica, successes, failures, known epoch, proposal (0 none,
// 1 open, 2 closed, 3 open with its open period passed), openFor,
// stale (counts older than this are dropped),
// ttl (of the keys), the replica's state (0 closed, 1 open, 2 half-open),
// what is left of its open period, the name of the state it knew ("" for
// none yet), how long ago it tripped (ms, with proposal 1 or 3; else -1),
// the store's nonce, the sync's sequence (numbering the store's sends of
// this breaker's syncs, from 1)
// Returns: {epoch, open, remaining open ms, successes, failures, the
// state's name}
var syncScript = redis.NewScript(timeLua + `
local st = redis.call('HMGET', KEYS[1], 'epoch', 'open', 'until', 'inc', 'since')
local epoch = tonumber(st[1]) or 0
local open = st[2] == '1'
local till = tonumber(st[3]) or 0
local inc = st[4]
local since = tonumber(st[5]) or 0
-- kept: the state holds since (0 when seeded closed after a loss, with no
-- transition yet); a state written by a version that kept none lacks it.
local kept = st[5] ~= false
-- made: the state has made no transition yet (it is made by this run, the
-- fleet's first or one after a loss, or was named by an earlier run that
-- made none: every transition writes its epoch): its last transition is
-- none, and since is this version's to keep.
local made = not st[4] or not st[1]
if not inc then
	-- A state made now (the fleet's first, or one after a loss) gets a
	-- name, so that a replica that knew another can tell.
	inc = ARGV[1] .. '@' .. now
	redis.call('HSET', KEYS[1], 'inc', inc)
end
local ttl = tonumber(ARGV[8])
-- late: a sync of this store instance (the replica's name and the store's
-- nonce: a restarted process numbers its syncs afresh, unbound by its
-- predecessor's) newer than this one has been applied. This one was sent
-- before it, and given up on (or is the client's resend of one applied):
-- everything it says, the newer one said again or made obsolete (a trip
-- the fleet had not heard of is proposed again until one is applied, and
-- its age, as of the send, would date it after transitions made since).
-- It changes nothing (but names a state that had no name, as any sync
-- does); its reply is the fleet's state as it is.
local instance = ARGV[1] .. ':' .. ARGV[13]
local last = redis.call('HGET', KEYS[4], instance)
local late = false
if last then
	last = tonumber(string.match(last, '^(%d+) '))
	late = last ~= nil and tonumber(ARGV[14]) <= last
end
if not late and redis.call('HSET', KEYS[4], instance, ARGV[14] .. ' ' .. now) == 1 then
	-- A store instance's first sync applied (a process started): the
	-- records of instances with none applied for ttl go, as their keys
	-- would have had they been the last to use them.
	local all = redis.call('HGETALL', KEYS[4])
	for i = 1, #all, 2 do
		local ts = tonumber(string.match(all[i + 1], ' (%d+)$'))
		if ts == nil or now - ts > ttl then
			redis.call('HDEL', KEYS[4], all[i])
		end
	end
end
local known = tonumber(ARGV[4])
local proposal = tonumber(ARGV[5])
-- trip: this replica proposes a trip (or a failed trial the fleet did not
-- hear of), opening for tripMs (1: OpenFor; 3: its open period has passed
-- on the replica, half-open at once)
local trip = proposal == 1 or proposal == 3
local tripMs = 0
if proposal == 1 then tripMs = tonumber(ARGV[6]) end
-- othersTrial reports whether a replica other than this one holds a live
-- trial lease (ids are replica:nonce.sequence; replica:sequence from an
-- earlier version). This one's own may be a lease whose acquire timed out
-- on the replica after the script ran.
local function othersTrial()
	redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
	local mine = ARGV[1] .. ':'
	for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
		local rest = string.sub(id, #mine + 1)
		if string.sub(id, 1, #mine) ~= mine or not (string.match(rest, '^%x+%.%d+$') or string.match(rest, '^%d+$')) then
			return true
		end
	end
	return false
end
local mine = tonumber(ARGV[9])
-- fresh reports whether this replica proposes a trip of its own made after
-- the fleet's last transition (ARGV[12]: how long ago it tripped, -1 for no
-- trip proposed).
local function fresh()
	local age = tonumber(ARGV[12])
	return age >= 0 and now - age >= since
end
-- enter makes e the fleet's epoch and puts it in a new state: open for
-- openMs from now (0: half-open at once), or closed; trial places clear.
local function enter(e, isOpen, openMs)
	epoch, open = e, isOpen
	if isOpen then
		till = now + openMs
		redis.call('HSET', KEYS[1], 'epoch', epoch, 'open', 1, 'until', till, 'passed', 0, 'since', now)
	else
		redis.call('HSET', KEYS[1], 'epoch', epoch, 'open', 0, 'passed', 0, 'since', now)
	end
	redis.call('DEL', KEYS[3])
end
-- what is left of this replica's own open period (0 when half-open)
local mineOpenMs = 0
if mine == 1 then mineOpenMs = tonumber(ARGV[10]) end
if late then
	-- superseded: the fleet's state is as it is
elseif known <= epoch and ARGV[11] ~= '' and ARGV[11] ~= inc then
	-- The state was lost since this replica last synced, and another
	-- replica seeded it again, knowing less than this one may: an open
	-- period of this one's is news to a fleet seeded closed, as a trip is,
	-- unless the fleet has made a transition since (it has served a trip
	-- and recovered, or seeded open and closed again): then only a trip
	-- of this one's made after it is.
	if mine ~= 0 and not open and (since == 0 or fresh()) then
		enter(epoch + 1, true, mineOpenMs)
	end
elseif known > epoch then
	-- The fleet's epochs only grow: its state was lost (a restart without
	-- persistence, a flush, expiry). The first replica to report seeds it
	-- again from its own state, in a new epoch. A state seeded open since
	-- the loss, by a replica that knew fewer epochs, stays open: its trip
	-- is news to this replica too.
	if open then
		local left = math.max(till - now, 0)
		if mine == 1 then left = math.max(left, mineOpenMs) end
		enter(known + 1, true, left)
	elseif mine ~= 0 and (since == 0 or fresh()) then
		enter(known + 1, true, mineOpenMs)
	else
		-- Closed it stays (this replica is closed, or its open period is
		-- one the fleet has served since the loss), in a new epoch. Its
		-- last transition is what it was: none since the loss when the
		-- state was seeded closed, so that a trip made since by a replica
		-- yet to sync is still news.
		enter(known + 1, false, 0)
		if kept or made then
			redis.call('HSET', KEYS[1], 'since', since)
		else
			-- written by an earlier version: its last transition's time
			-- stays unknown
			redis.call('HDEL', KEYS[1], 'since')
		end
	end
elseif known == epoch then
	if trip and (not open or now >= till) then
		enter(epoch + 1, true, tripMs)
	elseif proposal == 2 and open and now >= till and not othersTrial() then
		-- trials that succeeded while the fleet could not be asked (or
		-- one that outlived its lease), unless another replica's trial
		-- holds a place now: that one decides
		enter(epoch + 1, false, 0)
	end
elseif trip and not open and (ARGV[11] == '' or kept) and fresh() then
	-- This replica is behind the fleet's epochs (its first sync, or the
	-- fleet opened and closed again between two of its syncs) and tripped
	-- on its own calls. The trip is news to a closed fleet all the same, if
	-- it came after the fleet's last transition (ARGV[12]: how long ago it
	-- tripped): an older one was made before the fleet closed (a sync may
	-- have run, its reply lost, and the fleet served that trip already).
	-- A replica that knew this state needs its last transition's time
	-- (a state written before since was kept has none).
	enter(epoch + 1, true, tripMs)
end
-- Each report carries its replica's own staleness bound: replicas need
-- not agree on SyncEvery, and a fast one must not drop a slow one's counts.
-- (A report without one, from an older version, takes this replica's.)
-- Counts made in another state (one lost since) are another count, even
-- under an epoch number the state made again has reached: not reported
-- (the replica reports again once it has adopted this state). A late
-- sync's counts are older than those its replica reported since.
if late then
	-- the replica's report stands
elseif ARGV[11] == '' or ARGV[11] == inc then
	redis.call('HSET', KEYS[2], ARGV[1], ARGV[4] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. now .. ' ' .. ARGV[7])
else
	redis.call('HDEL', KEYS[2], ARGV[1])
end
local ok, fail = 0, 0
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
	local e, s, f, ts, stale = string.match(all[i + 1], '^(%d+) (%d+) (%d+) (%d+) ?(%d*)$')
	stale = tonumber(stale) or tonumber(ARGV[7])
	if e == nil or now - tonumber(ts) > stale then
		redis.call('HDEL', KEYS[2], all[i])
	elseif all[i] ~= ARGV[1] and tonumber(e) == epoch then
		ok = ok + tonumber(s)
		fail = fail + tonumber(f)
	end
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[4], ttl)
local remaining = 0
if open then remaining = till - now end
return {epoch, open and 1 or 0, remaining, ok, fail, inc}
`)

// acquireScript takes one of the fleet's half-open trial places.
//
// KEYS: state, trials
// ARGV: known epoch, HalfOpenCalls, lease id, lease ttl
// Returns: {answer (1 yes, 0 no, -1 the fleet is closed: decide locally), epoch}
var acquireScript = redis.NewScript(timeLua + `
local st = redis.call('HMGET', KEYS[1], 'epoch', 'open', 'until', 'passed')
local epoch = tonumber(st[1]) or 0
if epoch ~= tonumber(ARGV[1]) then return {0, epoch} end
if st[2] ~= '1' then return {-1, epoch} end
if now < (tonumber(st[3]) or 0) then return {0, epoch} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) + (tonumber(st[4]) or 0) >= tonumber(ARGV[2]) then
	return {0, epoch}
end
local lease = tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], now + lease, ARGV[3])
-- The key lives as long as its longest lease: replicas need not agree on
-- TrialLease, and a short one must not cut a longer one's place.
if redis.call('PTTL', KEYS[2]) < lease then
	redis.call('PEXPIRE', KEYS[2], lease)
end
return {1, epoch}
`)

// settleScript ends a trial: a success counts towards closing the fleet, a
// failure reopens it, an ignored outcome gives the place back. A success
// counts only while its lease is held: not after the lease expired (another
// trial may have its place), nor twice when the client sends the script
// again because a reply was lost.
//
// KEYS: state, trials
// ARGV: known epoch, lease id, outcome (1 succeeded, 2 failed, 3 ignored),
// HalfOpenCalls, openFor
// Returns: {answer, epoch}; answer 1: the fleet closed; 0: the outcome was
// applied and the fleet is not closed; -1: the fleet has left the known
// epoch, nothing was done; -2: a success whose lease is not held, not
// counted.
var settleScript = redis.NewScript(timeLua + `
local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch')) or 0
if epoch ~= tonumber(ARGV[1]) then return {-1, epoch} end
local held = redis.call('ZREM', KEYS[2], ARGV[2]) == 1
local outcome = tonumber(ARGV[3])
if outcome == 1 then
	if not held then return {-2, epoch} end
	local passed = redis.call('HINCRBY', KEYS[1], 'passed', 1)
	if passed >= tonumber(ARGV[4]) then
		epoch = epoch + 1
		redis.call('HSET', KEYS[1], 'epoch', epoch, 'open', 0, 'passed', 0, 'since', now)
		redis.call('DEL', KEYS[2])
		return {1, epoch}
	end
elseif outcome == 2 then
	epoch = epoch + 1
	redis.call('HSET', KEYS[1], 'epoch', epoch, 'open', 1, 'until', now + tonumber(ARGV[5]), 'passed', 0, 'since', now)
	redis.call('DEL', KEYS[2])
end
return {0, epoch}
`)

// presenceScript records that a replica is alive and returns how many are.
//
// KEYS: replicas (sorted set: replica -> when it goes stale, by its own bound)
// ARGV: replica, stale, ttl
// Returns: the number of live replicas
var presenceScript = redis.NewScript(timeLua + `
-- Scored by when the replica goes stale, by its own bound: replicas need
-- not agree on SyncEvery.
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return redis.call('ZCARD', KEYS[1])
`)

// syncScripts are the scripts a sync pipelines with EVALSHA; they are
// (re)loaded when the server does not know them (a restart flushes them).
var syncScripts = []*redis.Script{syncScript, presenceScript}

// gcraScript claims one call's turn in a fleet's bucket: the generic cell
// rate algorithm, the bucket as one "theoretical arrival time" (tat) on
// the server's clock, in microseconds.
//
// KEYS: tat
// ARGV: interval (µs per call), tau ((Burst-1)·interval), maxWait (µs)
// Returns: {1, wait} when the turn is claimed (the call passes after wait),
// {0, retryAfter} when it is not (a call would pass after retryAfter).
var gcraScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
local base = math.max(tat, now)
local wait = base - tau - now
if wait > tonumber(ARGV[3]) then
	return {0, math.ceil(wait)}
end
local nt = base + interval
if nt - base < interval then
	-- The sum rounded down (a double of microseconds since 1970 is a
	-- quarter microsecond apart): step to the next double up, so that the
	-- fleet never runs faster than Rate.
	local u = 1 / 1024
	while nt + u == nt do u = u * 2 end
	nt = nt + u
end
redis.call('SET', KEYS[1], string.format('%.3f', nt), 'PX', math.ceil((nt - now) / 1000) + 1000)
return {1, math.ceil(math.max(wait, 0))}
`)
