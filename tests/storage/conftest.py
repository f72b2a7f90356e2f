"""Fixtures of the storage tests: a job log URL on SQLite, and on PostgreSQL when one is given."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

#: A scratch PostgreSQL database (everything in its ``public`` schema is dropped!), e.g.
#: postgresql+psycopg://postgres@127.0.0.1:5432/spinenode_test; unset: those cases are skipped.
#: scripts/test.sh starts a throwaway cluster and sets it (scripts/pg_scratch.sh).
POSTGRES_ENV = "SPINENODE_TEST_POSTGRES_URL"


def postgres_url() -> str:  # also used by tests/node/test_retention_postgres.py
    """The scratch PostgreSQL database, emptied; skips the test when none is configured."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"set {POSTGRES_ENV} to a scratch PostgreSQL database to run this case")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty job log URL: a SQLite file, or the scratch PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    yield postgres_url()
