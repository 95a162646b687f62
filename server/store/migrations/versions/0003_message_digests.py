"""The sequence ledger of ingest: the digest first received under each sequence number.

Revision ID: 0003_message_digests
Revises: 0002_leases
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_message_digests"
down_revision = "0002_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_digests",
        sa.Column("farm", sa.String(length=64), nullable=False),
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column("boot_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("digest", sa.LargeBinary(length=16), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("farm", "gateway", "boot_id", "seq"),
    )
    op.create_index(
        "ix_message_digests_first_seen", "message_digests", ["first_seen"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_message_digests_first_seen", table_name="message_digests")
    op.drop_table("message_digests")
