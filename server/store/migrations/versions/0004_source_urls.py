"""Catalogue sources named by a long URL: quake_revisions.source and checkpoints.name
hold a whole URL (PostgreSQL refused one longer than 64 and 128 characters).

Revision ID: 0004_source_urls
Revises: 0003_message_digests
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_source_urls"
down_revision = "0003_message_digests"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("quake_revisions") as batch_op:
        batch_op.alter_column(
            "source",
            existing_type=sa.String(length=64),
            type_=sa.String(length=2000),
            existing_nullable=False,
        )
    with op.batch_alter_table("checkpoints") as batch_op:
        batch_op.alter_column(
            "name",
            existing_type=sa.String(length=128),
            type_=sa.String(length=2064),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch_op:
        batch_op.alter_column(
            "name",
            existing_type=sa.String(length=2064),
            type_=sa.String(length=128),
            existing_nullable=False,
        )
    with op.batch_alter_table("quake_revisions") as batch_op:
        batch_op.alter_column(
            "source",
            existing_type=sa.String(length=2000),
            type_=sa.String(length=64),
            existing_nullable=False,
        )
