-- KEYS[1] = owner index, KEYS[2] = expiries, KEYS[3..] = bindings; ARGV[1] = owner,
-- ARGV[2..] = their digests. Drops the digests from the index, and the bindings
-- (with their expiry entries) that are still this owner's.
local removed = 0
for i = 3, #KEYS do
  local digest = ARGV[i - 1]
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[2], digest)
    removed = removed + 1
  end
  redis.call('ZREM', KEYS[1], digest)
end
return removed
