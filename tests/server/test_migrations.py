"""Schema migrations of the state store, on SQLite and on PostgreSQL: the revisions
build exactly the models' schema, an older store is upgraded in place with its rows,
several processes migrating at once do it once, and ``namazu db`` drives it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from namazu.server.cli import main as cli_main
from namazu.server.store import models  # noqa: F401 - registers the panel's tables
from namazu.server.store.migrate import current_revision, head_revision, upgrade
from namazu.server.store.state import Alarm, Base, OutboxMail, init_db, make_engine, session_scope

T = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)


def _older_store(url: str) -> None:
    """The alarms and outbox tables as a version before migrations made them (no
    declared_at, resolution_s, log_hash, log_index; no failed_at, refused_attempts), with
    one row each, and no other table."""
    old = sa.MetaData()
    alarms = sa.Table(
        "alarms", old,
        sa.Column("id", sa.Integer, primary_key=True),
        *(sa.Column(name, sa.String(64), nullable=False)
          for name in ("farm", "series", "kind", "severity", "state", "rule_version")),
        sa.Column("species", sa.String(16)),
        *(sa.Column(name, sa.DateTime, nullable=False)
          for name in ("start", "last_anomalous", "opened_at", "created_at")),
        sa.Column("end", sa.DateTime), sa.Column("closed_at", sa.DateTime),
        sa.Column("close_reason", sa.String(16)),
        sa.Column("peak_ratio", sa.Float, nullable=False),
        sa.Column("animals_reporting", sa.Integer, nullable=False),
        sa.Column("animals_total", sa.Integer, nullable=False),
        sa.Column("animals_involved", sa.JSON, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.UniqueConstraint("farm", "series", "kind", "start", name="uq_alarm_identity"),
    )  # fmt: skip
    outbox = sa.Table(
        "outbox", old,
        sa.Column("id", sa.Integer, primary_key=True),
        *(sa.Column(name, sa.String(254), nullable=False)
          for name in ("recipient", "farm", "subject", "text", "html")),
        sa.Column("message_id", sa.String(255), unique=True, nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt", sa.DateTime, nullable=False),
        sa.Column("sent_at", sa.DateTime), sa.Column("last_error", sa.Text),
        sa.Column("alarm_ids", sa.JSON, nullable=False),
    )  # fmt: skip
    naive = T.replace(tzinfo=None)
    engine = make_engine(url)
    old.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            alarms.insert().values(
                id=7, farm="farm-a", series="herd", kind="herd", severity="critical",
                state="open", rule_version="v1", start=naive, last_anomalous=naive,
                opened_at=naive, created_at=naive, peak_ratio=3.5, animals_reporting=5,
                animals_total=6, animals_involved=["a1", "a2"], params={"k": 1},
            )
        )  # fmt: skip
        connection.execute(
            outbox.insert().values(
                id=3, recipient="r@example.org", farm="farm-a", subject="s", text="t",
                html="<p>h</p>", message_id="<m@namazu>", created=naive, attempts=0,
                next_attempt=naive, alarm_ids=[7],
            )
        )  # fmt: skip


def test_revisions_build_exactly_the_models_schema(empty_state_url):
    engine = make_engine(empty_state_url)
    assert upgrade(engine) == head_revision()
    with engine.connect() as connection:
        differences = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata
        )
    assert differences == [], (
        "the models differ from the newest revision; add one with "
        f"'namazu db revision -m ...': {differences}"
    )


def test_an_older_store_is_upgraded_in_place_keeping_its_rows(empty_state_url):
    _older_store(empty_state_url)
    engine = init_db(empty_state_url)
    with engine.connect() as connection:
        assert current_revision(connection) == head_revision()
    inspector = sa.inspect(engine)
    assert {"declared_at", "resolution_s", "log_hash"} <= {
        c["name"] for c in inspector.get_columns("alarms")
    }
    assert {"failed_at", "refused_attempts"} <= {c["name"] for c in inspector.get_columns("outbox")}
    assert {"dead_letters", "users", "login_sessions"} <= set(inspector.get_table_names())
    with session_scope(engine) as db:
        alarm = db.get(Alarm, 7)
        assert (alarm.start, alarm.peak_ratio, alarm.animals_involved) == (T, 3.5, ["a1", "a2"])
        assert alarm.declared_at is None
        mail = db.get(OutboxMail, 3)
        assert mail.status == "queued" and mail.alarm_ids == [7] and mail.created == T
        db.add(Alarm(farm="farm-a", series="herd", kind="herd", start=T.replace(hour=5),
                     last_anomalous=T, opened_at=T, declared_at=T, rule_version="v1"))  # fmt: skip
    assert init_db(empty_state_url) is engine  # a second start finds it current and keeps it
    with session_scope(engine) as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(Alarm)) == 2


def test_processes_starting_together_migrate_the_store_once(empty_state_url):
    results: list[object] = []

    def start() -> None:
        try:
            results.append(upgrade(make_engine(empty_state_url)))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if make_engine(empty_state_url).dialect.name == "sqlite":
        # SQLite has no advisory lock: a racing start may fail, and a retry finds it done
        results = [
            r if isinstance(r, str) else upgrade(make_engine(empty_state_url)) for r in results
        ]
    assert results == [head_revision()] * 3
    with make_engine(empty_state_url).connect() as connection:
        rows = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    assert rows == [(head_revision(),)]


def test_namazu_db_upgrades_and_reports_the_revision(empty_state_url, capsys):
    _older_store(empty_state_url)
    assert cli_main(["db", "current", "--url", empty_state_url]) == 0
    assert f"store None  newest {head_revision()}" in capsys.readouterr().out
    assert cli_main(["db", "upgrade", "--url", empty_state_url]) == 0
    assert f"state store at revision {head_revision()}" in capsys.readouterr().out
    assert cli_main(["db", "current", "--url", empty_state_url]) == 0
    assert f"store {head_revision()}  newest {head_revision()}" in capsys.readouterr().out
    assert cli_main(["db", "upgrade", "--url", "not a url"]) == 1
    assert "is not a SQLAlchemy URL" in capsys.readouterr().err
