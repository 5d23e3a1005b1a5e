"""The tables SQL backends keep: bindings (session digest -> owner) and owner heartbeats.

Times are integer milliseconds since the epoch from the repository's clock,
so no database clock and no naive datetime is ever involved. Fencing generations
come from one source per database (``GENERATION_SOURCE``: a sequence on PostgreSQL
and MariaDB, a one-row counter table on SQLite), so they increase for a session
across deletes, expiry and cleanup, which remove its row.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import BigInteger, LargeBinary, MetaData, String, Table
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "GENERATION_SOURCE",
    "Base",
    "SessionBinding",
    "SessionOwner",
    "bindings",
    "metadata",
    "owners",
]

GENERATION_SOURCE = "session_generation"
"""The sequence (PostgreSQL, MariaDB) or one-row counter table (SQLite) of generations."""

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# MySQL cannot index a BLOB, and compares strings case-insensitively by default:
# a fixed BINARY(32) key and an ASCII binary collation keep both exact.
DigestType = LargeBinary(32).with_variant(mysql.BINARY(32), "mysql", "mariadb")
AllocIdType = String(255).with_variant(
    mysql.VARCHAR(255, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
)


class Base(DeclarativeBase):
    metadata = metadata


class SessionBinding(Base):
    """A binding is live while the clock's ``now`` (in ms) is below ``expires_at``."""

    __tablename__ = "session_bindings"

    session_key: Mapped[bytes] = mapped_column(DigestType, primary_key=True)
    alloc_id: Mapped[str] = mapped_column(AllocIdType, index=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    # Revision 0002 gives the column a default of the generation source's next value
    # (0 on SQLite, which a trigger replaces), for rows written without one; dialect
    # by dialect, so not here: autogenerate does not compare server defaults.
    generation: Mapped[int] = mapped_column(BigInteger)
    """The fencing token: a new one whenever the owner changes or the binding is made anew."""
    owner_epoch: Mapped[int] = mapped_column(BigInteger, server_default="0")
    """The owner's heartbeat epoch when bound (0: it had none): live only while it matches."""


class SessionOwner(Base):
    """An owner that heartbeats: alive while ``now < expires_at``; ``epoch`` counts its lapses."""

    __tablename__ = "session_owners"

    alloc_id: Mapped[str] = mapped_column(AllocIdType, primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    epoch: Mapped[int] = mapped_column(BigInteger)


bindings = cast(Table, SessionBinding.__table__)
owners = cast(Table, SessionOwner.__table__)
