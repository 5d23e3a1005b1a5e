"""SQLAlchemy statements compiled once to driver SQL, for the fast paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from sqlalchemy import ClauseElement
from sqlalchemy.engine import Dialect

__all__ = ["Compiled"]


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement as SQL text, with its parameters' order and constant values."""

    sql: str
    order: tuple[str, ...]
    constants: dict[str, Any]
    # The values in ``order`` picked in C, when every one comes from the caller (no
    # literal in the statement: each parameter's compiled value is None).
    _pick: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        literal = any(value is not None for value in self.constants.values())
        if len(self.order) > 1 and not literal:
            object.__setattr__(self, "_pick", itemgetter(*self.order))

    @classmethod
    def of(cls, statement: ClauseElement, dialect: Dialect) -> Compiled:
        compiled = statement.compile(dialect=dialect)
        order = getattr(compiled, "positiontup", None) or ()  # positional paramstyles' order
        return cls(str(compiled), tuple(order), dict(compiled.params))

    def args(self, **values: Any) -> tuple[Any, ...]:
        """Positional arguments for the driver, from named values and the constants."""
        if self._pick is not None:
            picked: tuple[Any, ...] = self._pick(values)
            return picked
        return tuple(
            values[name] if name in values else self.constants[name] for name in self.order
        )
