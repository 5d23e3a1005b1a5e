-- KEYS[1] = the index of ARGV[2], KEYS[2..] = bindings; ARGV[3..] = their digests,
-- whose score says expired. Drops those whose binding is gone or another owner's.
local pruned = 0
for i = 2, #KEYS do
  local value = redis.call('GET', KEYS[i])
  if not value or parse(value, KEYS[i]) ~= ARGV[2] then
    redis.call('ZREM', KEYS[1], ARGV[i + 1])
    pruned = pruned + 1
  end
end
return pruned
