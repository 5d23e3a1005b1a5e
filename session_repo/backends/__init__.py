"""The storage backends, one package or module each: memory, null, Redis, SQL."""
