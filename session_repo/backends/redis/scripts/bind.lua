-- Shared by the write scripts (upsert, acquire, touch, delete), which run after it.
-- KEYS[1] = the binding; ARGV[2] = its digest (hex).
local KEY, DIGEST = KEYS[1], ARGV[2]

-- What one call has learned, for a batch (upserts.lua) to read once: each owner
-- index's ttl at least (ms), each owner's mark, the last generation given.
local indexed, marks, given = {}, {}, nil

local function index(owner, expires_at, ttl)
  local idx = TAG .. 'o:' .. owner
  redis.call('ZADD', idx, expires_at, DIGEST)
  local known = indexed[idx]
  if known == nil or known < ttl then
    known = redis.call('PTTL', idx)  -- -1: none yet
    if known < ttl then
      redis.call('PEXPIRE', idx, ttl)
      known = ttl
    end
    indexed[idx] = known
  end
end

local function mark(owner)
  local epoch = marks[owner]
  if epoch == nil then
    epoch = redis.call('HGET', MARKS, owner) or '0'
    marks[owner] = epoch
  end
  return epoch
end

-- The binding there now (owner, gen, ep, exp, live), or nil.
local function current()
  local value = redis.call('GET', KEY)
  if not value then return nil end
  local owner, gen, ep, exp = parse(value, KEY)
  return {owner = owner, gen = gen, ep = ep, exp = exp, live = alive(owner, ep)}
end

-- A new generation: above every one given under this tag, and at least the server's
-- clock in microseconds, so that it still rises after a failover lost the last ones.
-- Within one call the clock's floor and the counter are read once.
local function fresh()
  if given == nil then
    local now = redis.call('TIME')
    local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
    given = math.max(tonumber(redis.call('GET', TAG .. 'g') or '0'), floor - 1)
  end
  given = given + 1
  local gen = string.format('%.0f', given)
  redis.call('SET', TAG .. 'g', gen)
  return gen
end

local function write(owner, gen, ep, expires_at, ttl)
  index(owner, expires_at, ttl)
  redis.call('ZADD', TAG .. 'e', expires_at, DIGEST)
  redis.call('SET', KEY, owner .. ' ' .. gen .. ' ' .. ep .. ' ' .. expires_at, 'PX', ttl)
end

-- Bind to owner: the same live owner keeps its generation, anything else takes a new
-- one. The binding is written before the old owner's index entry goes: a script that
-- fails (a key of the wrong type) stops before it, and Redis keeps what it did.
local function bind(old, owner, expires_at, ttl)
  local gen
  if old and old.live and old.owner == owner and old.gen ~= '0' then gen = old.gen else gen = fresh() end
  write(owner, gen, mark(owner), expires_at, ttl)
  if old and old.owner ~= owner then
    redis.call('ZREM', TAG .. 'o:' .. old.owner, DIGEST)
    indexed[TAG .. 'o:' .. old.owner] = nil  -- emptied, it is gone, and its ttl with it
  end
  return {owner, gen, expires_at}
end

-- The live binding if it has generation want ('' for any), or nil.
local function held(want)
  local old = current()
  if old and old.live and (want == '' or old.gen == want) then return old end
  return nil
end
