-- Remove a live binding and its expiry entry; its owner's index entry too when the
-- caller named that owner (ARGV[2], KEYS[3]), else it is left for the index's readers.
local current = redis.call('GET', KEYS[1])
if not current then return {0} end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if current == ARGV[2] then redis.call('ZREM', KEYS[3], ARGV[1]) end
return {1, current}
