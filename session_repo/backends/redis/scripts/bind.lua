-- Shared by the write scripts (upsert, claim, touch, delete), which run after it.
-- KEYS[1] = binding, KEYS[2] = expiries, KEYS[3] = the index of the owner the
-- caller believes holds the binding, KEYS[4] = the new owner's index;
-- ARGV[1] = digest hex, ARGV[2] = that believed owner ("" for none). A reply
-- {-1, owner} means "believed wrong, nothing changed: the owner is this".
local function index(idx, expires_at, ttl)
  redis.call('ZADD', idx, expires_at, ARGV[1])
  local left = redis.call('PTTL', idx)
  if left == -1 or left < ttl then redis.call('PEXPIRE', idx, ttl) end
end
local function bind(current, owner, expires_at, ttl)
  if current and current ~= owner then redis.call('ZREM', KEYS[3], ARGV[1]) end
  redis.call('SET', KEYS[1], owner, 'PX', ttl)
  redis.call('ZADD', KEYS[2], expires_at, ARGV[1])
  index(KEYS[4], expires_at, ttl)
end
