-- KEYS[1] = owner index, KEYS[2..] = bindings; ARGV[1] = owner, ARGV[2..] = digests
-- whose score says expired. Drops those whose binding is gone or rebound.
local pruned = 0
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then
    redis.call('ZREM', KEYS[1], ARGV[i])
    pruned = pruned + 1
  end
end
return pruned
