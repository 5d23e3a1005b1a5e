-- Extend the live binding to ARGV[3] (ttl ARGV[4] ms) if it has generation ARGV[5]
-- ("" for any), keeping its owner, generation and epoch. 1 if it did, else 0.
local old = held(ARGV[5])
if not old then return 0 end
write(old.owner, old.gen, old.ep, ARGV[3], tonumber(ARGV[4]))
return 1
