-- Remove the live binding if it has generation ARGV[3] ("" for any), with its
-- expiry and index entries. 1 if it did, else 0.
local old = held(ARGV[3])
if not old then return 0 end
redis.call('DEL', KEY)
redis.call('ZREM', TAG .. 'e', DIGEST)
redis.call('ZREM', TAG .. 'o:' .. old.owner, DIGEST)
return 1
