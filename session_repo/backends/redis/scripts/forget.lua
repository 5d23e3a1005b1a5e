-- KEYS[1] = expiries, KEYS[2..] = bindings; ARGV[1..] = digests whose score says
-- expired. Drops those whose binding Redis has expired; how many.
local forgotten = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('ZREM', KEYS[1], ARGV[i - 1])
    forgotten = forgotten + 1
  end
end
return forgotten
