-- As upsert, unless a live binding of another owner than ARGV[6] (replacing, ""
-- for none) holds the session. Returns the winner's {owner, generation, expires_at}.
local old = current()
if old and old.live and old.owner ~= ARGV[6] then return {old.owner, old.gen, old.exp} end
return bind(old, ARGV[3], ARGV[4], tonumber(ARGV[5]))
