"""The house rules, checked on the source: what may import what, and what stays private.

``docs/architecture.md`` draws the rooms and their imports; these tests keep the
drawing and the code the same, and both inside the rules.
"""

from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT
PACKAGE = ROOT / "session_repo"
DIAGRAM = ROOT / "docs" / "architecture.md"

# Which room a top-level module or package of session_repo belongs to.
ROOMS = {
    "__init__": "session_repo",
    "__main__": "cli",
    "_version": "types",
    "errors": "types",
    "clock": "types",
    "metrics": "types",
    "lease": "types",
    "contract": "contract",
    "config": "contract",
}

# Each room and the rooms it may import (the rules of docs/architecture.md).
ALLOWED: dict[str, set[str]] = {
    "types": set(),
    "_core": {"types"},
    "contract": {"types", "_core"},
    "backends": {"types", "contract", "_core"},
    "resilience": {"types", "contract", "_core", "backends"},
    "factory": {"types", "contract", "backends", "resilience"},
    "session_repo": {"types", "contract", "factory", "backends", "resilience"},
    "_asgi": set(),
    "fly": {"types", "contract", "_asgi"},
    "asgi": {"types", "contract", "_asgi"},
    "testing": {"types", "contract", "_asgi", "session_repo"},
    "prometheus": {"types", "contract"},
    "opentelemetry": {"types", "contract"},
    "sync": {"types", "contract", "factory"},
    "container": {"types", "contract", "factory"},
    "cli": {"types", "contract", "_core", "backends", "factory", "session_repo"},
}
EDGES = {"fly", "asgi", "testing", "prometheus", "opentelemetry", "sync", "container", "cli"}

# Modules longer than ~300 lines, each one idea (checked to be still that long).
ONE_IDEA = {
    "session_repo/_core/front.py": "the contract's operations, each a docstring and a few lines",
    "session_repo/resilience/wrapper.py": "each operation: its docstring and inline healthy path",
    "session_repo/testing/simulator.py": "Fly's proxy: half of it is the docstrings users read",
    "session_repo/config.py": "one frozen dataclass and its environment variables",
    "session_repo/contract.py": "the Protocol: one docstring per operation, which users read",
}
LONG = 300

# Private attributes of other libraries that tests may read (not session_repo's).
FOREIGN_PRIVATE = {
    "_replace",  # NamedTuple's public API
    "_asdict",
    "_fields",
    "_run",  # asyncio.events.Handle._run, timed by the benchmark smoke test
    "_config",  # asyncpg's connection settings, to check URL options reached the driver
    "_stmt_cache",
    "_writer",  # redis-py's Connection: a connection torn down under a write (#4287)
    "_send_packed_command",
}


def room(module: str) -> str | None:
    """The room of ``session_repo...`` module ``module``; None for anything else."""
    parts = module.split(".")
    if parts[0] != "session_repo":
        return None
    if len(parts) == 1:
        return "session_repo"
    return ROOMS.get(parts[1], parts[1])


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = ROOT) -> Iterator[tuple[str, list[str]]]:
    """Every module ``path`` imports (function bodies included), with the names taken."""
    package = module_name(path if path.name == "__init__.py" else path.parent, root)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base, [alias.name for alias in node.names]


def sources(root: Path = ROOT) -> list[Path]:
    return sorted((root / "session_repo").rglob("*.py"))


def actual_edges(root: Path = ROOT) -> set[tuple[str, str]]:
    edges = set()
    for path in sources(root):
        here = room(module_name(path, root))
        for target, _ in imports(path, root):
            there = room(target)
            if here is not None and there is not None and there != here:
                edges.add((here, there))
    return edges


def drawn() -> tuple[set[str], set[tuple[str, str]]]:
    text = DIAGRAM.read_text(encoding="utf-8")
    block = text.split("```mermaid\n", 1)[1].split("```", 1)[0]
    nodes = set(re.findall(r"^\s*(\w+)\[", block, re.M))
    arrows = set(re.findall(r"^\s*(\w+) --> (\w+)\s*$", block, re.M))
    return nodes, arrows


def forbidden_imports(root: Path = ROOT) -> list[str]:
    return sorted(
        f"{module_name(path, root)} imports {target}"
        for path in sources(root)
        for target, _ in imports(path, root)
        if (here := room(module_name(path, root))) is not None
        and (there := room(target)) is not None
        and there != here
        and there not in ALLOWED[here]
    )


def test_every_import_between_rooms_is_allowed() -> None:
    assert forbidden_imports() == []


def test_the_core_imports_no_backend_and_no_edge() -> None:
    assert not {there for here, there in actual_edges() if here == "_core"} & (
        EDGES | {"backends", "resilience", "factory"}
    )


def test_fly_knows_only_the_public_contract() -> None:
    assert {there for here, there in actual_edges() if here == "fly"} <= {
        "types",
        "contract",
        "_asgi",
    }


def test_the_library_never_imports_its_testing_helpers() -> None:
    users = {here for here, there in actual_edges() if there == "testing"}
    assert users == set()


def test_no_room_is_drawn_that_does_not_exist() -> None:
    nodes, _ = drawn()
    for node in nodes:
        if node in {"types", "contract", "session_repo"}:
            continue
        assert (PACKAGE / node).is_dir() or (PACKAGE / f"{node}.py").is_file(), node
    assert nodes == set(ALLOWED)  # every room is drawn


def test_the_drawing_is_the_code() -> None:
    nodes, arrows = drawn()
    assert arrows <= {(a, b) for a in ALLOWED for b in ALLOWED[a]}  # every arrow allowed
    assert {a for a, _ in arrows} | {b for _, b in arrows} <= nodes
    assert arrows == actual_edges()  # and drawn exactly as the code imports


def private_paths(module: str, names: list[str]) -> list[tuple[str, str]]:
    """(the package that owns it, the private part) for each private part of an import."""
    found = []
    parts = module.split(".")
    for index, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            found.append((".".join(parts[:index]), part))
    found += [(module, name) for name in names if name.startswith("_") and name != "__version__"]
    return found


def private_imports(root: Path = ROOT) -> list[str]:
    broken = []
    for path in sources(root):
        importer = module_name(path, root)
        for target, names in imports(path, root):
            if not target.startswith("session_repo"):
                continue
            for owner, part in private_paths(target, names):
                if not (importer == owner or importer.startswith(owner + ".")):
                    broken.append(f"{importer} imports {part} of {owner}")
    return broken


def test_no_private_name_is_imported_from_outside_its_package() -> None:
    assert private_imports() == []


def test_tests_use_public_paths_only() -> None:
    broken = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for target, names in imports(path):
            if target.startswith("session_repo") and private_paths(target, names):
                broken.append(f"{path.name}: {target} {names}")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                continue
            if node.attr.startswith("__") or node.attr in FOREIGN_PRIVATE:
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in {"self", "cls"}:
                continue  # a test's own class
            if isinstance(owner, ast.Call) and ast.unparse(owner.func) == "super":
                continue
            broken.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert broken == []


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_long_module_is_one_idea(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    name = str(path.relative_to(ROOT))
    if name in ONE_IDEA:
        assert lines > LONG, f"{name} is short now: take it off ONE_IDEA"
    else:
        assert lines <= LONG, f"{name} has {lines} lines: split it by idea"


def test_the_checks_catch_planted_violations(tmp_path: Path) -> None:
    shutil.copytree(PACKAGE, tmp_path / "session_repo")
    plant = {
        "_core/keys.py": "from session_repo.cli import main\n",  # the core imports an edge
        "fly/request.py": "from session_repo.backends import memory\n",  # fly, a backend
        "prometheus.py": "import session_repo.testing._machine\n",  # another's private
    }
    for name, line in plant.items():
        target = tmp_path / "session_repo" / name
        target.write_text(target.read_text(encoding="utf-8") + line, encoding="utf-8")
    assert forbidden_imports(tmp_path) == [
        "session_repo._core.keys imports session_repo.cli",
        "session_repo.fly.request imports session_repo.backends",
        "session_repo.prometheus imports session_repo.testing._machine",
    ]
    assert private_imports(tmp_path) == [
        "session_repo.prometheus imports _machine of session_repo.testing"
    ]
    assert ("fly", "backends") in actual_edges(tmp_path) - actual_edges()
