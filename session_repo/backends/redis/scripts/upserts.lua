-- Several upserts under one tag, each as upsert.lua runs one: KEYS = the bindings,
-- then e, g and M; ARGV[1] = the tag, then four per binding: its digest, owner,
-- expires_at and ttl ms. What the call reads once (owners' marks and liveness,
-- index ttls, the generation counter) serves them all. One that fails (a key of the
-- wrong type) fails alone, stopped where upsert.lua would stop: its answer is its
-- error, the others' 1.
local function upsert(owner, expires_at, ttl)
  bind(current(), owner, expires_at, ttl)
end

local out = {}
for i = 1, #KEYS - 3 do
  local at = 4 * i - 2
  KEY, DIGEST = KEYS[i], ARGV[at]
  local ok, err = pcall(upsert, ARGV[at + 1], ARGV[at + 2], tonumber(ARGV[at + 3]))
  if ok then
    out[i] = 1
  else  -- Redis 7 raises a string; before it, a table with the reply in err
    out[i] = redis.error_reply(type(err) == 'table' and err.err or tostring(err))
  end
end
return out
