"""`session-repo doctor` and `--json` on the read commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from session_repo.cli import main
from tests.servers import require_server


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def sqlite_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path}/store.sqlite"
    monkeypatch.setenv("SESSION_STORE_URL", url)
    return url


def findings(out: str) -> dict[str, dict[str, str]]:
    return {finding["check"]: finding for finding in json.loads(out)}


def test_doctor_on_a_missing_file_creates_nothing(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, tmp_path: Path
) -> None:
    status, out, _ = run(capsys, "doctor", "--json")
    assert status == 0
    assert findings(out)["file"]["level"] == "ok"
    assert not (tmp_path / "store.sqlite").exists()


def test_doctor_on_a_healthy_file(capsys: pytest.CaptureFixture[str], sqlite_url: str) -> None:
    assert run(capsys, "set", "s", "machine-a")[0] == 0
    status, out, _ = run(capsys, "doctor", "--json")
    found = findings(out)
    assert status == 0, out
    assert {name: f["level"] for name, f in found.items()} == {
        "url": "ok",
        "permissions": "ok",
        "schema": "ok",
        "wal": "ok",
    }


def test_doctor_names_a_readable_file_and_how_to_fix_it(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, tmp_path: Path
) -> None:
    assert run(capsys, "set", "s", "machine-a")[0] == 0
    os.chmod(tmp_path / "store.sqlite", 0o644)
    status, out, _ = run(capsys, "doctor")
    assert status == 1
    assert "mode 644" in out
    assert f"chmod 600 {tmp_path}/store.sqlite" in out


def test_doctor_fails_on_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        capsys, "doctor", "--url", "postgresql+asyncpg://postgres@127.0.0.1:1/none"
    )
    assert status == 2
    assert "fail" in out
    assert "fix:" in out


@pytest.mark.server
def test_doctor_checks_a_servers_schema_and_clock(capsys: pytest.CaptureFixture[str]) -> None:
    url = require_server("postgresql")
    run(capsys, "migrate", "--url", url)
    status, out, _ = run(capsys, "doctor", "--url", url, "--json")
    found = findings(out)
    assert found["schema"]["level"] == "ok"
    assert found["clock"]["level"] == "ok"
    assert status == 0


def test_read_commands_answer_in_json(capsys: pytest.CaptureFixture[str], sqlite_url: str) -> None:
    assert run(capsys, "migrate")[0] == 0
    status, out, _ = run(capsys, "current", "--json")
    assert status == 0
    assert json.loads(out)["at_head"] is True
    status, out, _ = run(capsys, "get", "nobody", "--json")
    assert (status, json.loads(out)) == (1, {"owner": None})
    run(capsys, "set", "s", "machine-a")
    status, out, _ = run(capsys, "get", "s", "--json")
    assert (status, json.loads(out)) == (0, {"owner": "machine-a"})
    status, out, _ = run(capsys, "cleanup", "--json")
    assert (status, json.loads(out)) == (0, {"removed": 0})


def test_doctor_reports_a_non_wal_file_and_leaves_it_as_it_is(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, tmp_path: Path
) -> None:
    import sqlite3

    assert run(capsys, "set", "s", "machine-a")[0] == 0
    with sqlite3.connect(tmp_path / "store.sqlite") as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
    status, out, _ = run(capsys, "doctor", "--json")
    assert findings(out)["wal"]["level"] == "warn"
    assert status == 1
    with sqlite3.connect(tmp_path / "store.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
