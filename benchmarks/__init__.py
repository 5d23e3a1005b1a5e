"""Benchmarks for session-repo: ``python -m benchmarks.run`` (``--help`` for options).

Every figure is measured in the same run as the baselines it is compared with
(raw ``sqlite3``, ``aiosqlite``, ``asyncpg`` and redis-py, ``cachetools.TTLCache``,
Litestar's stores), so ratios hold on any machine. See ``docs/benchmarks.md``.
"""
