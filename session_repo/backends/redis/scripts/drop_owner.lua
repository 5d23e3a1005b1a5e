-- KEYS[1] = the index of ARGV[2]; ARGV[3] = batch, ARGV[4] = mode. Removes up to a
-- batch of the bindings the index lists that are still the owner's. Modes: "bindings"
-- (delete_owner); "release" (once none is left, its mark and heartbeat go too);
-- "lapsed" (cleanup: only while its heartbeat has lapsed; then its mark goes, after
-- its bindings, which would otherwise count as a never-heartbeating owner's and live).
-- Returns {removed, of them live, 1 if none is left}.
local owner, batch, mode = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local beat = TAG .. 'h:' .. owner
if mode == 'lapsed' and (not redis.call('HGET', MARKS, owner) or redis.call('EXISTS', beat) == 1) then
  return {0, 0, 1}
end
local removed, live = 0, 0
for _, digest in ipairs(redis.call('ZRANGE', KEYS[1], 0, batch - 1)) do
  local key = TAG .. 's:' .. digest
  local value = redis.call('GET', key)
  if value then
    local holder, _, ep = parse(value, key)
    if holder == owner then
      if alive(owner, ep) then live = live + 1 end
      redis.call('DEL', key)
      redis.call('ZREM', TAG .. 'e', digest)
      removed = removed + 1
    end
  end
  redis.call('ZREM', KEYS[1], digest)
end
local done = redis.call('EXISTS', KEYS[1]) == 0
if done and mode ~= 'bindings' then
  redis.call('HDEL', MARKS, owner)
  if mode == 'release' then redis.call('DEL', beat) end
end
return {removed, live, done and 1 or 0}
