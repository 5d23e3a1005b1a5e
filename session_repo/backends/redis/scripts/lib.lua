-- Shared by every script but forget, which runs after it. ARGV[1] is the tag every
-- key of the call starts with: the key prefix (on a cluster, with the bucket's hash
-- tag). Keys named here from an owner (its index, its heartbeat) share the tag, so
-- they are in the slot of the script's KEYS. Under the tag:
--   s:<digest>  a binding: "owner generation epoch expires_at" (PX ttl)
--   e           every binding's digest, scored by expiry (ms)
--   o:<owner>   the owner's index: its bindings' digests, scored by expiry
--   g           the last generation given (never expires)
--   M           marks: owner -> epoch, for every owner that heartbeats
--   h:<owner>   its heartbeat: expires_at (PX ttl)
local TAG = ARGV[1]
local MARKS = TAG .. 'M'

-- A binding's owner, generation, owner epoch and expiry (strings). A plain owner,
-- as written before leases, is generation 0, epoch 0, its expiry from e.
local function parse(value, key)
  local owner, gen, ep, exp = string.match(value, '^(%S+) (%d+) (%d+) (%-?%d+)$')
  if owner then return owner, gen, ep, exp end
  local score = redis.call('ZSCORE', TAG .. 'e', string.sub(key, -64))
  return value, '0', '0', score or '0'
end

-- Beyond its own ttl, a binding is live iff its owner never heartbeat (no mark), or
-- its heartbeat key lives and the binding was written in the owner's current epoch.
local epochs = {}
local function alive(owner, ep)
  local epoch = epochs[owner]
  if epoch == nil then
    epoch = redis.call('HGET', MARKS, owner)
    if epoch and redis.call('EXISTS', TAG .. 'h:' .. owner) == 0 then epoch = 'lapsed' end
    epochs[owner] = epoch
  end
  return epoch == false or epoch == ep
end
