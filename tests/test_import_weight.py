"""The edges load light: no database driver, SQLAlchemy or Alembic until a backend is used.

Each import runs in a fresh interpreter, so what another test imported cannot hide
what this one loads.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("sqlalchemy", "alembic", "redis", "asyncpg", "asyncmy", "aiosqlite", "prometheus_client")


def loaded_after(statement: str) -> set[str]:
    probe = (
        f"{statement}\n"
        "import sys\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(out.split()) & set(HEAVY)


@pytest.mark.parametrize(
    "statement",
    [
        "import session_repo",
        "import session_repo.fly",
        "import session_repo.testing",
        "from session_repo import SessionRepository, StorageError, SessionStoreConfig",
        "from session_repo import MemorySessionRepository",
    ],
)
def test_the_edges_load_no_driver(statement: str) -> None:
    assert loaded_after(statement) == set()


def test_a_backend_loads_what_it_needs_on_first_use() -> None:
    assert {"sqlalchemy", "alembic"} <= loaded_after(
        "from session_repo import SqlSessionRepository"
    )
    assert "redis" in loaded_after("import session_repo; session_repo.RedisSessionRepository")
