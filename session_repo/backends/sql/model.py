"""The one table SQL backends keep: session digest -> owner, with an expiry.

Times are integer milliseconds since the epoch from the repository's clock,
so no database clock and no naive datetime is ever involved.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import BigInteger, LargeBinary, MetaData, String, Table
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "SessionBinding", "bindings", "metadata"]

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


bindings = cast(Table, SessionBinding.__table__)
