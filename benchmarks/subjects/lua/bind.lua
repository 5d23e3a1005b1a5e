-- Shared by the write scripts (upsert, claim, touch, delete), which run after it.
-- KEYS[1] = binding, KEYS[2] = expiries, KEYS[3] = an owner's index; ARGV[1] =
-- digest hex. An owner's index may keep entries of bindings since rebound or
-- deleted: whoever reads it (delete_owner, cleanup) checks the binding's owner.
local function index(idx, expires_at, ttl)
  redis.call('ZADD', idx, expires_at, ARGV[1])
  if redis.call('PTTL', idx) < ttl then redis.call('PEXPIRE', idx, ttl) end  -- -1: none yet
end
-- The binding is written last: a script that fails (a key of the wrong type) stops
-- before it, and Redis keeps what a failed script did.
local function bind(owner, expires_at, ttl)
  index(KEYS[3], expires_at, ttl)
  redis.call('ZADD', KEYS[2], expires_at, ARGV[1])
  redis.call('SET', KEYS[1], owner, 'PX', ttl)
end
