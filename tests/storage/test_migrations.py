"""Schema upgrades: a job log written by schema 1 (created here from its DDL text) is upgraded on
open, keeps every row and goes on working; several processes opening it at once upgrade it once;
a job log newer than the code is refused with a plain error."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from storage.errors import StorageError
from storage.joblog import JobLog
from storage.models import SCHEMA_VERSION
from storage.states import JobState, ReceiptOutcome
from tests.storage import procs
from tests.storage.factory import STUDY, receipt, series_uid

HERE = Path(__file__).parent
#: Rows as schema 1 held them: a study, a series with two instances, its DONE job and events.
V1_ROWS = f"""
INSERT INTO spinenode_schema (key, value) VALUES ('schema_version', '1');
INSERT INTO studies (id, study_uid, first_received_at) VALUES (1, '{STUDY}', '2026-01-05 08:00:00');
INSERT INTO series (id, study_id, series_uid, modality, calling_ae, first_received_at)
    VALUES (1, 1, '{series_uid(0)}', 'CT', 'PACS', '2026-01-05 08:00:00');
INSERT INTO jobs (id, series_id, state, reason, attempts, worker, lease_until, created_at,
    updated_at, last_instance_at)
    VALUES (1, 1, 'done', 'delivered', 1, 'w1', NULL, '2026-01-05 08:00:00',
    '2026-01-05 08:05:00', '2026-01-05 08:00:01');
INSERT INTO job_events (job_id, at, source, target, reason, worker) VALUES
    (1, '2026-01-05 08:00:00', NULL, 'receiving', 'first instance from PACS (127.0.0.1)', NULL),
    (1, '2026-01-05 08:05:00', 'delivering', 'done', 'delivered', 'w1');
INSERT INTO instances (series_id, job_id, sop_instance_uid, sop_class_uid, calling_ae,
    peer_host, received_at, path, sha256, size) VALUES
    (1, 1, '{series_uid(0)}.1', '1.2.840.10008.5.1.4.1.1.2', 'PACS', '127.0.0.1',
     '2026-01-05 08:00:00', '/spool/a.dcm', '{"0" * 64}', 10),
    (1, 1, '{series_uid(0)}.2', '1.2.840.10008.5.1.4.1.1.2', 'PACS', '127.0.0.1',
     '2026-01-05 08:00:01', '/spool/b.dcm', '{"1" * 64}', 10);
"""


def _run_sql(url: str, sql: str) -> None:
    """Run ``;``-separated statements (``--`` comment lines left out) in one transaction."""
    code = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in filter(str.strip, code.split(";")):
            conn.exec_driver_sql(statement)
    engine.dispose()


def _schema_1(url: str) -> None:
    """A job log as schema 1 left it: its tables from the DDL text, and some rows."""
    dialect = "postgresql" if url.startswith("postgresql") else "sqlite"
    _run_sql(url, (HERE / f"schema_v1_{dialect}.sql").read_text())
    _run_sql(url, V1_ROWS)


def _version(url: str) -> str:
    engine = create_engine(url)
    with engine.connect() as conn:
        value: str = conn.execute(
            text("SELECT value FROM spinenode_schema WHERE key = 'schema_version'")
        ).scalar_one()
        columns = {c["name"] for c in inspect(conn).get_columns("series")}
    engine.dispose()
    assert "last_received_at" in columns
    return value


def test_a_schema_1_job_log_is_upgraded_and_keeps_its_jobs(any_db_url: str) -> None:
    _schema_1(any_db_url)
    with JobLog.open(any_db_url) as log:
        (job,) = log.jobs()
        assert (job.job_id, job.state, job.instances, job.series_uid) == (
            1,
            JobState.DONE,
            2,
            series_uid(0),
        )
        detail = log.job(1)
        assert [e.target for e in detail.events] == [JobState.RECEIVING, JobState.DONE]
        assert log.job_instances(1) == ["/spool/a.dcm", "/spool/b.dcm"]
        # It goes on working: a re-sent instance is a duplicate, a new one opens a new job.
        old = receipt(0, 0, at=datetime.now(UTC))
        resent = type(old)(**{**old.to_json(), "sha256": "0" * 64, "received_at": old.received_at})
        assert log.record_instance(resent) is ReceiptOutcome.DUPLICATE
        assert log.record_instance(receipt(0, 5)) is ReceiptOutcome.NEW
        assert sorted(j.state for j in log.jobs()) == [JobState.DONE, JobState.RECEIVING]
    assert _version(any_db_url) == str(SCHEMA_VERSION)
    JobLog.open(any_db_url).close()  # opening it again finds nothing to do
    assert _version(any_db_url) == str(SCHEMA_VERSION)


@pytest.mark.parametrize("start", ["empty", "schema 1"])
def test_processes_opening_a_job_log_at_once_create_or_upgrade_it_once(
    any_db_url: str, start: str
) -> None:
    # serve and its workers start together: one creates (or upgrades), the others wait and use it
    if start == "schema 1":
        _schema_1(any_db_url)
    results = procs.run_together(procs.open_job_log, [(any_db_url, n) for n in range(3)])
    expected = [[1], [1], [1]] if start == "schema 1" else [[], [], []]
    assert [jobs for _, jobs in results] == expected
    assert _version(any_db_url) == str(SCHEMA_VERSION)


def test_a_job_log_newer_than_the_code_is_refused(any_db_url: str) -> None:
    JobLog.open(any_db_url).close()
    _run_sql(any_db_url, f"UPDATE spinenode_schema SET value = '{SCHEMA_VERSION + 1}'")
    with pytest.raises(StorageError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        JobLog.open(any_db_url)
    assert _version(any_db_url) == str(SCHEMA_VERSION + 1)  # untouched


def test_tables_without_a_schema_version_are_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    _run_sql(url, (HERE / "schema_v1_sqlite.sql").read_text())  # no version row
    with pytest.raises(StorageError, match="no schema version"):
        JobLog.open(url)
