"""Every public function, method and class has a Google-style docstring.

The mkdocs API reference renders ``Args:``/``Returns:``/``Raises:``; a public name
with parameters and no ``Args:`` would show none. Public means: exported by a
public module's ``__all__`` (the modules users import, below).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest

PUBLIC_MODULES = [
    "session_repo",
    "session_repo.asgi",
    "session_repo.backends.base",
    "session_repo.backends.memory",
    "session_repo.clock",
    "session_repo.config",
    "session_repo.container",
    "session_repo.contract",
    "session_repo.errors",
    "session_repo.fly",
    "session_repo.metrics",
    "session_repo.opentelemetry",
    "session_repo.prometheus",
    "session_repo.sync",
    "session_repo.testing",
]


def parameters(function: Callable[..., Any]) -> list[str]:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return []
    return [
        name
        for name, p in signature.parameters.items()
        if name not in {"self", "cls"} and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def public_callables() -> Iterator[tuple[str, Any, str]]:
    """(qualified name, object, docstring) of each public function, class and method."""
    seen: set[int] = set()
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if id(value) in seen or not (inspect.isclass(value) or inspect.isfunction(value)):
                continue
            seen.add(id(value))
            if not getattr(value, "__module__", "").startswith("session_repo"):
                continue
            yield f"{module_name}.{name}", value, inspect.getdoc(value) or ""
            if inspect.isclass(value) and not issubclass(value, BaseException):
                for attr, member in vars(value).items():
                    if attr.startswith("_") or not inspect.isfunction(member):
                        continue
                    yield f"{module_name}.{name}.{attr}", member, inspect.getdoc(member) or ""


CALLABLES = list(public_callables())


@pytest.mark.parametrize(("name", "value", "doc"), CALLABLES, ids=[c[0] for c in CALLABLES])
def test_a_public_name_says_what_it_takes(name: str, value: Any, doc: str) -> None:
    assert doc, f"{name} has no docstring"
    target = value.__init__ if inspect.isclass(value) else value
    if inspect.isclass(value) and "__init__" not in vars(value):
        return  # a dataclass or protocol: its fields are documented where they are declared
    if parameters(target):
        assert "Args:" in doc, f"{name} takes {parameters(target)} but its docstring has no Args:"


def test_the_check_sees_the_public_api() -> None:
    names = {name for name, _, _ in CALLABLES}
    assert "session_repo.backends.base.StoreFront.claim" in names
    assert "session_repo.fly.FlyReplayMiddleware" in names
    assert len(names) > 60
