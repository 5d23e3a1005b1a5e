-- Bind or rebind: ARGV[3] = owner, ARGV[4] = expires_at, ARGV[5] = ttl ms.
bind(current(), ARGV[3], ARGV[4], tonumber(ARGV[5]))
return 1
