"""Any command line: an exit status, at most one line of error, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_repo.cli import main

COMMANDS = ["get", "set", "delete", "current", "stats", "health", "cleanup", "doctor", "migrate"]
WORDS = st.one_of(
    st.sampled_from([*COMMANDS, "--url", "--json", "--ttl", "--sql", "-", "--help", "0", "-1"]),
    st.text(max_size=40),
    st.sampled_from(["memory://", "ftp://x", "sqlite+aiosqlite:///", "redis://127.0.0.1:1/0"]),
)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_STORE_URL", f"sqlite+aiosqlite:///{tmp_path}/fuzz.sqlite")
    monkeypatch.setenv("SESSION_STORE_CONNECT_TIMEOUT_MS", "500")


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(argv=st.lists(WORDS, min_size=0, max_size=5))
def test_any_arguments(argv: list[str], store: None, capsys: pytest.CaptureFixture[str]) -> None:
    if any(word.startswith("--h") or word in ("-h",) for word in argv):
        argv = [word for word in argv if not word.startswith("--h")]
    status = main(argv)
    out, err = capsys.readouterr()
    assert isinstance(status, int)
    assert status in (0, 1, 2)
    assert "Traceback" not in out + err
    if status == 2:
        assert err.count("\n") <= 2, err  # one error line (a note may precede it)
        assert err.strip().splitlines()[-1].startswith("session-repo: error:")
