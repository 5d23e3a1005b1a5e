-- Remove a binding and its index entries. KEYS[4] unused.
local current = redis.call('GET', KEYS[1])
if not current then return {0} end
if current ~= ARGV[2] then return {-1, current} end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return {1, current}
