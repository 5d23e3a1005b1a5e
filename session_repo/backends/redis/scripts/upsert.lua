-- Bind or rebind. ARGV[3] = owner, ARGV[4] = expires_at, ARGV[5] = ttl ms.
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[2] and current ~= ARGV[3] then return {-1, current} end
bind(current, ARGV[3], ARGV[4], tonumber(ARGV[5]))
return {1, ARGV[3]}
