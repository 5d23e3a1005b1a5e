"""What every backend shares: input rules, keys, counters, batching, and the front."""
