"""The Lua scripts behind :class:`plugq_rq.storage.RedisStorage`'s primitives.

Each script is one primitive, run atomically by Redis in one round trip. They
write rq 2.x's own keys (see docs/redis.md, "Data layout"):

* ``rq:job:<id>`` hash with rq's field names (plugq-only fields are prefixed
  ``plugq_``; rq keeps fields it does not know);
* ``rq:queue:<name>`` lists (head on the left, as rq's workers pop) and the
  ``rq:queues`` set;
* rq's registries per queue: ``rq:wip:`` (started; members ``<id>:<execution>``
  with ``rq:execution:<id>:<execution>`` hashes and ``rq:executions:<id>``, as
  rq 2.x writes them), ``rq:finished:``, ``rq:failed:`` (stopped jobs too, as
  rq does), ``rq:deferred:``, ``rq:scheduled:``, ``rq:canceled:``;
* ``rq:job:<id>:dependents`` and ``rq:job::<id>:dependencies`` sets (two
  colons: rq 2.x's ``Job.dependencies_key`` puts its prefix, which ends with
  one, before ``:<id>``), the ``rq:results:<id>``
  stream, ``rq:worker:<name>`` hashes with ``rq:workers`` and
  ``rq:workers:<queue>``;
* one plugq key: ``plugq:expires``, a sorted set of the records that carry an
  ``expires_at`` (so :meth:`expired` is one range query);
* plugq's features beyond rq (docs/redis.md, "Beyond rq"): queued jobs of a
  priority other than 0 in ``plugq:priority:<queue>:<priority>`` lists, with
  ``plugq:levels:<queue>`` (a sorted set of the levels that hold jobs, so a
  claim finds the highest without a scan; priority 0 stays in rq's list);
  ``plugq:unique:<key>`` (sorted set of the jobs carrying a unique key, by
  creation time); ``plugq:rate_limited:<queue>`` (the jobs waiting for a
  RateLimit slot, by entry time); ``plugq:values`` (named values, one hash).

The scripts decide nothing about a job's lifecycle: they store, place, compare
and take, as the :class:`plugq.storage.Storage` contract says.
"""

from __future__ import annotations

#: Helpers shared by the scripts (each script is sent with them in front).
COMMON = r"""
local J, Q = 'rq:job:', 'rq:queue:'
local EXP = 'plugq:expires'
-- rq's key of a job's dependencies set is 'rq:job::<id>:dependencies' (sic, see above)
local DEPS = 'rq:job::'
local REG = {started = 'rq:wip:', finished = 'rq:finished:', failed = 'rq:failed:',
             stopped = 'rq:failed:', deferred = 'rq:deferred:', scheduled = 'rq:scheduled:',
             canceled = 'rq:canceled:', rate_limited = 'plugq:rate_limited:'}
-- plugq's priority levels (see the module docstring): level lists and the levels in use.
local PQ, LV = 'plugq:priority:', 'plugq:levels:'

local function norm(status)
  if status == 'created' then return 'queued' end
  return status
end

-- A queued job of another priority than 0 leaves its level's list (the level
-- is not asked: a record rewritten before it is unplaced no longer says it).
local function unqueue_level(id, origin)
  local lv = LV .. origin
  for _, level in ipairs(redis.call('ZRANGE', lv, 0, -1)) do
    local lk = PQ .. origin .. ':' .. level
    if redis.call('LREM', lk, 0, id) > 0 then
      if redis.call('LLEN', lk) == 0 then redis.call('ZREM', lv, level) end
      return
    end
  end
end

-- Queue a job at the back (front: at its front) of its priority level: rq's
-- list for 0 (rq's workers and tools see it), plugq's level list otherwise.
local function enqueue_id(id, origin, front)
  -- the stored text (whole numbers, as Python writes them) names the level
  local p = redis.call('HGET', J .. id, 'plugq_priority')
  local lk = Q .. origin
  if p and p ~= '0' then
    lk = PQ .. origin .. ':' .. p
    redis.call('ZADD', LV .. origin, p, p)
  end
  if front == '1' then redis.call('LPUSH', lk, id) else redis.call('RPUSH', lk, id) end
end

-- Pop the head of queue q: the highest level first, rq's list as level 0.
local function pop_queued(q)
  local lv = LV .. q
  while true do
    local top = redis.call('ZREVRANGE', lv, 0, 0, 'WITHSCORES')
    local level = top[1]
    if not level or tonumber(top[2]) < 0 then
      local id = redis.call('LPOP', Q .. q)
      if id or not level then return id end
    end
    local lk = PQ .. q .. ':' .. level
    local id = redis.call('LPOP', lk)
    if redis.call('LLEN', lk) == 0 then redis.call('ZREM', lv, level) end
    if id then return id end
  end
end

-- Every queued id of q in queue order: levels above 0, rq's list, levels below.
local function queued_ids(q)
  local levels = redis.call('ZREVRANGE', LV .. q, 0, -1, 'WITHSCORES')
  local out, zero_done = {}, false
  local function add(key)
    for _, id in ipairs(redis.call('LRANGE', key, 0, -1)) do out[#out + 1] = id end
  end
  for k = 1, #levels, 2 do
    if not zero_done and tonumber(levels[k + 1]) < 0 then add(Q .. q); zero_done = true end
    add(PQ .. q .. ':' .. levels[k])
  end
  if not zero_done then add(Q .. q) end
  return out
end

-- Take a record out of the list or registry its status puts it in.
local function unplace(id, origin, status)
  status = norm(status)
  if status == 'queued' then
    if redis.call('LREM', Q .. origin, 0, id) == 0 then unqueue_level(id, origin) end
  elseif status == 'started' then
    local ekey = 'rq:executions:' .. id
    for _, e in ipairs(redis.call('ZRANGE', ekey, 0, -1)) do
      redis.call('ZREM', 'rq:wip:' .. origin, id .. ':' .. e)
      redis.call('DEL', 'rq:execution:' .. id .. ':' .. e)
    end
    redis.call('DEL', ekey)
  elseif REG[status] then
    redis.call('ZREM', REG[status] .. origin, id)
  end
end

-- Put a record where its status says: the queue's list or a registry.
local function place(id, origin, status, front, score, now, lease, exec, worker)
  if origin ~= '' then redis.call('SADD', 'rq:queues', Q .. origin) end
  if status == 'queued' then
    enqueue_id(id, origin, front)
    -- wakes idle plugq workers of the queue (see RedisStorage.wait)
    redis.call('PUBLISH', 'plugq:wake:' .. origin, '1')
  elseif status == 'started' then
    local member = id .. ':' .. exec
    redis.call('ZADD', 'rq:wip:' .. origin, now + lease, member)
    redis.call('HSET', 'rq:execution:' .. member, 'id', exec, 'created_at', now,
               'last_heartbeat', now, 'worker_name', worker)
    redis.call('EXPIRE', 'rq:execution:' .. member, math.floor(lease) + 60)
    redis.call('ZADD', 'rq:executions:' .. id, now + lease + 60, exec)
  elseif REG[status] then
    redis.call('ZADD', REG[status] .. origin, score, id)
  end
end

local function drop_deps(id)
  local dkey = DEPS .. id .. ':dependencies'
  for _, dep in ipairs(redis.call('SMEMBERS', dkey)) do
    redis.call('SREM', J .. dep .. ':dependents', id)
  end
  redis.call('DEL', dkey)
end

local function add_deps(id, deps)
  for _, dep in ipairs(deps) do
    redis.call('SADD', J .. dep .. ':dependents', id)
    redis.call('SADD', DEPS .. id .. ':dependencies', dep)
  end
end

-- The results stream: a new entry when the outcome changed, and at every end of
-- a run (run: each run is one entry, as rq's worker writes them, even when two
-- runs returned the same); none kept when there is none.
local function set_result(id, rtype, rv, exc, worker, fresh, run)
  local rkey = 'rq:results:' .. id
  if rv == '' and exc == '' then
    if not fresh then redis.call('DEL', rkey) end
    return
  end
  local last = not run and redis.call('XREVRANGE', rkey, '+', '-', 'COUNT', 1)[1]
  if last then
    local f, kv = {}, last[2]
    for i = 1, #kv, 2 do f[kv[i]] = kv[i + 1] end
    if (f['return_value'] or '') == rv and (f['exc_string'] or '') == exc then return end
  end
  local args = {'XADD', rkey, 'MAXLEN', '10', '*', 'type', rtype, 'worker_name', worker}
  if rv ~= '' then args[#args + 1] = 'return_value'; args[#args + 1] = rv end
  if exc ~= '' then args[#args + 1] = 'exc_string'; args[#args + 1] = exc end
  redis.call(unpack(args))
end

local function set_expiry(id, exp, fresh)
  if exp ~= '' then redis.call('ZADD', EXP, exp, id) elseif not fresh then redis.call('ZREM', EXP, id) end
end

-- The unique-key index: plugq:unique:<key> holds the ids of the jobs carrying
-- that key, scored by creation time (read by unique_holder).
local function unindex_unique(id)
  local k = redis.call('HGET', J .. id, 'plugq_unique_key')
  if k then redis.call('ZREM', 'plugq:unique:' .. k, id) end
end

local function index_unique(id, created)
  local k = redis.call('HGET', J .. id, 'plugq_unique_key')
  if k then redis.call('ZADD', 'plugq:unique:' .. k, created, id) end
end

-- The id of a job holding unique key k in one of statuses (a set) created
-- after since (a number, or nil), or nil. Members whose hash no longer
-- carries the key (deleted, expired) are dropped as they are met.
local function unique_holder(k, statuses, since)
  local ukey = 'plugq:unique:' .. k
  local members
  if since then members = redis.call('ZRANGEBYSCORE', ukey, '(' .. since, '+inf')
  else members = redis.call('ZRANGE', ukey, 0, -1) end
  for _, id in ipairs(members) do
    local h = redis.call('HMGET', J .. id, 'status', 'plugq_unique_key')
    if h[2] ~= k then
      redis.call('ZREM', ukey, id)
    elseif statuses[norm(h[1])] then
      return id, norm(h[1])
    end
  end
  return nil
end

-- Everything of a job but its hash: list or registry, results, dependency sets, expiry.
local function forget(id, origin, status)
  unplace(id, origin or '', status)
  unindex_unique(id)
  redis.call('DEL', 'rq:results:' .. id)
  drop_deps(id)
  redis.call('ZREM', EXP, id)
end

local function dependents_waiting(id)
  local out = {}
  for _, d in ipairs(redis.call('SMEMBERS', J .. id .. ':dependents')) do
    if redis.call('HGET', J .. d, 'status') == 'deferred' then out[#out + 1] = d end
  end
  return out
end

local function latest_result(id)
  local last = redis.call('XREVRANGE', 'rq:results:' .. id, '+', '-', 'COUNT', 1)[1]
  if last then return last[2] end
  return {}
end

-- The values packed into one string: "<length>:<bytes>" each (the plugq_ahead mark, see packed).
local function unpack_values(s)
  local out, pos, n = {}, 1, #s
  while pos <= n do
    local colon = string.find(s, ':', pos, true)
    local len = tonumber(string.sub(s, pos, colon - 1))
    out[#out + 1] = string.sub(s, colon + 1, colon + len)
    pos = colon + len + 1
  end
  return out
end

-- A list of strings packed into one, "<length>:<bytes>" each (read by storage.unpack).
local function packed(list)
  local parts = {}
  for i = 1, #list do
    local v = list[i]
    parts[#parts + 1] = #v .. ':' .. v
  end
  return table.concat(parts)
end

-- Reads one record block from the value list A at i; returns the block and the next index.
local function read_block(A, i)
  local b = {id = A[i], origin = A[i + 1], status = A[i + 2], front = A[i + 3],
             score = A[i + 4], exp = A[i + 5], exec = A[i + 6], worker = A[i + 7],
             rtype = A[i + 8], rv = A[i + 9], exc = A[i + 10], keep = A[i + 11]}
  local nd = tonumber(A[i + 12])
  i = i + 13
  b.deps = {}
  for k = 1, nd do b.deps[k] = A[i + k - 1] end
  i = i + nd
  b.nf = tonumber(A[i])
  b.fields = i + 1
  b.A = A
  b.fresh = false
  return b, i + 1 + b.nf
end

-- Rewrites the hash from the block: its fields set, every other field deleted
-- except those named in b.keep (comma-separated), which keep their stored values,
-- and rq's RateLimit (rq 3) and Repeat fields, which plugq does not model but
-- rq's worker and the PUT script's rq upkeep (rq_rate_release, rq_repeat) read.
local function write_hash(key, b)
  if not b.fresh then
    local wanted = {rate_limit_key = true, rate_limit_concurrency = true,
                    repeats_left = true, repeat_intervals = true}
    for f in string.gmatch(b.keep, '[^,]+') do wanted[f] = true end
    for k = b.fields, b.fields + b.nf - 1, 2 do wanted[b.A[k]] = true end
    local gone = {}
    for _, f in ipairs(redis.call('HKEYS', key)) do
      if not wanted[f] then gone[#gone + 1] = f end
    end
    if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
  end
  if b.nf > 0 then redis.call('HSET', key, unpack(b.A, b.fields, b.fields + b.nf - 1)) end
end

-- Take the first runnable job of the queues named in ARGV[first..last] for worker.
-- admit (LIMIT_RULE's admit_limited, or nil) admits a job that carries a
-- RateLimit; a refused one is stored waiting and the next is taken.
-- Returns {id, hash fields as they were before the claim, latest result} or false;
-- then, for a claim, those fields unpacked (HGETALL's flat list, for mark_ahead).
local function claim_next(now, lease, worker, exec, started, first, last, admit)
  for qi = first, last do
    local q = ARGV[qi]
    while true do
      local id = pop_queued(q)
      if not id then break end
      local key = J .. id
      local st = norm(redis.call('HGET', key, 'status'))
      if st == 'queued' then
        local exp = redis.call('ZSCORE', EXP, id)
        if exp and tonumber(exp) <= now then
          -- its ttl ran out while queued: discarded, as Redis would expire rq's key
          forget(id, q, 'gone')
          redis.call('DEL', key)
        elseif admit and not admit(id, redis.call('HGET', key, 'plugq_rate_limit'), now) then
          -- refused: waiting in line, as the engine's gate leaves a refused claim
          -- (attempts as they were, not started, no expiry)
          redis.call('HSET', key, 'status', 'rate_limited')
          redis.call('HDEL', key, 'started_at', 'worker_name', 'plugq_expires_at')
          redis.call('ZREM', EXP, id)
          -- entered after the last to enter, even at the same now (one script may refuse
          -- several): the registry lists them in the order they entered
          local top = redis.call('ZREVRANGE', REG.rate_limited .. q, 0, 0, 'WITHSCORES')[2]
          local score = now
          if top and tonumber(top) >= now then
            score = tonumber(top) + math.max(math.abs(tonumber(top)) * 2.220446049250313e-16, 1e-9)
          end
          place(id, q, 'rate_limited', '0', score, now, lease, '', '')
        else
          -- handed back as it was: the caller checks every field before the claim's own writes
          local before = redis.call('HGETALL', key)
          redis.call('HSET', key, 'status', 'started', 'started_at', started, 'worker_name', worker)
          redis.call('HDEL', key, 'plugq_expires_at')
          redis.call('ZREM', EXP, id)
          -- a corrupt counter is left as found (pcall): the record is quarantined when read
          redis.pcall('HINCRBY', key, 'plugq_attempts', 1)
          place(id, q, 'started', '0', 0, now, lease, exec, worker)
          local wkey = 'rq:worker:' .. worker
          if redis.call('EXISTS', wkey) == 1 then
            redis.call('HSET', wkey, 'state', 'busy', 'current_job', id)
          end
          return {id, packed(before), packed(latest_result(id))}, before
        end
      end
    end
  end
  return false
end
"""

#: insert(records, unique_ids, unique_keys): ARGV now, lease, n unique ids, ids…,
#: n unique-key conditions, (key, statuses, since or '')…, n records to index by
#: unique key, (id, created_at)…, n records, then the records' blocks; one Redis
#: argument per value. A plain queued job (no result, dependencies, expiry or
#: fields to keep) is 'q', id, n fields, fields…; the last 'p' entry before it
#: gives its queue, front ('1'/'0'), priority, and n more fields, fields… of its
#: hash (those the jobs of a batch share). Any other record is 'g' and
#: read_block's block.
INSERT = COMMON + r"""
local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local i = 3
local nu = tonumber(ARGV[i]); i = i + 1
for k = i, i + nu - 1 do
  local st = norm(redis.call('HGET', J .. ARGV[k], 'status'))
  if st == 'queued' or st == 'started' then return {'dup', ARGV[k], st} end
end
i = i + nu
local nc = tonumber(ARGV[i]); i = i + 1
for _ = 1, nc do
  local statuses = {}
  for s in string.gmatch(ARGV[i + 1], '[^,]+') do statuses[s] = true end
  local since = nil
  if ARGV[i + 2] ~= '' then since = ARGV[i + 2] end
  local holder, st = unique_holder(ARGV[i], statuses, since)
  if holder then return {'dupkey', holder, st, ARGV[i]} end
  i = i + 3
end
local ni = tonumber(ARGV[i]); local iu = i + 1
i = iu + 2 * ni
local nr = tonumber(ARGV[i]); i = i + 1

-- First pass: where each block starts, its hash key, its place ('q'), and
-- whether the batch is all new ids (none stored, none twice): then nothing
-- stored needs forgetting, and no hash needs looking at one by one.
local starts, keys, blocks, places, seen, again = {}, {}, {}, {}, {}, false
local here, r = nil, 0  -- the last 'p' entry (not place(), the helper)
while r < nr do
  local kind = ARGV[i]
  if kind == 'p' then
    here, i = i, i + 5 + tonumber(ARGV[i + 4])
  else
    r = r + 1
    starts[r] = i
    local id = ARGV[i + 1]
    if seen[id] then again = true end
    seen[id] = true
    keys[r] = J .. id
    if kind == 'q' then
      places[r] = here
      i = i + 3 + tonumber(ARGV[i + 2])
    else
      blocks[r], i = read_block(ARGV, i + 1)
    end
  end
end
local all_new = not again
for s = 1, nr, 4000 do  -- in slices: unpack() takes at most ~8,000 values
  if not all_new then break end
  all_new = redis.call('EXISTS', unpack(keys, s, math.min(s + 3999, nr))) == 0
end

-- Queued ids are pushed together, one command per list and end, after the
-- hashes: pushes to the front and to the back of a list commute, so the order
-- is the one pushing each in turn would give. Whatever reads a list (the
-- forgetting of a stored record) first pushes what is pending.
local groups, order = {}, {}
local last_o, last_p, last_f, last_g
local function push_later(origin, p, front, id)
  local g = last_g
  if origin ~= last_o or p ~= last_p or front ~= last_f then
    local lk, level = Q .. origin, nil
    if p ~= '0' then lk, level = PQ .. origin .. ':' .. p, p end
    local cmd = (front == '1') and 'LPUSH' or 'RPUSH'
    g = groups[cmd .. lk]
    if not g then
      g = {cmd = cmd, key = lk, origin = origin, level = level, ids = {}}
      groups[cmd .. lk] = g
      order[#order + 1] = g
    end
    last_o, last_p, last_f, last_g = origin, p, front, g
  end
  g.ids[#g.ids + 1] = id
end
local function push_pending()
  for _, g in ipairs(order) do
    local ids = g.ids
    for s = 1, #ids, 4000 do
      redis.call(g.cmd, g.key, unpack(ids, s, math.min(s + 3999, #ids)))
    end
    -- the level is added with its jobs, never before (a forget meanwhile would drop it as empty)
    if g.level then redis.call('ZADD', LV .. g.origin, g.level, g.level) end
  end
  groups, order, last_o, last_p, last_f, last_g = {}, {}, nil, nil, nil, nil
end

-- A 'q' job's hash: its 'p' entry's fields, then its own, in one table
-- (the shared part copied once per 'p' entry; unpack() is given the length).
local hash, hash_p, hash_n = {}, nil, 0
local function hash_of(p, s)
  if p ~= hash_p then
    hash, hash_p, hash_n = {}, p, tonumber(ARGV[p + 4])
    for k = 1, hash_n do hash[k] = ARGV[p + 4 + k] end
  end
  local nf = tonumber(ARGV[s + 2])
  for k = 1, nf do hash[hash_n + k] = ARGV[s + 2 + k] end
  return hash_n + nf
end

-- Queued records are placed here, not by place(): rq:queues and the wake-up
-- publish are done once per queue for the whole batch, not once per job.
local queues, woken = {}, {}
for r = 1, nr do
  local s, key, b = starts[r], keys[r], blocks[r]
  local origin
  if not b and all_new then
    -- a plain queued job, new: its hash, then its place in its queue
    local p = places[r]
    origin = ARGV[p + 1]
    local n = hash_of(p, s)  -- first: it may start a new table
    redis.call('HSET', key, unpack(hash, 1, n))
    push_later(origin, ARGV[p + 3], ARGV[p + 2], ARGV[s + 1])
  else
    if not b then
      local p = places[r]
      local n = hash_of(p, s)
      b = {id = ARGV[s + 1], origin = ARGV[p + 1], status = 'queued', front = ARGV[p + 2],
           score = 0, exp = '', exec = '', worker = '', rtype = '', rv = '', exc = '', keep = '',
           deps = {}, nf = n, fields = 1, A = {unpack(hash, 1, n)}, fresh = false,
           priority = ARGV[p + 3]}
    end
    origin = b.origin
    local old = {}
    if not all_new then old = redis.call('HMGET', key, 'origin', 'status') end
    if old[2] then
      push_pending()
      forget(b.id, old[1], old[2])
    else
      b.fresh = true
    end
    write_hash(key, b)
    if b.status == 'queued' then
      -- the stored text (whole numbers, as Python writes them) names the level
      push_later(origin, b.priority or redis.call('HGET', key, 'plugq_priority') or '0', b.front, b.id)
    else
      place(b.id, b.origin, b.status, b.front, b.score, now, lease, b.exec, b.worker)
    end
    set_result(b.id, b.rtype, b.rv, b.exc, b.worker, b.fresh)
    add_deps(b.id, b.deps)
    set_expiry(b.id, b.exp, b.fresh)
  end
  if (not b or b.status == 'queued') and not woken[origin] then
    woken[origin] = true
    if origin ~= '' then queues[#queues + 1] = Q .. origin end
  end
end
push_pending()
for k = iu, iu + 2 * ni - 1, 2 do index_unique(ARGV[k], ARGV[k + 1]) end
if #queues > 0 then redis.call('SADD', 'rq:queues', unpack(queues)) end
-- wakes idle plugq workers of the queues (see RedisStorage.wait), after every job is in
for q in pairs(woken) do redis.call('PUBLISH', 'plugq:wake:' .. q, '1') end
return {'ok'}
"""

#: plugq.storage.ADMISSION_RULE in Lua (capability ``limit_rule``): the
#: reference is plugq._limits._decide, and the storage conformance suite
#: checks that both give the same answers, line and state. Defines
#: admit_limited(id, rate_limit text or false, now) -> true (admitted, or no
#: valid RateLimit: claimed as a plain job) / false (refused, put in line),
#: and limit_line_waiting(rate_limit text or false) -> true/false/nil.
LIMIT_RULE = r"""
local LIMIT_TIDY_AT, LIMIT_EXACT, LIMIT_SLICES = 32, 16, 16
local LIMIT_IN_LINE = {rate_limited = true, queued = true, started = true}

-- The RateLimit text (JSON [key, concurrency, limit, period]) checked as
-- RateLimit checks it; nil when it is not one (the claim's field check then
-- quarantines the job).
local function limit_of(text)
  if not text then return nil end
  local ok, v = pcall(cjson.decode, text)
  if not ok or type(v) ~= 'table' then return nil end
  local key, conc, lim, period = v[1], v[2], v[3], v[4]
  if type(key) ~= 'string' or key == '' then return nil end
  if type(conc) ~= 'number' then conc = nil end
  if type(lim) ~= 'number' then lim = nil end
  if type(period) ~= 'number' then period = nil end
  if conc and (conc < 1 or conc ~= math.floor(conc)) then return nil end
  if lim and (lim < 1 or lim ~= math.floor(lim)) then return nil end
  if (lim == nil) ~= (period == nil) then return nil end
  if period and not (period > 0 and period < math.huge) then return nil end
  if not conc and not lim then return nil end
  return {key = key, conc = conc, lim = lim, period = period}
end

-- Python's float floor division a // b, to the bit (CPython's float_floor_div).
local function py_floordiv(a, b)
  local mod = math.fmod(a, b)
  local div = (a - mod) / b
  if mod ~= 0 and ((b < 0) ~= (mod < 0)) then div = div - 1 end
  if div == 0 then return 0 end
  local f = math.floor(div)
  if div - f > 0.5 then f = f + 1 end
  return f
end

-- Python's bisect_right over the times of the flat starts list (pairs counted from 0).
local function starts_bisect(starts, x)
  local lo, hi = 0, #starts / 2
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if x < starts[2 * mid + 1] then hi = mid else lo = mid + 1 end
  end
  return lo
end

local function first_index(list, x)
  for k = 1, #list do if list[k] == x then return k end end
  return nil
end

local function limit_decode(raw)
  if not raw then return {}, {}, {} end
  local v = cjson.decode(raw)
  return v[1], v[2], v[3]
end

-- The state as JSON [holders, starts, waiting]; times with 17 significant digits
-- (exact). As Python's json.dumps, an empty line is written last as ", []]".
local function limit_encode(holders, starts, waiting)
  local function strings(t)
    -- cjson writes an empty table as {}; a list of strings as JSON, without spaces
    if #t == 0 then return '[]' end
    return cjson.encode(t)
  end
  local p = {}
  for k = 1, #starts, 2 do
    p[k] = string.format('%.17g', starts[k])
    p[k + 1] = string.format('%d', starts[k + 1])
  end
  return '[' .. strings(holders) .. ', [' .. table.concat(p, ', ') .. '], ' .. strings(waiting) .. ']'
end

local function limit_expire(L, starts, now)
  if not L.period or #starts == 0 then return starts end
  local gone = starts_bisect(starts, now - L.period)
  if gone == 0 then return starts end
  local kept = {}
  for k = 2 * gone + 1, #starts do kept[#kept + 1] = starts[k] end
  return kept
end

local function limit_free(L, holders, starts)
  local free
  if L.conc then free = L.conc - #holders end
  if L.lim then
    local n = 0
    for k = 2, #starts, 2 do n = n + starts[k] end
    if free == nil or L.lim - n < free then free = L.lim - n end
  end
  if free < 0 then free = 0 end
  return free
end

local function limit_add_start(L, starts, at)
  local n = #starts
  if n == 0 or at >= starts[n - 1] then
    local width = L.period / LIMIT_SLICES
    if n > 0 and L.lim > LIMIT_EXACT and py_floordiv(at, width) == py_floordiv(starts[n - 1], width) then
      starts[n - 1] = at
      starts[n] = starts[n] + 1
    else
      starts[n + 1] = at
      starts[n + 2] = 1
    end
  else
    local i = 2 * starts_bisect(starts, at)
    table.insert(starts, i + 1, 1)
    table.insert(starts, i + 1, at)
  end
end

local function limit_status(id)
  local s = redis.call('HGET', J .. id, 'status')
  if s then return norm(s) end
  return nil
end

local function admit_limited(id, text, now)
  local L = limit_of(text)
  if not L then return true end
  local vkey = 'limit:' .. L.key
  local holders, starts, waiting = limit_decode(redis.call('HGET', 'plugq:values', vkey))
  local h = first_index(holders, id)
  if h then table.remove(holders, h) end  -- a retry of a job that held a slot: it asks again
  starts = limit_expire(L, starts, now)
  local w = first_index(waiting, id)
  local place = (w or (#waiting + 1)) - 1
  local free = limit_free(L, holders, starts)
  if place >= free or #holders >= LIMIT_TIDY_AT then
    -- repair: a holder no longer started frees its slot; who no longer waits leaves the line
    local kept = {}
    for _, x in ipairs(holders) do
      if x == id or limit_status(x) == 'started' then kept[#kept + 1] = x end
    end
    holders = kept
    kept = {}
    for _, x in ipairs(waiting) do
      -- id itself is being claimed: queued here, started in the reference (both in line)
      if x == id or LIMIT_IN_LINE[limit_status(x) or ''] then kept[#kept + 1] = x end
    end
    waiting = kept
    w = first_index(waiting, id)
    place = (w or (#waiting + 1)) - 1
    free = limit_free(L, holders, starts)
  end
  local admitted = place < free
  if admitted then
    if L.conc then holders[#holders + 1] = id end
    if L.lim then limit_add_start(L, starts, now) end
    if w then table.remove(waiting, w) end
  elseif not w then
    waiting[#waiting + 1] = id
  end
  redis.call('HSET', 'plugq:values', vkey, limit_encode(holders, starts, waiting))
  return admitted
end

-- Whether anyone waits in the line of the limit named by text (nil: no valid limit).
local function limit_line_waiting(text)
  local L = limit_of(text)
  if not L then return nil end
  local raw = redis.call('HGET', 'plugq:values', 'limit:' .. L.key)
  -- an empty line is written last, as ", []]" (by limit_encode, and by Python's json.dumps)
  if not raw or string.sub(raw, -5) == ', []]' then return false end
  local _, _, waiting = limit_decode(raw)
  return #waiting > 0
end
"""

#: put(record, expected, expected_attempts): ARGV now, lease, check ('1'/'0'),
#: expected statuses (comma-separated), expected attempts ('' = any), then the
#: claim-ahead request (worker, execution id, started text, number of queues,
#: queues…; worker '' = none), the record's created_at (its unique-key score,
#: should the key change), then read_block's block, one Redis argument per
#: value (Redis splits them in C; unpack_values of one packed argument cost
#: the script more than most of its writes).
#: Returns {0} or {1, {dependents waiting on the job…}, claimed job or false}.
PUT = COMMON + LIMIT_RULE + r"""
-- Marks a job claimed ahead and not begun yet: plugq_ahead holds the execution id,
-- then the fields the claim changed as they were (started_at, worker_name,
-- plugq_attempts, plugq_expires_at; '' = absent), so that UNCLAIM_AHEAD can put
-- it back unrun if its worker dies before beginning it (see RedisStorage.claim).
-- before: the hash as the claim read it (HGETALL's flat list, claim_next's second result).
local function mark_ahead(id, before, exec)
  local h = {}
  for k = 1, #before, 2 do h[before[k]] = before[k + 1] end
  redis.call('HSET', J .. id, 'plugq_ahead', packed({exec, h['started_at'] or '',
             h['worker_name'] or '', h['plugq_attempts'] or '', h['plugq_expires_at'] or ''}))
end

-- rq 3's RateLimit (rq.rate_limit): a job rq let through holds a slot in
-- rq:rl:<key>:allowed until it ends; then rq's worker gives the slot back and
-- queues the first job rq holds back in rq:rl:<key>:rate_limited (its
-- RateLimitRegistry.release_and_enqueue). A plugq worker that runs such a job
-- does the same here, so rq's limited jobs keep moving. at: enqueued_at text
-- for the job queued ('' leaves it as it was).
-- Queue a job rq made again (rq's own upkeep below): status queued, enqueued_at
-- at (a date text; '' leaves it as it was), at the back (front: '1' at the front).
local function requeue_rq_job(id, origin, front, now, at)
  redis.call('HSET', J .. id, 'status', 'queued')
  if at ~= '' then redis.call('HSET', J .. id, 'enqueued_at', at) end
  place(id, origin, 'queued', front, 0, now, 0, '', '')
end

local function rq_rate_release(rk, id, now, at)
  local base = 'rq:rl:' .. rk
  local allowed, held = base .. ':allowed', base .. ':rate_limited'
  redis.call('ZREM', allowed, id)
  local conc = tonumber(redis.call('HGET', base, 'concurrency') or '') or 0
  if redis.call('ZCARD', allowed) >= conc then return end
  while true do
    local top = redis.call('ZPOPMIN', held)
    if #top == 0 then return end
    local h = redis.call('HMGET', J .. top[1], 'origin', 'status', 'enqueue_at_front')
    -- as rq: a held entry whose job is gone or no longer waits is dropped
    if h[1] and h[2] == 'rate_limited' then
      redis.call('ZADD', allowed, now, top[1])
      requeue_rq_job(top[1], h[1], h[3] == '1' and '1' or '0', now, at)
      return
    end
  end
end

-- rq's Repeat (rq.repeat, rq 2.2+): a job rq made with repeats left
-- (repeats_left, repeat_intervals) runs again after a success, as rq's worker
-- does it (Repeat.schedule): one repeat fewer, the first interval taken (the
-- last one stays), then queued again at once or scheduled that many seconds
-- on. plugq's own Repeat rides in the job's meta and is the engine's; this is
-- rq's, kept here like the dependents sets, so a plugq worker honours it.
local function rq_repeat(id, origin, left, intervals_text, now, at)
  local n = tonumber(left)
  if not n or n < 1 then return end
  local ok, intervals = pcall(cjson.decode, intervals_text or '[]')
  if not ok or type(intervals) ~= 'table' then intervals = {} end
  local interval = tonumber(intervals[1]) or 0
  local key = J .. id
  if #intervals > 1 then
    table.remove(intervals, 1)
    redis.call('HSET', key, 'repeat_intervals', cjson.encode(intervals))
  end
  redis.call('HSET', key, 'repeats_left', string.format('%d', n - 1))
  -- not finished after all: out of the finished registry, and no expiry
  unplace(id, origin, 'finished')
  redis.call('ZREM', EXP, id)
  redis.call('HDEL', key, 'plugq_expires_at')
  if interval > 0 then
    redis.call('HSET', key, 'status', 'scheduled')
    place(id, origin, 'scheduled', '0', now + interval, now, 0, '', '')
  else
    requeue_rq_job(id, origin, '0', now, at)
  end
end

local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local nq = tonumber(ARGV[9])
local b = read_block(ARGV, 11 + nq)
local key = J .. b.id
local cur = redis.call('HMGET', key, 'status', 'origin', 'plugq_attempts', 'plugq_priority',
                       'plugq_unique_key', 'rate_limit_key', 'repeats_left', 'repeat_intervals')
if not cur[1] then return {0} end
local st, origin = norm(cur[1]), cur[2] or ''
if ARGV[3] == '1' then
  local ok = false
  for s in string.gmatch(ARGV[4], '[^,]+') do if s == st then ok = true end end
  if not ok then return {0} end
end
if ARGV[5] ~= '' and tonumber(cur[3] or '0') ~= tonumber(ARGV[5]) then return {0} end
write_hash(key, b)
local now_uk = redis.call('HGET', key, 'plugq_unique_key')
if now_uk ~= cur[5] then
  -- the unique key changed (ARGV[10 + nq]: the record's created_at)
  if cur[5] then redis.call('ZREM', 'plugq:unique:' .. cur[5], b.id) end
  index_unique(b.id, ARGV[10 + nq])
end
if st == b.status and origin == b.origin and (st == 'started' or (st == 'queued'
    and redis.call('HGET', key, 'plugq_priority') == cur[4])) then
  -- keeps its place in the queue, or its execution in the started registry
else
  unplace(b.id, origin, st)
  place(b.id, b.origin, b.status, b.front, b.score, now, lease, b.exec, b.worker)
end
drop_deps(b.id)
add_deps(b.id, b.deps)
set_result(b.id, b.rtype, b.rv, b.exc, b.worker, false, st == 'started' and b.status ~= 'started')
set_expiry(b.id, b.exp, false)
local waiting = {}
if b.status ~= 'queued' and b.status ~= 'started' then waiting = dependents_waiting(b.id) end
-- rq's upkeep for a job rq made, when this put ends its run (at: enqueued_at
-- text for a job queued again).
if (cur[6] or cur[7]) and st == 'started' and b.status ~= 'started' then
  local at = ARGV[8]
  if at == '' then at = redis.call('HGET', key, 'ended_at') or '' end
  -- a success with repeats left (rq's Repeat) runs again
  if cur[7] and b.status == 'finished' then rq_repeat(b.id, b.origin, cur[7], cur[8], now, at) end
  -- rq 3's RateLimit: leaving started, done or to wait for a delayed retry, gives the
  -- slot back (an immediate retry, back to queued, keeps it, as under rq's worker)
  if cur[6] and b.status ~= 'queued' then rq_rate_release(cur[6], b.id, now, at) end
end
local ahead = false
if ARGV[6] ~= '' then
  local before
  ahead, before = claim_next(now, lease, ARGV[6], ARGV[7], ARGV[8], 10, 9 + nq, admit_limited)
  if ahead then mark_ahead(ahead[1], before, ARGV[7]) end
end
-- A limited job left started: whether its limit's line holds anyone, as this
-- put (and the claim above) left it (RedisStorage.limit_waiting).
local line = false
if st == 'started' and b.status ~= 'started' then
  local w = limit_line_waiting(redis.call('HGET', key, 'plugq_rate_limit'))
  if w ~= nil then line = w and 1 or 0 end
end
return {1, waiting, ahead, line}
"""

#: claim(queues, worker, now): ARGV now, lease, worker, execution id, started_at text, queues…
#: Returns nil or {id, hash fields as they were before the claim, latest result fields}.
CLAIM = COMMON + LIMIT_RULE + r"""
return (claim_next(tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], 6, #ARGV,
                   admit_limited))
"""

#: remove(id): returns 1 if the job existed.
REMOVE = COMMON + r"""
local id = ARGV[1]
local key = J .. id
local cur = redis.call('HMGET', key, 'status', 'origin')
forget(id, cur[2] or '', cur[1] or '')
redis.call('DEL', J .. id .. ':dependents')
return redis.call('DEL', key)
"""

#: set_meta(id, meta): returns 1 if the job exists.
SET_META = r"""
if redis.call('EXISTS', 'rq:job:' .. ARGV[1]) == 0 then return 0 end
if ARGV[2] == '' then redis.call('HDEL', 'rq:job:' .. ARGV[1], 'meta')
else redis.call('HSET', 'rq:job:' .. ARGV[1], 'meta', ARGV[2]) end
return 1
"""

#: remove_queued(queue): deletes the queued jobs of one queue; returns how many.
REMOVE_QUEUED = COMMON + r"""
local q = ARGV[1]
local n = 0
for _, id in ipairs(queued_ids(q)) do
  local key = J .. id
  if norm(redis.call('HGET', key, 'status')) == 'queued' then
    forget(id, q, 'gone')
    redis.call('DEL', key, J .. id .. ':dependents')
    n = n + 1
  end
end
for _, level in ipairs(redis.call('ZRANGE', LV .. q, 0, -1)) do
  redis.call('DEL', PQ .. q .. ':' .. level)
end
redis.call('DEL', Q .. q, LV .. q)
return n
"""

#: ids / count: ARGV queue, status, now ('' = keep expired), offset, length, count-only ('1').
LISTING = COMMON + r"""
local q, status, now = ARGV[1], ARGV[2], ARGV[3]
local offset, length, count_only = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1'
local filter_status = status == 'started' or status == 'failed' or status == 'stopped'
local filter_exp = now ~= '' and redis.call('ZCARD', EXP) > 0
local key = (status == 'queued') and (Q .. q) or (REG[status] .. q)
-- queued jobs of other priorities than 0: the listing walks every level
local levels = status == 'queued' and redis.call('EXISTS', LV .. q) == 1
if not filter_status and not filter_exp and not levels then
  if count_only then
    if status == 'queued' then return redis.call('LLEN', key) end
    return redis.call('ZCARD', key)
  end
  local last = (length < 0) and -1 or (offset + length - 1)
  if length == 0 then return {} end
  if status == 'queued' then return redis.call('LRANGE', key, offset, last) end
  return redis.call('ZRANGE', key, offset, last)
end
local raw
if levels then raw = queued_ids(q)
elseif status == 'queued' then raw = redis.call('LRANGE', key, 0, -1)
else raw = redis.call('ZRANGE', key, 0, -1) end
local out, seen = {}, {}
local limit = tonumber(now)
for _, member in ipairs(raw) do
  local id = member
  if status == 'started' then id = string.match(member, '^(.*):[^:]*$') or member end
  local keep = not seen[id]
  seen[id] = true
  if keep and filter_status then
    keep = redis.call('HGET', J .. id, 'status') == status
  end
  if keep and filter_exp then
    local exp = redis.call('ZSCORE', EXP, id)
    keep = not (exp and tonumber(exp) <= limit)
  end
  if keep then out[#out + 1] = id end
end
if count_only then return #out end
local sliced = {}
local last = (length < 0) and #out or math.min(#out, offset + length)
for k = offset + 1, last do sliced[#sliced + 1] = out[k] end
return sliced
"""

#: queues(): names in rq:queues that still have a list or a registry.
QUEUES = r"""
local out = {}
for _, qkey in ipairs(redis.call('SMEMBERS', 'rq:queues')) do
  local name = string.sub(qkey, 10)
  if redis.call('EXISTS', qkey, 'rq:wip:' .. name, 'rq:finished:' .. name, 'rq:failed:' .. name,
                'rq:deferred:' .. name, 'rq:scheduled:' .. name, 'rq:canceled:' .. name,
                'plugq:levels:' .. name, 'plugq:rate_limited:' .. name) > 0 then
    out[#out + 1] = name
  end
end
return out
"""

#: due(now, limit): scheduled ids across queues, with their scores (sorted in Python).
DUE = r"""
local out = {}
for _, qkey in ipairs(redis.call('SMEMBERS', 'rq:queues')) do
  local name = string.sub(qkey, 10)
  local got = redis.call('ZRANGEBYSCORE', 'rq:scheduled:' .. name, '-inf', ARGV[1], 'WITHSCORES',
                         'LIMIT', 0, tonumber(ARGV[2]))
  for _, v in ipairs(got) do out[#out + 1] = v end
end
return out
"""

#: dependents(id): the deferred jobs waiting on it.
DEPENDENTS = COMMON + r"""
return dependents_waiting(ARGV[1])
"""

#: heartbeat: ARGV name, last_heartbeat text, state, current job ('' = none),
#: successful, failed, now, lease, ttl. Renews the current job's execution.
HEARTBEAT = r"""
local wkey = 'rq:worker:' .. ARGV[1]
if redis.call('EXISTS', wkey) == 0 then return 0 end
redis.call('HSET', wkey, 'last_heartbeat', ARGV[2], 'state', ARGV[3],
           'successful_job_count', ARGV[5], 'failed_job_count', ARGV[6])
if ARGV[4] == '' then redis.call('HDEL', wkey, 'current_job')
else
  redis.call('HSET', wkey, 'current_job', ARGV[4])
  local origin = redis.call('HGET', 'rq:job:' .. ARGV[4], 'origin')
  if origin then
    local now, lease = tonumber(ARGV[7]), tonumber(ARGV[8])
    for _, e in ipairs(redis.call('ZRANGE', 'rq:executions:' .. ARGV[4], 0, -1)) do
      redis.call('ZADD', 'rq:wip:' .. origin, 'XX', now + lease, ARGV[4] .. ':' .. e)
      redis.call('HSET', 'rq:execution:' .. ARGV[4] .. ':' .. e, 'last_heartbeat', now)
    end
  end
end
redis.call('EXPIRE', wkey, tonumber(ARGV[9]))
return 1
"""

#: Put back jobs claimed ahead and never begun: ARGV id, worker, id, worker, …
#: A job is put back only if it is still started by that worker under the
#: execution its ``plugq_ahead`` mark names (the mark is deleted when its worker
#: begins it, see BEGUN): the fields the claim changed are restored, so the
#: claim costs no attempt, and the job goes back to the front of its queue.
#: Returns the ids put back.
UNCLAIM_AHEAD = COMMON + r"""
local names = {'started_at', 'worker_name', 'plugq_attempts', 'plugq_expires_at'}
local out = {}
for i = 1, #ARGV, 2 do
  local id, worker = ARGV[i], ARGV[i + 1]
  local key = J .. id
  local cur = redis.call('HMGET', key, 'status', 'worker_name', 'plugq_ahead', 'origin')
  local m = cur[3] and unpack_values(cur[3])
  if cur[1] == 'started' and cur[2] == worker and m and #m == 5
      and redis.call('ZSCORE', 'rq:executions:' .. id, m[1]) then
    local origin = cur[4] or ''
    unplace(id, origin, 'started')
    redis.call('HSET', key, 'status', 'queued')
    for k = 1, 4 do
      if m[k + 1] == '' then redis.call('HDEL', key, names[k])
      else redis.call('HSET', key, names[k], m[k + 1]) end
    end
    redis.call('HDEL', key, 'plugq_ahead')
    if m[5] ~= '' then redis.call('ZADD', EXP, m[5], id) end
    place(id, origin, 'queued', '1', 0, 0, 0, '', '')
    out[#out + 1] = id
  end
end
return out
"""

#: The worker began a job it claimed ahead: ARGV id, the mark's prefix
#: (``<length>:<execution id>``). Deletes the mark only if it is that claim's.
#: Sent without waiting for a reply (see RedisStorage._begun).
BEGUN = r"""
local key = 'rq:job:' .. ARGV[1]
local m = redis.call('HGET', key, 'plugq_ahead')
if m and string.sub(m, 1, #ARGV[2]) == ARGV[2] then redis.call('HDEL', key, 'plugq_ahead') end
return 1
"""

#: unregister_worker(name)
UNREGISTER = r"""
local wkey = 'rq:worker:' .. ARGV[1]
local queues = redis.call('HGET', wkey, 'queues')
if queues then
  for q in string.gmatch(queues, '[^,]+') do redis.call('SREM', 'rq:workers:' .. q, wkey) end
end
redis.call('SREM', 'rq:workers', wkey)
return redis.call('DEL', wkey)
"""

#: started ids per queue with their worker names (for the lease check in Python).
STARTED = r"""
local out = {}
for _, qkey in ipairs(redis.call('SMEMBERS', 'rq:queues')) do
  local name = string.sub(qkey, 10)
  for _, member in ipairs(redis.call('ZRANGE', 'rq:wip:' .. name, 0, -1)) do
    local id = string.match(member, '^(.*):[^:]*$') or member
    local h = redis.call('HMGET', 'rq:job:' .. id, 'status', 'worker_name')
    if h[1] == 'started' then out[#out + 1] = id; out[#out + 1] = h[2] or '' end
  end
end
return out
"""


# -- plugq's features beyond rq (priority and unique keys live in the scripts above) --

#: set_progress(id, text): one HSET of ``plugq_progress`` on the job hash (no record
#: write); returns 1 if the job exists.
SET_PROGRESS = r"""
local key = 'rq:job:' .. ARGV[1]
if redis.call('EXISTS', key) == 0 then return 0 end
redis.call('HSET', key, 'plugq_progress', ARGV[2])
return 1
"""

#: swap_value(key, expected, new): ARGV key, has expected ('1'/'0'), expected,
#: has new ('1'/'0'), new. Compare-and-set of one field of ``plugq:values``.
SWAP_VALUE = r"""
local cur = redis.call('HGET', 'plugq:values', ARGV[1])
if ARGV[2] == '1' then
  if cur ~= ARGV[3] then return 0 end
elseif cur then return 0 end
if ARGV[4] == '1' then redis.call('HSET', 'plugq:values', ARGV[1], ARGV[5])
else redis.call('HDEL', 'plugq:values', ARGV[1]) end
return 1
"""
