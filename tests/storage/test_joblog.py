"""The job log on real SQLite files: receipts, life cycle, leases, persistence."""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from storage.errors import (
    InvalidTransitionError,
    InvalidUIDError,
    JobNotFoundError,
    LeaseLostError,
    StorageError,
)
from storage.joblog import JobLog
from storage.models import Base
from storage.states import ALLOWED_TRANSITIONS, JobState, ReceiptOutcome
from tests.storage.factory import T0, db_url, queued_jobs, receipt, series_uid

LATER = T0 + timedelta(hours=1)


def test_sqlite_file_is_in_wal_mode_and_survives_reopening(tmp_path: Path) -> None:
    with JobLog.open(db_url(tmp_path)) as log:
        for index in range(3):
            assert log.record_instance(receipt(0, index)) is ReceiptOutcome.NEW
        job_id = log.quiet_jobs(0.0, LATER)[0].job_id
        log.transition(job_id, JobState.QUEUED, "series complete")
    with sqlite3.connect(tmp_path / "jobs.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with JobLog.open(db_url(tmp_path)) as log:
        detail = log.job(job_id)
        assert detail.summary.state is JobState.QUEUED
        assert detail.summary.instances == 3
        assert detail.summary.series_uid == series_uid(0)
        assert [e.target for e in detail.events] == [JobState.RECEIVING, JobState.QUEUED]
        assert log.record_instance(receipt(0, 1)) is ReceiptOutcome.DUPLICATE
        assert len(log.job_instances(job_id)) == 3


def test_duplicate_and_conflicting_instances(any_db_url: str) -> None:
    with JobLog.open(any_db_url) as log:
        first = receipt(0, 0, b"original")
        assert log.record_instance(first) is ReceiptOutcome.NEW
        assert log.record_instance(first) is ReceiptOutcome.DUPLICATE
        other = receipt(0, 0, b"different bytes", calling_ae="OTHER")
        assert log.record_instance(other) is ReceiptOutcome.CONFLICT
        (job,) = log.jobs()
        detail = log.job(job.job_id)
        assert detail.summary.instances == 1
        (conflict,) = detail.instance_events
        assert conflict.kind == "conflict"
        assert conflict.sha256 == other.sha256 != first.sha256
        assert conflict.calling_ae == "OTHER"
        assert log.job_instances(job.job_id) == [first.path]


def test_receipt_with_bad_uid_or_naive_time_is_refused(tmp_path: Path) -> None:
    with JobLog.open(db_url(tmp_path)) as log:
        good = receipt(0, 0)
        bad = type(good)(**{**good.to_json(), "received_at": good.received_at})
        assert bad == good
        fields = good.to_json() | {"received_at": good.received_at}
        with pytest.raises(InvalidUIDError):
            log.record_instance(type(good)(**(fields | {"series_uid": "1.2/../3"})))
        with pytest.raises(StorageError):
            log.record_instance(type(good)(**(fields | {"received_at": datetime(2026, 1, 1)})))
        assert log.jobs() == []


def test_one_open_job_per_series_and_a_new_one_after_it_ran(any_db_url: str) -> None:
    with JobLog.open(any_db_url) as log:
        log.record_instance(receipt(0, 0))
        log.record_instance(receipt(1, 0))
        log.record_instance(receipt(0, 1))
        assert len(log.jobs()) == 2
        first = next(j for j in log.jobs() if j.series_uid == series_uid(0))
        log.transition(first.job_id, JobState.QUEUED)
        log.record_instance(receipt(0, 2))  # a queued job reads its instances when it starts
        assert len(log.jobs()) == 2
        claimed = log.claim("w1", 60.0, LATER)
        assert claimed is not None and claimed.job_id == first.job_id
        log.record_instance(receipt(0, 3))  # arrived after the job started: a new job
        jobs = log.jobs(state=JobState.RECEIVING)
        assert len(jobs) == 2
        assert {j.series_uid for j in jobs} == {series_uid(0), series_uid(1)}
        assert len(log.job_instances(first.job_id)) == 4


def test_quiet_jobs_waits_for_the_quiet_period(any_db_url: str) -> None:
    with JobLog.open(any_db_url) as log:
        for index in range(5):
            log.record_instance(receipt(0, index))  # last one at T0 + 4 s
        assert log.quiet_jobs(10.0, T0 + timedelta(seconds=13)) == []
        (ref,) = log.quiet_jobs(10.0, T0 + timedelta(seconds=14))
        assert ref.instances == 5
        assert ref.modality == "CT"
        assert ref.calling_ae == "PACS"
        assert ref.last_instance_at == T0 + timedelta(seconds=4)
        log.transition(ref.job_id, JobState.SKIPPED, "too few slices")
        assert log.quiet_jobs(10.0, LATER) == []


def test_transitions_are_validated_and_logged(any_db_url: str) -> None:
    with JobLog.open(any_db_url) as log:
        (job_id,) = queued_jobs(log, 1)
        with pytest.raises(InvalidTransitionError):
            log.transition(job_id, JobState.DONE)
        with pytest.raises(InvalidTransitionError):
            log.transition(job_id, JobState.RUNNING)  # only claim() starts a job
        with pytest.raises(JobNotFoundError):
            log.transition(job_id + 100, JobState.FAILED)
        assert log.claim("w1", 60.0, LATER) is not None
        with pytest.raises(LeaseLostError):
            log.transition(job_id, JobState.DELIVERING, worker="w2")
        log.transition(job_id, JobState.DELIVERING, "3 outputs", worker="w1")
        log.transition(job_id, JobState.DONE, "delivered")
        with pytest.raises(InvalidTransitionError):
            log.transition(job_id, JobState.QUEUED)
        detail = log.job(job_id)
        assert [(e.source, e.target) for e in detail.events] == [
            (None, JobState.RECEIVING),
            (JobState.RECEIVING, JobState.QUEUED),
            (JobState.QUEUED, JobState.RUNNING),
            (JobState.RUNNING, JobState.DELIVERING),
            (JobState.DELIVERING, JobState.DONE),
        ]
        assert detail.events[2].reason == "claimed by w1"
        assert detail.events[3].worker == "w1"
        assert detail.summary.reason == "delivered"
        assert detail.lease_until is None


def test_claim_takes_oldest_first_and_expired_leases_are_reclaimed(any_db_url: str) -> None:
    with JobLog.open(any_db_url) as log:
        first, second = queued_jobs(log, 2)
        a = log.claim("w1", 60.0, LATER)
        b = log.claim("w2", 60.0, LATER)
        assert a is not None and b is not None
        assert (a.job_id, b.job_id) == (first, second)
        assert a.lease_until == LATER + timedelta(seconds=60)
        assert a.attempts == 1 and a.reclaimed_from is None
        assert log.claim("w3", 60.0, LATER + timedelta(seconds=30)) is None
        assert log.heartbeat(second, "w2", 60.0, LATER + timedelta(seconds=50))
        # w1 died: its lease ran out at +60 s; w2 kept heartbeating (lease to +110 s).
        c = log.claim("w3", 60.0, LATER + timedelta(seconds=61))
        assert c is not None
        assert (c.job_id, c.worker, c.attempts, c.reclaimed_from) == (first, "w3", 2, "w1")
        assert log.claim("w4", 60.0, LATER + timedelta(seconds=61)) is None
        assert not log.heartbeat(first, "w1", 60.0, LATER + timedelta(seconds=62))
        with pytest.raises(LeaseLostError):
            log.release(first, "w1", "SIGTERM")
        last = log.job(first).events[-1]
        assert last.reason == "lease of w1 expired, re-claimed by w3"
        assert (last.source, last.target) == (JobState.RUNNING, JobState.RUNNING)


def test_release_puts_the_job_back_in_the_queue(any_db_url: str) -> None:
    with JobLog.open(any_db_url) as log:
        (job_id,) = queued_jobs(log, 1)
        assert log.claim("w1", 60.0, LATER) is not None
        log.release(job_id, "w1", "worker stopping (SIGTERM)")
        assert log.job(job_id).summary.state is JobState.QUEUED
        again = log.claim("w2", 60.0, LATER)
        assert again is not None and again.job_id == job_id and again.reclaimed_from is None


def test_stage_timings_are_recorded_per_attempt(any_db_url: str) -> None:
    with JobLog.open(any_db_url) as log:
        (job_id,) = queued_jobs(log, 1)
        log.claim("w1", 60.0, LATER)
        log.record_stage(job_id, "load", 1.5)
        log.record_stage(job_id, "segment", 12.25)
        stages = log.job(job_id).stages
        assert [(s.stage, s.seconds, s.attempt) for s in stages] == [
            ("load", 1.5, 1),
            ("segment", 12.25, 1),
        ]
        with pytest.raises(JobNotFoundError):
            log.record_stage(job_id + 1, "load", 1.0)


def test_jobs_filters_by_state_and_creation_time(any_db_url: str) -> None:
    with JobLog.open(any_db_url) as log:
        ids = queued_jobs(log, 3)
        log.transition(ids[0], JobState.FAILED, "bad geometry")
        assert [j.job_id for j in log.jobs()] == sorted(ids, reverse=True)
        assert [j.job_id for j in log.jobs(state=JobState.FAILED)] == [ids[0]]
        assert len(log.jobs(limit=2)) == 2
        created = log.job(ids[1]).summary.created_at
        assert log.jobs(since=created + timedelta(days=1)) == []
        assert log.jobs(until=created - timedelta(days=1)) == []
        assert len(log.jobs(since=created - timedelta(days=1))) == 3


def test_status_counts_workers_and_failures(any_db_url: str) -> None:
    with JobLog.open(any_db_url) as log:
        assert log.claim("gone", 60.0, LATER - timedelta(hours=2)) is None  # seen long ago
        ids = queued_jobs(log, 3)
        log.transition(ids[2], JobState.FAILED, "no lumbar spine found")
        log.claim("w1", 60.0, LATER)
        log.claim("w2", 60.0, LATER)
        status = log.status(LATER + timedelta(seconds=5))
        assert status.jobs_by_state["running"] == 2
        assert status.jobs_by_state["queued"] == 0
        assert status.jobs_by_state["failed"] == 1
        assert status.jobs_by_state["done"] == 0
        assert [(w.worker, w.job_id) for w in status.workers] == [("w1", ids[0]), ("w2", ids[1])]
        assert [f.reason for f in status.recent_failures] == ["no lumbar spine found"]
        json.dumps(status.to_json())


def test_json_of_every_record_is_plain_json(any_db_url: str) -> None:
    with JobLog.open(any_db_url) as log:
        (job_id,) = queued_jobs(log, 1)
        claimed = log.claim("w1", 60.0, LATER)
        assert claimed is not None
        doc = json.loads(json.dumps(log.job(job_id).to_json()))
        assert doc["summary"]["state"] == "running"
        assert doc["events"][0]["target"] == "receiving"
        assert json.loads(json.dumps(claimed.to_json()))["worker"] == "w1"
        assert json.dumps([j.to_json() for j in log.jobs()])


def test_bad_database_url_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        JobLog.open("not a url")
    with pytest.raises(StorageError):
        JobLog.open("nosuchdialect://x")


def test_job_log_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    JobLog.open(db_url(tmp_path)).close()
    with sqlite3.connect(tmp_path / "jobs.db") as raw:
        raw.execute("UPDATE spinenode_schema SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(StorageError, match="schema version 999"):
        JobLog.open(db_url(tmp_path))


def test_in_memory_sqlite_keeps_one_database() -> None:
    with JobLog.open("sqlite://") as log:
        log.record_instance(receipt(0, 0))
        log.record_instance(receipt(0, 1))
        (job,) = log.jobs()
        assert job.instances == 2


def test_open_without_create_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no job log at"):
        JobLog.open(db_url(tmp_path / "absent"), create=False)
    assert not (tmp_path / "absent").exists()


def test_no_table_can_hold_patient_identifiers() -> None:
    columns = [c.name for table in Base.metadata.tables.values() for c in table.columns]
    assert "sop_instance_uid" in columns
    assert not [c for c in columns if "patient" in c or "birth" in c or c == "name"]


def test_life_cycle_table_has_final_states_and_failure_exits() -> None:
    assert ALLOWED_TRANSITIONS[JobState.DONE] == ALLOWED_TRANSITIONS[JobState.SKIPPED] == set()
    for state in (JobState.RECEIVING, JobState.QUEUED, JobState.RUNNING, JobState.DELIVERING):
        assert JobState.FAILED in ALLOWED_TRANSITIONS[state]
    assert ALLOWED_TRANSITIONS[JobState.FAILED] == {JobState.QUEUED, JobState.DELIVERING}


def test_log_lines_carry_job_id_and_series_uid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with JobLog.open(db_url(tmp_path)) as log, caplog.at_level(logging.INFO, logger="storage"):
        (job_id,) = queued_jobs(log, 1)
        log.transition(job_id, JobState.FAILED, "no lumbar spine")
    (line,) = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert line == f"job {job_id} series {series_uid(0)}: queued → failed (no lumbar spine)"


def test_stage_durations_must_be_finite_and_non_negative(any_db_url: str) -> None:
    with JobLog.open(any_db_url) as log:
        (job_id,) = queued_jobs(log, 1)
        for bad in (-1.0, float("nan"), float("inf")):
            with pytest.raises(StorageError):
                log.record_stage(job_id, "load", bad)
        assert log.job(job_id).stages == ()


def test_reads_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    with JobLog.open(db_url(tmp_path)) as log:
        (job_id,) = queued_jobs(log, 1)
        writer = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            assert [j.job_id for j in log.jobs()] == [job_id]
            assert log.job(job_id).summary.state is JobState.QUEUED
            assert log.status(LATER).jobs_by_state["queued"] == 1
            assert len(log.job_instances(job_id)) == 2
            assert log.quiet_jobs(0.0, LATER) == []
            assert log.due_deliveries(LATER) == []
        finally:
            writer.execute("ROLLBACK")
            writer.close()
