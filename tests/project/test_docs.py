"""The documentation cannot rot: the site builds strictly, every page is in the nav,
and every Python example is either a file under ``docs/examples/`` (which other
tests run) or at least valid Python."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
PAGES = sorted(DOCS.rglob("*.md"))
SNIPPET = "--8<--"
OPENING = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    language: str
    source: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def code_blocks(path: Path) -> Iterator[Block]:
    """Fenced code blocks, dedented by their fence's indentation (blocks in lists)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = path.relative_to(ROOT).as_posix()
    i = 0
    while i < len(lines):
        opening = OPENING.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        words = opening["info"].strip().lstrip("{.").split()
        language = words[0].lower() if words else ""
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            stripped = lines[j].strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        yield Block(page, i + 1, language, textwrap.dedent("\n".join(body)) + "\n")
        i = j + 1


def python_blocks() -> list[Block]:
    pages = [*PAGES, ROOT / "README.md"]
    return [b for page in pages for b in code_blocks(page) if b.language in ("python", "py")]


EXAMPLE_SOURCES = {p.read_text(encoding="utf-8").strip(): p for p in EXAMPLES.glob("*.py")}


# -- the site --------------------------------------------------------------------


def require_mkdocs() -> None:
    for module, package in (
        ("mkdocs", "mkdocs"),
        ("material", "mkdocs-material"),
        ("mkdocstrings_handlers.python", "mkdocstrings[python]"),
    ):
        if importlib.util.find_spec(module.split(".")[0]) is None or (
            "." in module and importlib.util.find_spec(module) is None
        ):
            pytest.skip(f"{package} is not installed (it comes with pip install -e '.[dev]')")


def load_mkdocs_yml() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with mkdocs ('.[dev]')")

    class Loader(yaml.SafeLoader):  # mkdocs.yml names a Python function for mermaid fences
        pass

    Loader.add_multi_constructor(
        "tag:yaml.org,2002:python/name:", lambda loader, suffix, node: suffix
    )
    config: dict[str, Any] = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)
    return config


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    require_mkdocs()
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    # The API reference was generated from the docstrings, the changelog included.
    reference = (site / "reference" / "repository" / "index.html").read_text()
    assert 'id="session_repo.SqlSessionRepository"' in reference
    assert "Atomically take a session unless someone else holds it." in reference
    assert "0.1.0" in (site / "changelog" / "index.html").read_text()
    # Examples linked from the pages ship with the site.
    assert (site / "examples" / "quickstart.py").is_file()


def nav_pages(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from nav_pages(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from nav_pages(value)


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav = list(nav_pages(load_mkdocs_yml()["nav"]))
    pages = [p.relative_to(DOCS).as_posix() for p in PAGES]
    assert sorted(nav) == sorted(set(nav)), "a page is in the nav twice"
    assert sorted(nav) == pages


def test_the_build_fetches_nothing() -> None:
    config = load_mkdocs_yml()
    plugins = [p if isinstance(p, str) else next(iter(p)) for p in config["plugins"]]
    assert sorted(plugins) == ["mkdocstrings", "search"]  # no social cards, no privacy plugin
    assert config["theme"]["font"] is False  # no Google Fonts
    handler = next(p for p in config["plugins"] if isinstance(p, dict))["mkdocstrings"]
    assert "inventories" not in str(handler)  # no objects.inv fetched from other sites
    assert "import" not in handler["handlers"]["python"]


def test_the_changelog_page_is_the_root_changelog() -> None:
    page = (DOCS / "changelog.md").read_text().strip()
    root = (ROOT / "CHANGELOG.md").read_text().strip()
    assert page in (f'{SNIPPET} "CHANGELOG.md"', root)
    assert "## 0.1.0" in root


# -- the examples in the pages ---------------------------------------------------


def test_python_blocks_are_found() -> None:
    blocks = python_blocks()
    assert len(blocks) > 20
    quickstart = [b for b in blocks if b.page == "docs/quickstart.md"]
    assert quickstart[0].source.strip() in EXAMPLE_SOURCES  # the file, shown verbatim


@pytest.mark.parametrize("block", python_blocks(), ids=str)
def test_python_block_is_an_example_file_or_compiles(block: Block) -> None:
    source = block.source
    if SNIPPET in source:  # included from a file at build time: it must be an example
        for line in source.splitlines():
            if SNIPPET in line:
                name = line.split(SNIPPET, 1)[1].strip().strip("\"'")
                assert (ROOT / name).resolve().parent == EXAMPLES, f"{block}: {name}"
                assert (ROOT / name).is_file(), f"{block}: {name}"
        return
    if source.strip() in EXAMPLE_SOURCES:  # a file under docs/examples/, run by other tests
        return
    # Snippets may await at top level, as in an async test or a REPL.
    try:
        compile(source, str(block), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    except SyntaxError as exc:
        pytest.fail(f"{block}: the example is not valid Python: {exc}")
