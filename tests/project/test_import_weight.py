"""The edges load light: no database driver, SQLAlchemy or Alembic until a backend is used.

Each import runs in a fresh interpreter, so what another test imported cannot hide
what this one loads.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = (
    "sqlalchemy",
    "alembic",
    "redis",
    "valkey",
    "asyncpg",
    "asyncmy",
    "aiomysql",
    "aiosqlite",
    "prometheus_client",
)


def modules_after(statement: str) -> set[str]:
    """Every module in ``sys.modules`` after ``statement``, in a fresh interpreter."""
    probe = f"{statement}\nimport sys\nprint(' '.join(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(out.split())


def loaded_after(statement: str) -> set[str]:
    """The heavy top-level packages that ``statement`` loads."""
    return {m.split(".")[0] for m in modules_after(statement)} & set(HEAVY)


@pytest.mark.parametrize(
    "statement",
    [
        "import session_repo",
        "import session_repo.fly",
        "from session_repo.fly import FlyReplayMiddleware",
        "import session_repo.testing",
        "from session_repo.testing import FakeClock, FlyProxySimulator",
        "import session_repo.testing.plugin",  # pytest loads it in every run of a user's suite
        "import session_repo.asgi",
        "from session_repo import SessionRepository, StorageError, SessionStoreConfig",
        "from session_repo import MemorySessionRepository",
    ],
)
def test_the_edges_load_no_driver(statement: str) -> None:
    assert loaded_after(statement) == set()


def test_the_plugin_loads_the_memory_backend_only_when_its_fixture_is_used() -> None:
    assert "session_repo.backends.memory" not in modules_after("import session_repo.testing.plugin")


def test_a_backend_loads_what_it_needs_on_first_use() -> None:
    assert {"sqlalchemy", "alembic"} <= loaded_after(
        "from session_repo import SqlSessionRepository"
    )
    # The client library loads when a repository is made for a URL (nothing connects yet).
    assert "redis" not in loaded_after("import session_repo; session_repo.RedisSessionRepository")
    made = "import session_repo; session_repo.RedisSessionRepository('{}://127.0.0.1:1/0')"
    assert "redis" in loaded_after(made.format("redis"))
    assert "valkey" in loaded_after(made.format("valkey")) - loaded_after(made.format("redis"))
