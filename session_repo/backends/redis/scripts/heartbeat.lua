-- KEYS[1] = marks, KEYS[2] = the heartbeat of ARGV[2]; ARGV[3] = expires_at, ARGV[4] =
-- ttl ms. A first heartbeat marks the owner (epoch 0); a live one is extended; one
-- after a lapse starts a new epoch, and removes what the lapse killed under this
-- tag (dead for good either way; gone, the gauges need not tell it from the live).
local owner = ARGV[2]
local epoch = redis.call('HGET', KEYS[1], owner)
if not epoch then
  redis.call('HSET', KEYS[1], owner, '0')
elseif redis.call('EXISTS', KEYS[2]) == 0 then
  local idx = TAG .. 'o:' .. owner
  for _, digest in ipairs(redis.call('ZRANGE', idx, 0, -1)) do
    local key = TAG .. 's:' .. digest
    local value = redis.call('GET', key)
    if value and parse(value, key) == owner then
      redis.call('DEL', key)
      redis.call('ZREM', TAG .. 'e', digest)
    end
  end
  redis.call('DEL', idx)
  redis.call('HSET', KEYS[1], owner, tostring(tonumber(epoch) + 1))
end
redis.call('SET', KEYS[2], ARGV[3], 'PX', tonumber(ARGV[4]))
return 1
