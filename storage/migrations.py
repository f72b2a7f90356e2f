"""Schema upgrades: a job log written by an older spinenode is brought up to this one's schema.

The job log records its schema version in ``spinenode_schema`` (key ``schema_version``). When a
process opens the job log, :func:`prepare_schema` takes a lock (SQLite: the database's write lock,
``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock), then, in that one transaction:

- no version recorded (a new database): creates every table and records :data:`SCHEMA_VERSION`;
- an older version: runs the :data:`STEPS` after it, in order, and records the new version;
- a newer version: refuses with a plain error (an older spinenode must not write a newer log).

Steps are additive (new tables, new nullable columns, new indexes) and spelled out with the types
they had when they were written, never derived from today's models: a step must do the same thing
years later. DDL is transactional on SQLite and PostgreSQL, so a failed upgrade leaves the job log
as it was. Every process (the service, each worker, admin commands) runs this on open; the lock
makes the first one upgrade and the others find the work done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, Integer, insert, inspect, select, text, update
from sqlalchemy.types import TypeEngine

from storage.errors import StorageError
from storage.models import SCHEMA_VERSION, Base, SchemaInfo

logger = logging.getLogger(__name__)

_VERSION_KEY = "schema_version"
#: The advisory lock key PostgreSQL upgrades take (any constant; "spnd" in ASCII).
_PG_LOCK_KEY = 0x73706E64


@dataclass(frozen=True, slots=True)
class Step:
    """One upgrade: the database has schema ``version`` after ``apply`` ran."""

    version: int
    summary: str
    apply: Callable[[Connection], None]


def _add_columns(*columns: tuple[str, str, TypeEngine[Any]]) -> Callable[[Connection], None]:
    """A step that adds nullable columns ``(table, column, type)``."""

    def apply(conn: Connection) -> None:
        for table, name, type_ in columns:
            rendered = type_.compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {rendered}"))

    return apply


def _v2(conn: Connection) -> None:
    _add_columns(
        ("series", "last_received_at", DateTime(timezone=True)),
        ("jobs", "instances_purged", Integer()),
    )(conn)


#: Every upgrade since schema 1, oldest first; the last one's version is :data:`SCHEMA_VERSION`.
STEPS: tuple[Step, ...] = (
    Step(
        2,
        "series.last_received_at (last receipt of the series, re-sends included: retention keeps "
        "a series sent again); jobs.instances_purged (instances retention deleted)",
        _v2,
    ),
)


def prepare_schema(engine: Engine) -> int | None:
    """Create or upgrade the job log's tables under a lock; the version found (None: new).

    Raises
    ------
    StorageError
        The job log was written by a newer spinenode, or has tables but no schema version.
    """
    with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE (storage.database's begin hook)
        if conn.dialect.name == "postgresql":
            conn.execute(select(text(f"pg_advisory_xact_lock({_PG_LOCK_KEY})")))
        found = recorded_version(conn)
        if found is None:
            if inspect(conn).has_table("jobs"):
                raise StorageError(
                    "the job log has tables but no schema version: not a spinenode job log, or "
                    "damaged; point database_url at a new database",
                    None,
                )
            Base.metadata.create_all(conn)
            conn.execute(insert(SchemaInfo).values(key=_VERSION_KEY, value=str(SCHEMA_VERSION)))
            return None
        if found > SCHEMA_VERSION:
            raise StorageError(
                f"the job log has schema version {found}, newer than this spinenode's "
                f"{SCHEMA_VERSION}: it was upgraded by a newer spinenode; run that one (or point "
                "database_url at another job log)",
                found,
            )
        if found < SCHEMA_VERSION:
            _upgrade(conn, found)
        return found


def recorded_version(conn: Connection) -> int | None:
    """The schema version the job log records (None: none, a new database)."""
    if not inspect(conn).has_table(SchemaInfo.__tablename__):
        return None
    value = conn.execute(
        select(SchemaInfo.value).where(SchemaInfo.key == _VERSION_KEY)
    ).scalar_one_or_none()
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        message = f"the job log's schema version {value!r} is not a number"
        raise StorageError(message, value) from None


def _upgrade(conn: Connection, found: int) -> None:
    for step in STEPS:
        if found < step.version <= SCHEMA_VERSION:
            logger.info("job log schema %d → %d: %s", step.version - 1, step.version, step.summary)
            step.apply(conn)
    conn.execute(
        update(SchemaInfo).where(SchemaInfo.key == _VERSION_KEY).values(value=str(SCHEMA_VERSION))
    )
    logger.info("job log upgraded from schema %d to %d", found, SCHEMA_VERSION)
