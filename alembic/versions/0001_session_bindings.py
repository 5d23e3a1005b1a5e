"""Create session_bindings: SHA-256 session digest -> alloc id, expiry in epoch ms.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_bindings",
        sa.Column(
            "session_key",
            sa.LargeBinary(32).with_variant(mysql.BINARY(32), "mysql", "mariadb"),
            nullable=False,
        ),
        sa.Column(
            "alloc_id",
            sa.String(255).with_variant(
                mysql.VARCHAR(255, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
            ),
            nullable=False,
        ),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("session_key", name=op.f("pk_session_bindings")),
    )
    op.create_index(
        op.f("ix_session_bindings_alloc_id"), "session_bindings", ["alloc_id"], unique=False
    )
    op.create_index(
        op.f("ix_session_bindings_expires_at"), "session_bindings", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_session_bindings_expires_at"), table_name="session_bindings")
    op.drop_index(op.f("ix_session_bindings_alloc_id"), table_name="session_bindings")
    op.drop_table("session_bindings")
