"""Alembic's environment for the state store: runs on the connection that
``namazu.server.store.migrate`` hands over (no alembic.ini, no URL of its own)."""

from alembic import context

from namazu.server.store import models  # noqa: F401 - registers the panel's tables
from namazu.server.store.state import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite alters a table by copying it
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
