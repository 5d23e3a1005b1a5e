-- Bind or rebind: KEYS[3] = the new owner's index. ARGV[2] = owner, ARGV[3] =
-- expires_at, ARGV[4] = ttl ms. The old owner's index entry is left for its readers.
bind(ARGV[2], ARGV[3], tonumber(ARGV[4]))
return 1
