-- KEYS[1] = expiries, KEYS[2] = marks; ARGV[2] = now (ms). {live bindings, the other
-- bindings, owners whose heartbeat lives, owners whose heartbeat lapsed}. A lapsed
-- owner's bindings are all dead (a new epoch removes those of the old ones), so they
-- are its index's entries that have not expired.
local after = '(' .. ARGV[2]
local live = redis.call('ZCOUNT', KEYS[1], after, '+inf')
local beating, lapsed = {}, {}
for _, owner in ipairs(redis.call('HKEYS', KEYS[2])) do
  if redis.call('EXISTS', TAG .. 'h:' .. owner) == 1 then
    beating[#beating + 1] = owner
  else
    lapsed[#lapsed + 1] = owner
    live = live - redis.call('ZCOUNT', TAG .. 'o:' .. owner, after, '+inf')
  end
end
return {live, redis.call('ZCARD', KEYS[1]) - live, beating, lapsed}
