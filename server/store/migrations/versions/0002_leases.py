"""Leases for scheduler replicas; which replica's alarm log holds an alarm.

Revision ID: 0002_leases
Revises: 0001_baseline
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_leases"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=160), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("renewed_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("alarms") as batch_op:
        batch_op.add_column(sa.Column("log_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alarms") as batch_op:
        batch_op.drop_column("log_id")
    op.drop_table("leases")
