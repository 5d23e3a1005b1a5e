"""Leases: a fencing generation and owner epoch per binding, owner heartbeats, a generation source.

Existing bindings are kept, each with generation 1 and owner epoch 0 (no owner had
a heartbeat before this revision); the generation source starts above them, at 2.
The source is a SEQUENCE on PostgreSQL and MariaDB (both hand out increasing values
to every connection, committed or not), and a one-row counter table on SQLite,
moved up by triggers in the same statement as the write that takes a generation
(SQLite's writers take turns, so the counter and the row change together).

A row inserted without a generation (by a 0001-era instance during a rolling
deploy, or by hand) gets a fresh one: the column defaults to the sequence's next
value, and on SQLite to 0, which a trigger replaces with the counter's next value.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SOURCE = "session_generation"  # model.GENERATION_SOURCE, frozen as this revision made it
FIRST_FRESH = 2  # the rows there are hold generation 1

# SQLite: a row inserted with generation 0 takes the counter's next value, and the
# counter never falls behind a generation written to a binding. The WHEN clauses
# read nothing but the row, so a write that keeps its generation pays almost nothing.
_RAISE = f"BEGIN UPDATE {SOURCE} SET value = NEW.generation WHERE value < NEW.generation; END"
SQLITE_TRIGGERS = {
    "session_generation_fresh": (
        "AFTER INSERT ON session_bindings WHEN NEW.generation = 0 BEGIN "
        f"UPDATE {SOURCE} SET value = value + 1; "
        f"UPDATE session_bindings SET generation = (SELECT value FROM {SOURCE}) "
        "WHERE session_key = NEW.session_key; END"
    ),
    "session_generation_inserted": (
        f"AFTER INSERT ON session_bindings WHEN NEW.generation <> 0 {_RAISE}"
    ),
    "session_generation_updated": (
        "AFTER UPDATE OF generation ON session_bindings "
        f"WHEN NEW.generation <> OLD.generation {_RAISE}"
    ),
}


def _is_mysql_proper() -> bool:
    """MySQL, not MariaDB, on a live connection (offline SQL is printed as for MariaDB)."""
    context = op.get_context()
    if context.as_sql or context.dialect.name != "mysql":
        return False
    return not getattr(context.dialect, "is_mariadb", False)


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    if _is_mysql_proper():
        raise NotImplementedError(
            "session-repo's revision 0002 needs a SEQUENCE: MariaDB 10.3 or later, not MySQL"
        )
    op.create_table(
        "session_owners",
        sa.Column(
            "alloc_id",
            sa.String(255).with_variant(
                mysql.VARCHAR(255, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
            ),
            nullable=False,
        ),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("alloc_id", name=op.f("pk_session_owners")),
    )
    op.create_index(
        op.f("ix_session_owners_expires_at"), "session_owners", ["expires_at"], unique=False
    )
    # A constant default first: no table rewrite on PostgreSQL or MariaDB. SQLite keeps
    # 0 as its default (it cannot change one without copying the table): the trigger
    # gives such a row a fresh generation.
    op.add_column(
        "session_bindings",
        sa.Column(
            "generation",
            sa.BigInteger(),
            nullable=False,
            server_default="0" if dialect == "sqlite" else "1",
        ),
    )
    op.add_column(
        "session_bindings",
        sa.Column("owner_epoch", sa.BigInteger(), nullable=False, server_default="0"),
    )
    if dialect == "sqlite":
        op.execute("UPDATE session_bindings SET generation = 1")
        op.create_table(SOURCE, sa.Column("value", sa.BigInteger(), nullable=False))
        op.execute(f"INSERT INTO {SOURCE} (value) VALUES ({FIRST_FRESH - 1})")
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
        return
    op.execute(f"CREATE SEQUENCE {SOURCE} START WITH {FIRST_FRESH}")
    if dialect == "postgresql":
        op.execute(
            f"ALTER TABLE session_bindings ALTER COLUMN generation SET DEFAULT nextval('{SOURCE}')"
        )
    else:
        op.execute(
            "ALTER TABLE session_bindings MODIFY COLUMN generation BIGINT NOT NULL "
            f"DEFAULT (NEXT VALUE FOR {SOURCE})"
        )


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.drop_table(SOURCE)
    with op.batch_alter_table("session_bindings") as batch:
        batch.drop_column("owner_epoch")
        batch.drop_column("generation")
    if dialect != "sqlite":
        op.execute(f"DROP SEQUENCE IF EXISTS {SOURCE}")
    op.drop_index(op.f("ix_session_owners_expires_at"), table_name="session_owners")
    op.drop_table("session_owners")
