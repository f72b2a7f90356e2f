"""Receipts lost with the job log's last commits (a power loss): start-up records the spool files.

The SCP commits receipts without waiting for the disk; the fsync'd spool file is the truth. These
tests make the state a power loss can leave (spool files whose rows are gone), start the SCP again
and check that every file is recorded, with a "recovered" event, and that its series is scheduled.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydicom import dcmread

from node.scheduler import Scheduler
from node.scp import StorageSCP
from node.settings import SelectionRules, Settings
from node.spoolfile import content_sha256, file_content_sha256
from storage.joblog import JobLog
from storage.states import JobState
from tests.node.dicomnet import SERIES_UID, send, write_series


def _settings(tmp_path: Path) -> Settings:
    """Port 0: the SCP listens on a free port the system picks (``StorageSCP.port``)."""
    return Settings(
        data_dir=tmp_path / "var", port=0, bind_address="127.0.0.1", min_free_mb=0
    ).with_changes(quiet_seconds=1.0, selection=SelectionRules(min_slices=2))


def _receive(settings: Settings, paths: list[Path]) -> list[Path]:
    """Run the SCP, send ``paths``, stop; the spool files."""
    joblog = JobLog.open(settings.database_url)
    scp = StorageSCP(settings, joblog)
    scp.start()
    try:
        assert send(scp.port, paths, calling_ae="CT7") == [0] * len(paths)
    finally:
        scp.stop()
        joblog.close()
    return sorted(settings.spool_dir.rglob("*.dcm"))


class _Restarted:
    """The SCP started again on the same data dir (its start-up recovers the spool)."""

    def __init__(self, settings: Settings) -> None:
        self.joblog = JobLog.open(settings.database_url)
        self.scp = StorageSCP(settings, self.joblog)
        self.scp.start()

    def stop(self) -> None:
        self.scp.stop()
        self.joblog.close()


def _forget_receipts(settings: Settings, sop_uids: list[str]) -> None:
    """What a power loss can do to receipts committed without an fsync: their rows are gone."""
    database = settings.data_dir / "spinenode.db"
    with sqlite3.connect(database) as connection:
        connection.executemany(
            "DELETE FROM instances WHERE sop_instance_uid = ?", [(uid,) for uid in sop_uids]
        )
    connection.close()


def test_spool_files_without_rows_are_recorded_and_their_series_scheduled(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    files = _receive(settings, write_series(tmp_path / "in", slices=5))
    lost = [f.stem for f in files[:2]]
    _forget_receipts(settings, lost)
    node = _Restarted(settings)
    joblog = node.joblog
    try:
        (job,) = joblog.jobs(state=JobState.RECEIVING)
        assert job.instances == 5
        assert sorted(joblog.job_instances(job.job_id)) == [str(f) for f in files]
        detail = joblog.job(job.job_id)
        events = sorted((e.sop_instance_uid, e.kind, e.calling_ae, e.peer_host) for e in
                        detail.instance_events)  # fmt: skip
        assert events == [(uid, "recovered", "CT7", "127.0.0.1") for uid in sorted(lost)]
        later = datetime.now(UTC) + timedelta(hours=1)
        assert Scheduler(joblog, settings).tick(later) == [(job.job_id, JobState.QUEUED)]
    finally:
        node.stop()


def test_a_lost_series_is_recorded_as_new_arrival_with_its_sender(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    files = _receive(settings, write_series(tmp_path / "in", slices=3))
    (settings.data_dir / "spinenode.db").unlink()  # every row gone: studies, series, jobs too
    for extra in settings.data_dir.glob("spinenode.db-*"):
        extra.unlink()
    node = _Restarted(settings)
    joblog = node.joblog
    try:
        (job,) = joblog.jobs(state=JobState.RECEIVING)
        assert (job.series_uid, job.instances, job.calling_ae) == (SERIES_UID, 3, "CT7")
        assert sorted(joblog.job_instances(job.job_id)) == [str(f) for f in files]
    finally:
        node.stop()


def test_recorded_files_are_left_alone_and_unreadable_ones_skipped(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    files = _receive(settings, write_series(tmp_path / "in", slices=2))
    garbage = files[0].parent / "1.2.3.4.5.dcm"
    garbage.write_bytes(b"not DICOM")
    node = _Restarted(settings)
    joblog = node.joblog
    try:
        (job,) = joblog.jobs(state=JobState.RECEIVING)
        assert job.instances == 2
        assert joblog.job(job.job_id).instance_events == ()
        assert garbage.exists()
    finally:
        node.stop()


def test_spool_file_keeps_the_data_set_and_names_its_sender(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    sent = write_series(tmp_path / "in", slices=1)
    (stored,) = _receive(settings, sent)
    original = sent[0].read_bytes()
    kept = stored.read_bytes()
    meta = dcmread(stored).file_meta
    assert meta.SendingApplicationEntityTitle == "CT7"
    assert meta.ReceivingApplicationEntityTitle == "SPINENODE"
    assert meta.SendingPresentationAddress == "//127.0.0.1"
    assert meta.MediaStorageSOPInstanceUID == stored.stem
    original_meta_end = 144 + int.from_bytes(original[140:144], "little")
    dataset = original[original_meta_end:]
    assert kept.endswith(dataset)  # the data set exactly as sent, no re-encoding
    syntax = str(dcmread(sent[0]).file_meta.TransferSyntaxUID)
    assert file_content_sha256(stored) == content_sha256(syntax, dataset)
