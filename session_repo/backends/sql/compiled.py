"""SQLAlchemy statements compiled once to driver SQL, for the fast paths."""

from __future__ import annotations

from dataclasses import dataclass
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

    @classmethod
    def of(cls, statement: ClauseElement, dialect: Dialect) -> Compiled:
        compiled = statement.compile(dialect=dialect)
        order = getattr(compiled, "positiontup", None) or ()  # positional paramstyles' order
        return cls(str(compiled), tuple(order), dict(compiled.params))

    def args(self, **values: Any) -> tuple[Any, ...]:
        """Positional arguments for the driver, from named values and the constants."""
        return tuple(
            values[name] if name in values else self.constants[name] for name in self.order
        )
