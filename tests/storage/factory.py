"""Synthetic receipts and queued jobs for the storage tests (no DICOM involved)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from storage.joblog import JobLog
from storage.records import InstanceReceipt
from storage.states import JobState

T0 = datetime(2026, 1, 5, 8, 0, 0, tzinfo=UTC)
STUDY = "1.2.826.0.1.3680043.10.1"


def series_uid(n: int) -> str:
    return f"1.2.826.0.1.3680043.10.1.{n}"


def receipt(
    series: int,
    index: int,
    content: bytes | None = None,
    at: datetime = T0,
    calling_ae: str = "PACS",
) -> InstanceReceipt:
    data = content if content is not None else f"instance {series}.{index}".encode()
    sop = f"{series_uid(series)}.{index + 1}"
    return InstanceReceipt(
        study_uid=STUDY,
        series_uid=series_uid(series),
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        modality="CT",
        calling_ae=calling_ae,
        peer_host="127.0.0.1",
        path=f"/spool/{STUDY}/{series_uid(series)}/{sop}.dcm",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        received_at=at + timedelta(seconds=index),
    )


def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


def queued_jobs(log: JobLog, count: int, instances: int = 2) -> list[int]:
    """``count`` series received and moved to QUEUED; returns their job ids in order."""
    for series in range(count):
        for index in range(instances):
            log.record_instance(receipt(series, index))
    refs = log.quiet_jobs(0.0, T0 + timedelta(hours=1))
    for ref in refs:
        log.transition(ref.job_id, JobState.QUEUED, "series complete")
    return [ref.job_id for ref in refs]
