-- KEYS[1] = marks. Every marked owner under this tag and its heartbeat's end, or
-- "" once it has lapsed: {owner, expires_at, owner, "", ...}.
local found = {}
for _, owner in ipairs(redis.call('HKEYS', KEYS[1])) do
  found[#found + 1] = owner
  found[#found + 1] = redis.call('GET', TAG .. 'h:' .. owner) or ''
end
return found
