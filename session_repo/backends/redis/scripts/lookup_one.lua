-- KEYS[1] = one binding. Its value if it is live, else false (nil to the caller); a
-- plain owner comes back as "owner 0 0 expires_at". lookup.lua for one key, answered
-- as a bulk string rather than a list of one: a lone lookup's reply costs less to
-- build and to parse.
local key = KEYS[1]
local value = redis.call('GET', key)
if not value then return false end
local owner, gen, ep, exp = parse(value, key)
if not alive(owner, ep) then return false end
if gen == '0' then return owner .. ' 0 0 ' .. exp end
return value
