"""Start-up reconciliation in storage: spool files without rows, recorded as recovered."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from storage.joblog import JobLog
from storage.receipts import RECOVERED
from storage.reconcile import record_recovered, unrecorded_files
from storage.spool import Spool
from storage.states import JobState, ReceiptOutcome
from tests.storage.factory import STUDY, T0, receipt, series_uid


def _spool_file(spool: Spool, series: int, index: int) -> Path:
    path = spool.instance_path(STUDY, series_uid(series), f"{series_uid(series)}.{index + 1}")
    spool.write_atomic(path, b"instance")
    return path


def test_unrecorded_files_are_those_without_a_row(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    with JobLog.open(f"sqlite:///{tmp_path / 'jobs.db'}") as joblog:
        assert unrecorded_files(joblog, spool) == []  # no spool folder yet
        files = [_spool_file(spool, 1, i) for i in range(3)]
        (files[0].parent / "notes.txt").write_text("not an instance")
        (files[0].parent / ".partial-x").write_bytes(b"")
        joblog.record_instance(receipt(1, 1))
        assert unrecorded_files(joblog, spool) == sorted([files[0], files[2]])


def test_record_recovered_adds_the_instance_and_a_recovered_event(tmp_path: Path) -> None:
    with JobLog.open(f"sqlite:///{tmp_path / 'jobs.db'}") as joblog:
        joblog.record_instance(receipt(1, 0))
        late = receipt(1, 1, at=T0 + timedelta(minutes=5))
        assert record_recovered(joblog, late) is ReceiptOutcome.NEW
        assert record_recovered(joblog, late) is ReceiptOutcome.DUPLICATE
        (job,) = joblog.jobs(state=JobState.RECEIVING)
        assert job.instances == 2
        assert joblog.job(job.job_id).last_instance_at == late.received_at
        (event,) = joblog.job(job.job_id).instance_events
        assert (event.kind, event.sop_instance_uid) == (RECOVERED, late.sop_instance_uid)


def test_instance_files_lists_only_instances(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert list(spool.instance_files()) == []
    good = _spool_file(spool, 2, 0)
    (good.parent / "01.2.dcm").write_bytes(b"")  # not a UID
    (good.parent / "1.2.txt").write_bytes(b"")
    assert list(spool.instance_files()) == [good]
