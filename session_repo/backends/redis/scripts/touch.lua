-- Extend a live binding: KEYS[3] = the index of ARGV[2], the owner the caller
-- believes holds it. ARGV[3] = expires_at, ARGV[4] = ttl ms. A reply {-1, owner}
-- means "believed wrong, nothing changed: the owner is this".
local current = redis.call('GET', KEYS[1])
if not current then return {0} end
if current ~= ARGV[2] then return {-1, current} end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
index(KEYS[3], ARGV[3], tonumber(ARGV[4]))
return {1, current}
