-- As upsert, unless a live binding of another owner than ARGV[5] (replacing, ""
-- for none) holds the session. Returns the owner.
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[5] then return current end
bind(ARGV[2], ARGV[3], tonumber(ARGV[4]))
return ARGV[2]
