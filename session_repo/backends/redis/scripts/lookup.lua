-- KEYS = bindings under one tag. For each, its value if it is live, else false
-- (nil to the caller); a plain owner comes back as "owner 0 0 expires_at".
local found = {}
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  found[i] = false
  if value then
    local owner, gen, ep, exp = parse(value, key)
    if alive(owner, ep) then
      if gen == '0' then value = owner .. ' 0 0 ' .. exp end
      found[i] = value
    end
  end
end
return found
