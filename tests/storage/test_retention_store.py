"""Retention's purge on both backends: it deletes a settled series' files and rows and says how
many there were; a receipt of the series that is under way when the purge starts wins."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from storage import receipts
from storage.joblog import JobLog
from storage.records import InstanceReceipt
from storage.retention import Freed, RetentionStore
from storage.states import JobState, ReceiptOutcome
from tests.storage.factory import receipt


def _spooled(tmp_path: Path, r: InstanceReceipt) -> InstanceReceipt:
    """``r`` with its file really in a spool under ``tmp_path``."""
    path = tmp_path / "spool" / r.study_uid / r.series_uid / f"{r.sop_instance_uid}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * r.size)
    return InstanceReceipt(**{**r.to_json(), "path": str(path), "received_at": r.received_at})


def _finished_series(log: JobLog, tmp_path: Path) -> tuple[int, list[InstanceReceipt]]:
    """Series 0 received (3 instances, files in the spool) and its job DONE; (job id, receipts)."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    got = [_spooled(tmp_path, receipt(0, index, at=now)) for index in range(3)]
    for r in got:
        assert log.record_instance(r) is ReceiptOutcome.NEW
    (ref,) = log.quiet_jobs(0.0, datetime.now(UTC) + timedelta(hours=1))
    log.transition(ref.job_id, JobState.QUEUED)
    assert log.claim("w1", 60.0, datetime.now(UTC)) is not None
    log.transition(ref.job_id, JobState.DONE, "analysed", worker="w1")
    return ref.job_id, got


def test_purge_deletes_files_and_rows_and_the_job_keeps_the_count(
    any_db_url: str, tmp_path: Path
) -> None:
    with JobLog.open(any_db_url) as log:
        job_id, got = _finished_series(log, tmp_path)
        store = RetentionStore(log.engine, tmp_path / "spool")
        (candidate,) = store.spool_candidates(datetime.now(UTC) + timedelta(days=1))
        freed = store.purge_spool(candidate.series_id, datetime.now(UTC) + timedelta(days=1), "t")
        assert freed is not None and (freed.files, freed.size) == (3, sum(r.size for r in got))
        assert not any(Path(r.path).exists() for r in got)
        assert log.job_instances(job_id) == []
        summary = log.job(job_id).summary
        assert (summary.instances, summary.spool_purged) == (3, True)
        # Sent again afterwards: a new arrival with a job of its own, counted as usual.
        assert log.record_instance(receipt(0, 0, at=datetime.now(UTC))) is ReceiptOutcome.NEW
        again = max(log.jobs(), key=lambda j: j.job_id)
        assert (again.job_id != job_id, again.instances, again.spool_purged) == (True, 1, False)
        assert log.job(job_id).summary.instances == 3


def test_a_resent_duplicate_being_recorded_keeps_its_series_from_the_purge(
    any_db_url: str, tmp_path: Path
) -> None:
    # The SCP records a re-sent instance of a settled series (a DUPLICATE: its sender is told it
    # is kept) while the sweep starts purging that series. The purge waits for the receipt's
    # transaction and then finds the series received again: nothing is deleted.
    with JobLog.open(any_db_url) as log:
        job_id, got = _finished_series(log, tmp_path)
        cutoff = datetime.now(UTC)  # the job ended before: old enough
        store = RetentionStore(log.engine, tmp_path / "spool")
        recorded, release = threading.Event(), threading.Event()
        outcomes: list[object] = []

        def receive_again() -> None:
            resent = InstanceReceipt(**{**got[0].to_json(), "received_at": datetime.now(UTC)})
            with sessionmaker(log.engine).begin() as session:
                outcomes.append(receipts.record_instance(session, resent))
                recorded.set()
                release.wait(timeout=60)  # the commit waits until the purge has started

        def purge() -> None:
            outcomes.append(store.purge_spool(1, cutoff, "retention.spool_days = 7"))

        receiver = threading.Thread(target=receive_again)
        receiver.start()
        assert recorded.wait(timeout=60)
        purger = threading.Thread(target=purge)
        purger.start()
        purger.join(timeout=0.5)  # it waits for the receipt's lock (or has not begun yet)
        release.set()
        receiver.join(timeout=60)
        purger.join(timeout=60)
        assert outcomes == [ReceiptOutcome.DUPLICATE, None]
        assert all(Path(r.path).is_file() for r in got)
        assert len(log.job_instances(job_id)) == 3


def test_work_folder_and_job_log_rows_go_after_the_files(any_db_url: str, tmp_path: Path) -> None:
    with JobLog.open(any_db_url) as log:
        job_id, _ = _finished_series(log, tmp_path)
        later = datetime.now(UTC) + timedelta(days=1)
        store = RetentionStore(log.engine, tmp_path / "spool")
        assert store.purge_rows(later, lambda _: False, limit=10) == (0, None)  # files first
        assert store.purge_spool(1, later, "t") is not None
        removed: list[int] = []

        def remove() -> Freed:
            removed.append(job_id)
            return Freed(2, 2000)

        assert store.settled_jobs([job_id], later) == [job_id]
        assert store.purge_work(job_id, later, remove, "outputs") == Freed(2, 2000)
        assert removed == [job_id]
        assert "work folder" in (log.job(job_id).events[-1].reason or "")
        assert store.purge_rows(later, {job_id}.__contains__, limit=10) == (0, 1)  # kept
        assert store.purge_rows(later, lambda _: False, limit=10) == (1, 1)
        assert log.jobs() == []
