"""The schema as the first store versions created it (``SQLModel.metadata.create_all``).

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Stores made before migrations existed have exactly these tables; ``upgrade`` stamps them at
this revision instead of running it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _id(length: int = 32) -> sa.Column:
    return sa.Column("id", sa.String(length), primary_key=True, nullable=False)


def _created() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "run",
        _id(),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("generator", sa.String(100), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("generator_config", sa.Text(), nullable=False),
        sa.Column("population_size", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        _created(),
    )
    op.create_table(
        "individual",
        _id(64),
        sa.Column("genome_json", sa.Text(), nullable=False),
        sa.Column("tensors_hash", sa.String(64), nullable=True),
        sa.Column("parents", sa.Text(), nullable=False),
        _created(),
    )
    op.create_table(
        "branch",
        _id(),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("run.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("head_snapshot_id", sa.String(64), nullable=True),
        sa.Column("forked_from_snapshot_id", sa.String(64), nullable=True),
        _created(),
        sa.UniqueConstraint("run_id", "name", name="uq_branch_run_name"),
    )
    op.create_index("ix_branch_run_id", "branch", ["run_id"])
    op.create_table(
        "snapshot",
        _id(),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("run.id"), nullable=False),
        sa.Column("branch_id", sa.String(32), sa.ForeignKey("branch.id"), nullable=False),
        sa.Column("parent_id", sa.String(64), sa.ForeignKey("snapshot.id"), nullable=True),
        sa.Column("skip_id", sa.String(64), sa.ForeignKey("snapshot.id"), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("population", sa.Text(), nullable=False),
        sa.Column("images", sa.Text(), nullable=False),
        sa.Column("thumbs", sa.Text(), nullable=False),
        sa.Column("rng_state", sa.Text(), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("consumed_ratings", sa.Text(), nullable=False),
        sa.Column("generator_config", sa.Text(), nullable=False),
        _created(),
    )
    op.create_index("ix_snapshot_run_id", "snapshot", ["run_id"])
    op.create_index("ix_snapshot_parent_id", "snapshot", ["parent_id"])
    # branch <-> snapshot is a cycle: the branch's snapshot keys come once both tables exist.
    # Batch mode rebuilds the table on SQLite (no ALTER ... ADD CONSTRAINT there).
    with op.batch_alter_table("branch") as batch:
        batch.create_foreign_key("fk_branch_head", "snapshot", ["head_snapshot_id"], ["id"])
        batch.create_foreign_key(
            "fk_branch_forked_from", "snapshot", ["forked_from_snapshot_id"], ["id"]
        )
    op.create_table(
        "rating",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("run.id"), nullable=False),
        sa.Column("snapshot_id", sa.String(32), sa.ForeignKey("snapshot.id"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("individual_id", sa.String(64), sa.ForeignKey("individual.id"), nullable=False),
        sa.Column("session", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("other_position", sa.Integer(), nullable=True),
        _created(),
    )
    op.create_index("ix_rating_snapshot_id", "rating", ["snapshot_id"])


def downgrade() -> None:
    for index, table in (
        ("ix_rating_snapshot_id", "rating"),
        ("ix_snapshot_parent_id", "snapshot"),
        ("ix_snapshot_run_id", "snapshot"),
        ("ix_branch_run_id", "branch"),
    ):
        op.drop_index(index, table_name=table)
    with op.batch_alter_table("branch") as batch:
        batch.drop_constraint("fk_branch_forked_from", type_="foreignkey")
        batch.drop_constraint("fk_branch_head", type_="foreignkey")
    for table in ("rating", "snapshot", "branch", "individual", "run"):
        op.drop_table(table)
