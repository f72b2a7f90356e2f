"""Engine set-up: any SQLAlchemy URL; SQLite gets WAL, a busy timeout, foreign keys and
``BEGIN IMMEDIATE`` transactions so that several processes can share one file safely."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from storage.errors import StorageError
from storage.migrations import prepare_schema

logger = logging.getLogger(__name__)

#: How long a SQLite connection waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_on_connect(dbapi_connection: Any, record: Any) -> None:
    # Let SQLAlchemy's "begin" hook below issue BEGIN itself (pysqlite's own handling would
    # start transactions lazily, as DEFERRED, which can fail with SQLITE_BUSY on lock upgrade).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk when it returns (WAL + NORMAL could lose the last commits on
        # power loss); transactions marked DEFERRED_DURABILITY switch to NORMAL (see there).
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()
    record.info[_SYNCHRONOUS] = "FULL"


#: Execution option marking a read-only transaction (SQLite then begins it DEFERRED).
READ_ONLY = "spinenode_read_only"
#: Execution option for a write whose durable truth is elsewhere: its commit need not wait for
#: the disk (SQLite: ``synchronous = NORMAL`` in WAL mode, so the commit survives a crash of the
#: process but the last ones may roll back on a power loss; PostgreSQL: ``synchronous_commit =
#: off`` for that transaction, the same trade on a crash of the server). Used for instance
#: receipts only: the fsync'd spool file is the truth, and start-up records spool files that have
#: no row.
DEFERRED_DURABILITY = "spinenode_deferred_durability"
_SYNCHRONOUS = "spinenode_synchronous"


def _sqlite_on_begin(connection: Any) -> None:
    options = connection.get_execution_options()
    synchronous = "NORMAL" if options.get(DEFERRED_DURABILITY, False) else "FULL"
    info = connection.connection.info  # the pooled DBAPI connection's: the pragma stays set
    if info.get(_SYNCHRONOUS) != synchronous:
        connection.exec_driver_sql(f"PRAGMA synchronous = {synchronous}")
        info[_SYNCHRONOUS] = synchronous
    # Transactions that write take the write lock up front, so a read-then-write transaction can
    # never fail on a lock upgrade; read-only ones take none and, in WAL mode, never wait.
    if options.get(READ_ONLY, False):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _postgres_on_begin(connection: Any) -> None:
    # A receipt's commit need not wait for the WAL flush (the spool file is the truth): like
    # SQLite's NORMAL, a crash of the database server may lose the last receipts, never corrupt.
    if connection.get_execution_options().get(DEFERRED_DURABILITY, False):
        connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for other backends and in-memory databases)."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None
    return Path(database).expanduser()


def _prepare_sqlite_path(url: str, create: bool) -> None:
    path = sqlite_file(url)
    if path is None:
        return
    if not create and not path.is_file():
        raise StorageError(f"no job log at {path} (wrong --config or database URL?)", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)


def create_database_engine(url: str, create: bool = True) -> Engine:
    """An engine for ``url`` with the tables created (``create=False``: an absent SQLite file is
    an error rather than a new empty database).

    Raises
    ------
    StorageError
        The URL is malformed, its driver is missing, or the database cannot be reached.
    """
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError as exc:
        raise StorageError(
            "invalid database URL: expected e.g. sqlite:////var/lib/spinenode/jobs.db or "
            "postgresql+psycopg://user@host/dbname",
            None,
        ) from exc
    try:
        if backend == "sqlite":
            _prepare_sqlite_path(url, create)
            engine = _sqlite_engine(url)
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
        else:
            engine = create_engine(url, pool_pre_ping=True)
            if backend == "postgresql":
                event.listen(engine, "begin", _postgres_on_begin)
        prepare_schema(engine)
    except (SQLAlchemyError, ImportError, OSError) as exc:
        raise StorageError(f"cannot open the job log at {_redacted(url)}: {exc}", url) from exc
    logger.debug("job log open at %s", _redacted(url))
    return engine


def _sqlite_engine(url: str) -> Engine:
    connect_args: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    if sqlite_file(url) is None:
        # In memory: one shared connection, or every checkout would see a different database.
        connect_args["check_same_thread"] = False
        return create_engine(url, connect_args=connect_args, poolclass=StaticPool)
    return create_engine(url, connect_args=connect_args)


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


@contextmanager
def transaction(sessions: sessionmaker[Session], read_only: bool = False) -> Iterator[Session]:
    """One job-log transaction (``read_only``: no write lock is taken); a database error becomes
    :class:`StorageError`."""
    try:
        with sessions.begin() as session:
            if read_only:
                session.connection(execution_options={READ_ONLY: True})
            yield session
    except SQLAlchemyError as exc:
        raise StorageError(f"job log error: {exc}", type(exc).__name__) from exc
