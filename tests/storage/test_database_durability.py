"""Per-transaction durability on SQLite: receipts commit without waiting for the disk, the rest
with synchronous FULL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from storage.database import DEFERRED_DURABILITY, READ_ONLY, create_database_engine
from storage.joblog import JobLog
from tests.storage.conftest import postgres_url
from tests.storage.factory import receipt

_NORMAL, _FULL = 1, 2  # PRAGMA synchronous values


def _synchronous(session: Session) -> int:
    value: int = session.execute(text("PRAGMA synchronous")).scalar_one()
    return value


def test_deferred_durability_is_per_transaction(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        for _ in range(2):  # the same pooled connection switches back and forth
            with Session(engine) as session, session.begin():
                session.connection(execution_options={DEFERRED_DURABILITY: True})
                assert _synchronous(session) == _NORMAL
            with Session(engine) as session, session.begin():
                assert _synchronous(session) == _FULL
            with Session(engine) as session, session.begin():
                session.connection(execution_options={READ_ONLY: True})
                assert _synchronous(session) == _FULL
    finally:
        engine.dispose()


def test_receipts_are_recorded_and_persist_with_deferred_durability(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    with JobLog.open(url) as joblog:
        for index in range(3):
            joblog.record_instance(receipt(1, index))
    with JobLog.open(url) as reopened:
        (job,) = reopened.jobs()
        assert job.instances == 3


def test_receipts_on_postgresql_do_not_wait_for_the_wal_flush() -> None:
    engine = create_database_engine(postgres_url())
    try:

        def synchronous_commit(options: dict[str, bool]) -> str:
            with Session(engine) as session, session.begin():
                session.connection(execution_options=options)
                value: str = session.execute(text("SHOW synchronous_commit")).scalar_one()
                return value

        for _ in range(2):  # SET LOCAL: it ends with the transaction
            assert synchronous_commit({DEFERRED_DURABILITY: True}) == "off"
            assert synchronous_commit({}) == "on"
            assert synchronous_commit({READ_ONLY: True}) == "on"
    finally:
        engine.dispose()
