"""``benchmarks.middleware`` in-process with tiny numbers, so it cannot rot unnoticed.

Never a timing assertion: only the report's shape, what each request was answered,
and the storage calls, which are exact (an owned session's requests make none).
"""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.middleware import SCENARIOS, Settings, main, markdown, run

TINY = Settings(seconds=0.01, rounds=2, batch=5, counted=25, apps=("null", "starlette", "mcp"))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SESSION_REPO_REPLAY_CACHE", "SESSION_REPO_HEARTBEAT_TTL", "FLY_MACHINE_ID"):
        monkeypatch.delenv(name, raising=False)


async def test_every_app_has_every_request_kind_in_order() -> None:
    report = await run(TINY)
    assert [(r.app, r.scenario) for r in report.rows] == [
        (app, scenario[0]) for app in TINY.apps for scenario in SCENARIOS
    ]
    for row in report.rows:
        assert row.requests_per_s > 0
        assert math.isfinite(row.ratio)
        assert row.ratio > 0
        assert math.isfinite(row.added_us)
    for app in TINY.apps:
        assert report.row(app, "bare").ratio == 1.0
        assert report.target_met(app) is (report.row(app, "owned").ratio >= 0.95)

    answered = {(r.app, r.scenario): r.status for r in report.rows}
    for app in TINY.apps:
        assert answered[app, "bare"] == answered[app, "owned"] == 200
        assert answered[app, "replay-plain"] == answered[app, "replay-cache"] == 307
    assert answered["null", "no-key"] == answered["starlette", "stateless"] == 200
    assert answered["mcp", "no-key"] == 400  # MCP's answer to a request with no session

    calls = {(r.app, r.scenario): (r.first_calls, r.calls_per_request) for r in report.rows}
    for app in TINY.apps:
        first, then = calls[app, "owned"]
        assert then == 0  # the hot path: no storage I/O once the session is known here
        assert first >= 1  # the first request of a session this process has not seen
        assert calls[app, "replay-plain"] == calls[app, "replay-cache"] == (1, 1)  # a lookup
        assert calls[app, "no-key"] == calls[app, "stateless"] == (0, 0)

    assert report.lapses == 0  # the heartbeat kept up: the owned rows are the hot path
    table = markdown(report).splitlines()
    assert table[0].startswith("| app | request | requests/s | vs (a) |")
    assert len([line for line in table if line.startswith("| ")]) == 1 + len(report.rows)
    assert sum("an owned-session request at" in line for line in table) == len(TINY.apps)


def test_the_command_line_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seconds", "0.01", "--rounds", "1", "--apps", "null", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [row["scenario"] for row in printed["rows"]] == [s[0] for s in SCENARIOS]
    assert printed["settings"]["apps"] == ["null"]
