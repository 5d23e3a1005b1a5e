-- As upsert; ARGV[2] = replacing ("" for none), KEYS[3] its index. Returns the owner.
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[2] then return current end
bind(current, ARGV[3], ARGV[4], tonumber(ARGV[5]))
return ARGV[3]
