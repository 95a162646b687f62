"""Baseline: the state store's schema when migrations began.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-11-30

The tables are declared here as they stood (not taken from the models, which move on).
A store made before migrations existed is adopted in place: a missing table is
created, a nullable column an older version lacked is added, and rows are kept.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

BASELINE = sa.MetaData()

sa.Table(
    "alarms",
    BASELINE,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("farm", sa.String(length=64), nullable=False),
    sa.Column("series", sa.String(length=128), nullable=False),
    sa.Column("kind", sa.String(length=16), nullable=False),
    sa.Column("species", sa.String(length=16), nullable=True),
    sa.Column("severity", sa.String(length=16), nullable=False),
    sa.Column("start", sa.DateTime(), nullable=False),
    sa.Column("end", sa.DateTime(), nullable=True),
    sa.Column("last_anomalous", sa.DateTime(), nullable=False),
    sa.Column("opened_at", sa.DateTime(), nullable=False),
    sa.Column("declared_at", sa.DateTime(), nullable=True),
    sa.Column("resolution_s", sa.Integer(), nullable=True),
    sa.Column("closed_at", sa.DateTime(), nullable=True),
    sa.Column("state", sa.String(length=8), nullable=False),
    sa.Column("close_reason", sa.String(length=16), nullable=True),
    sa.Column("peak_ratio", sa.Float(), nullable=False),
    sa.Column("animals_reporting", sa.Integer(), nullable=False),
    sa.Column("animals_total", sa.Integer(), nullable=False),
    sa.Column("animals_involved", sa.JSON(), nullable=False),
    sa.Column("params", sa.JSON(), nullable=False),
    sa.Column("rule_version", sa.String(length=64), nullable=False),
    sa.Column("log_hash", sa.String(length=64), nullable=True),
    sa.Column("log_index", sa.Integer(), nullable=True),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("farm", "series", "kind", "start", name="uq_alarm_identity"),
    sa.Index("ix_alarms_farm_start", "farm", "start", unique=False),
    sa.Index("ix_alarms_state", "state", unique=False),
)
sa.Table(
    "checkpoints",
    BASELINE,
    sa.Column("name", sa.String(length=128), nullable=False),
    sa.Column("time", sa.DateTime(), nullable=True),
    sa.Column("value", sa.JSON(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint("name"),
)
sa.Table(
    "data_health",
    BASELINE,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("farm", sa.String(length=64), nullable=False),
    sa.Column("kind", sa.String(length=16), nullable=False),
    sa.Column("name", sa.String(length=128), nullable=False),
    sa.Column("species", sa.String(length=16), nullable=True),
    sa.Column("gateway", sa.String(length=64), nullable=True),
    sa.Column("last_seen", sa.DateTime(), nullable=True),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("since", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("farm", "kind", "name", name="uq_data_health"),
)
sa.Table(
    "dead_letters",
    BASELINE,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("topic", sa.String(length=512), nullable=False),
    sa.Column("farm", sa.String(length=64), nullable=False),
    sa.Column("gateway", sa.String(length=64), nullable=False),
    sa.Column("reason", sa.String(length=32), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("seq", sa.BigInteger(), nullable=True),
    sa.Column("boot_id", sa.String(length=64), nullable=True),
    sa.Column("payload", sa.LargeBinary(), nullable=False),
    sa.Column("payload_sha256", sa.String(length=64), nullable=False),
    sa.Column("payload_bytes", sa.Integer(), nullable=False),
    sa.Column("received_at", sa.DateTime(), nullable=False),
    sa.Column("last_received_at", sa.DateTime(), nullable=False),
    sa.Column("count", sa.Integer(), nullable=False),
    sa.Column("replays", sa.Integer(), nullable=False),
    sa.Column("replayed_at", sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("topic", "payload_sha256", "reason", name="uq_dead_letter"),
    sa.Index("ix_dead_letters_received", "received_at", unique=False),
)
sa.Table(
    "login_failures",
    BASELINE,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("account", sa.String(length=64), nullable=False),
    sa.Column("address", sa.String(length=64), nullable=False),
    sa.Column("device", sa.String(length=32), nullable=True),
    sa.Column("at", sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_login_failures_account", "account", "at", unique=False),
    sa.Index("ix_login_failures_address", "address", "at", unique=False),
    sa.Index("ix_login_failures_at", "at", unique=False),
)
sa.Table(
    "outbox",
    BASELINE,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("recipient", sa.String(length=254), nullable=False),
    sa.Column("farm", sa.String(length=64), nullable=False),
    sa.Column("subject", sa.String(length=998), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("html", sa.Text(), nullable=False),
    sa.Column("message_id", sa.String(length=255), nullable=False),
    sa.Column("created", sa.DateTime(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt", sa.DateTime(), nullable=False),
    sa.Column("sent_at", sa.DateTime(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("alarm_ids", sa.JSON(), nullable=False),
    sa.Column("failed_at", sa.DateTime(), nullable=True),
    sa.Column("refused_attempts", sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("message_id"),
    sa.Index("ix_outbox_pending", "sent_at", "next_attempt", unique=False),
)
sa.Table(
    "quake_revisions",
    BASELINE,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("source", sa.String(length=64), nullable=False),
    sa.Column("event_id", sa.String(length=128), nullable=False),
    sa.Column("revision", sa.Integer(), nullable=False),
    sa.Column("fetched_at", sa.DateTime(), nullable=False),
    sa.Column("time", sa.DateTime(), nullable=False),
    sa.Column("latitude", sa.Float(), nullable=False),
    sa.Column("longitude", sa.Float(), nullable=False),
    sa.Column("depth_km", sa.Float(), nullable=True),
    sa.Column("magnitude", sa.Float(), nullable=True),
    sa.Column("mag_type", sa.String(length=16), nullable=True),
    sa.Column("fingerprint", sa.String(length=64), nullable=False),
    sa.Column("fields", sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("source", "event_id", "revision", name="uq_quake_revision"),
    sa.Index("ix_quake_time", "time", unique=False),
)
sa.Table(
    "subscriptions",
    BASELINE,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("recipient", sa.String(length=254), nullable=False),
    sa.Column("farm", sa.String(length=64), nullable=False),
    sa.Column("species", sa.String(length=16), nullable=False),
    sa.Column("min_severity", sa.String(length=16), nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("recipient", "farm", "species", name="uq_subscription"),
)
sa.Table(
    "users",
    BASELINE,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=64), nullable=False),
    sa.Column("role", sa.String(length=16), nullable=False),
    sa.Column("password_hash", sa.String(length=255), nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("email", sa.String(length=254), nullable=True),
    sa.Column("guess_notice_at", sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("name"),
)
sa.Table(
    "alert_notifications",
    BASELINE,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("recipient", sa.String(length=254), nullable=False),
    sa.Column("farm", sa.String(length=64), nullable=False),
    sa.Column("alarm_id", sa.Integer(), nullable=False),
    sa.Column("created", sa.DateTime(), nullable=False),
    sa.Column("outbox_id", sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(
        ["alarm_id"],
        ["alarms.id"],
    ),
    sa.ForeignKeyConstraint(
        ["outbox_id"],
        ["outbox.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("recipient", "alarm_id", name="uq_notification"),
)
sa.Table(
    "api_tokens",
    BASELINE,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("user_id", sa.Integer(), nullable=False),
    sa.Column("digest", sa.String(length=64), nullable=False),
    sa.Column("label", sa.String(length=64), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("revoked", sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(
        ["user_id"],
        ["users.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("digest"),
)
sa.Table(
    "farm_events",
    BASELINE,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("farm", sa.String(length=64), nullable=False),
    sa.Column("kind", sa.String(length=32), nullable=False),
    sa.Column("start", sa.DateTime(), nullable=False),
    sa.Column("end", sa.DateTime(), nullable=True),
    sa.Column("comment", sa.Text(), nullable=False),
    sa.Column("user_id", sa.Integer(), nullable=False),
    sa.Column("user_name", sa.String(length=64), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(
        ["user_id"],
        ["users.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_farm_events_farm_start", "farm", "start", unique=False),
)
sa.Table(
    "login_sessions",
    BASELINE,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("digest", sa.String(length=64), nullable=False),
    sa.Column("user_id", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("revoked", sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(
        ["user_id"],
        ["users.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("digest"),
)
sa.Table(
    "reviews",
    BASELINE,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("alarm_id", sa.Integer(), nullable=False),
    sa.Column("user_id", sa.Integer(), nullable=False),
    sa.Column("user_name", sa.String(length=64), nullable=False),
    sa.Column("verdict", sa.String(length=8), nullable=False),
    sa.Column("comment", sa.Text(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(
        ["alarm_id"],
        ["alarms.id"],
    ),
    sa.ForeignKeyConstraint(
        ["user_id"],
        ["users.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_reviews_alarm", "alarm_id", unique=False),
)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    present = set(inspector.get_table_names())
    for table in BASELINE.sorted_tables:
        if table.name not in present:
            table.create(bind)
            continue
        columns = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in columns:
                continue
            if not column.nullable:
                raise RuntimeError(
                    f"table {table.name!r} lacks the required column {column.name!r}: "
                    "not a store this version can adopt"
                )
            op.add_column(table.name, sa.Column(column.name, column.type, nullable=True))


def downgrade() -> None:
    for table in reversed(BASELINE.sorted_tables):
        op.drop_table(table.name)
