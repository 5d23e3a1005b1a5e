"""The wheel is complete: installed into a clean venv, away from the checkout, it migrates
(the Alembic scripts ship inside it) and runs the demo."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT

pytestmark = pytest.mark.slow


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = run(
        sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), cwd=ROOT
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = out.glob("session_repo-*.whl")
    return wheel


def test_the_sdist_builds_and_carries_the_sources(tmp_path: Path) -> None:
    import tarfile

    built = run(
        sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path),
        cwd=ROOT,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (sdist,) = tmp_path.glob("session_repo-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    needed = ["pyproject.toml", "README.md", "CHANGELOG.md", "alembic.ini", "alembic/env.py"]
    needed += ["session_repo/__init__.py", "session_repo/py.typed"]
    for name in needed:
        assert name in names, name


def test_the_wheel_ships_the_migrations_and_the_plugin(wheel: Path) -> None:
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    assert "session_repo/backends/sql/migrations/env.py" in names
    assert any(n.startswith("session_repo/backends/sql/migrations/versions/0001") for n in names)
    assert "session_repo/py.typed" in names
    scripts = PROJECT_ROOT / "session_repo/backends/redis/scripts"
    for lua in sorted(scripts.glob("*.lua")):  # the Redis backend's scripts are data files
        assert f"session_repo/backends/redis/scripts/{lua.name}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "session-repo = session_repo.cli:main" in text
    assert "session_repo.testing.plugin" in text


def test_installed_wheel_migrates_and_runs_the_demo(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    install = run(str(bin_dir / "pip"), "install", "--quiet", str(wheel), cwd=tmp_path)
    assert install.returncode == 0, install.stderr[-2000:]

    away = tmp_path / "elsewhere"  # no alembic/ folder here: the scripts must come from the wheel
    away.mkdir()
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "SESSION_STORE_URL": f"sqlite+aiosqlite:///{tmp_path}/data/store.sqlite",
        "HOME": str(tmp_path),
    }
    migrate = run(str(bin_dir / "session-repo"), "migrate", cwd=away, env=env)
    assert migrate.returncode == 0, migrate.stderr
    current = run(str(bin_dir / "session-repo"), "current", cwd=away, env=env)
    assert "(head)" in current.stdout, current.stdout + current.stderr
    demo = run(str(bin_dir / "session-repo"), "demo", cwd=away, env=env)
    assert demo.returncode == 0, demo.stderr
    assert "claim" in demo.stdout.lower()
    imported = run(
        str(bin_dir / "python"),
        "-c",
        "import session_repo, sys; print(session_repo.__file__)",
        cwd=away,
        env=env,
    )
    assert str(env_dir) in imported.stdout  # the installed copy, not the checkout
