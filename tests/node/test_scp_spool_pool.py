"""Pooled spool files over real associations on 127.0.0.1 (storage/spool_pool.py): every instance
is filled into a file made ahead, renamed, then recorded, then answered; the file reads back as
the instance sent; and start-up recovery at each crash point a pooled write has (filled but not
renamed, renamed but the rename lost, the receipt lost too, partly filled, never filled)."""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from dicom_io.series import load_series
from node.scp import StorageSCP
from node.settings import Settings
from node.spoolfile import file_content_sha256, verified_sha256
from storage.joblog import JobLog
from storage.spool import Spool
from storage.spool_pool import SLOT_STEP
from storage.states import JobState
from tests.node.dicomnet import send, write_series

_TICKS = itertools.count()
SLICES = 12


class RecordingSpool(Spool):
    """The real spool, recording when each file is renamed and each receipt starts (ticks), and
    counting folder fsyncs."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.renamed: dict[str, int] = {}
        self.receipts: dict[str, int] = {}
        self.folder_syncs = 0
        self._last = threading.local()

    def _replace(self, tmp_name: str, path: Path) -> None:
        super()._replace(tmp_name, path)
        self.renamed[path.name] = next(_TICKS)
        self._last.name = path.name

    def sync_folder(self, folder: Path) -> None:
        self.folder_syncs += 1
        super().sync_folder(folder)

    @contextmanager
    def receipt_lock(self) -> Iterator[None]:
        with super().receipt_lock():
            self.receipts[self._last.name] = next(_TICKS)
            yield


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        port=0,  # a free port the system picks (StorageSCP.port)
        bind_address="127.0.0.1",
        min_free_mb=0,
        scp_pool_files=0,  # the tests start the pool themselves, with small files
    )


class Node:
    """The in-process SCP with a pool of ``SLICES`` 64 KiB files, full before anything is sent."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.joblog = JobLog.open(settings.database_url)
        self.scp = StorageSCP(settings, self.joblog)
        self.spool = RecordingSpool(settings.spool_dir)
        self.scp.spool = self.scp.handler.spool = self.spool
        self.scp.start()
        self.spool.start_pool(SLICES, SLOT_STEP, eager=True)
        deadline = time.monotonic() + 30
        while self.spool.pool_free() < SLICES:
            assert time.monotonic() < deadline, "the pool did not fill"
            time.sleep(0.02)

    def stop(self) -> None:
        self.scp.stop()
        self.joblog.close()


def _send_on_four(port: int, paths: list[Path]) -> dict[str, int]:
    """``paths`` shared out over four associations at once; the answers' ticks by file name."""
    answered: dict[str, int] = {}

    def one(part: list[Path]) -> None:
        for path in part:
            assert send(port, [path]) == [0]
            answered[f"{dcmread(path).SOPInstanceUID}.dcm"] = next(_TICKS)

    threads = [threading.Thread(target=one, args=(paths[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answered


@pytest.fixture
def stored(tmp_path: Path) -> Iterator[tuple[Settings, list[Path], list[Path]]]:
    """The sent files and the spool files after a pooled run (the SCP stopped)."""
    settings = _settings(tmp_path)
    sent = write_series(tmp_path / "in", slices=SLICES, size=32)
    node = Node(settings)
    try:
        answered = _send_on_four(node.scp.port, sent)
        spool = node.spool
        assert node.scp.handler.step_times.pooled == SLICES  # every write into a pooled file
        assert spool.folder_syncs == 0
        for name, tick in answered.items():  # renamed, then recorded, then answered
            assert spool.renamed[name] < spool.receipts[name] < tick, name
    finally:
        node.stop()
    yield settings, sent, sorted(settings.spool_dir.rglob("*.dcm"))


def test_pooled_files_read_back_as_the_instances_sent(
    stored: tuple[Settings, list[Path], list[Path]],
) -> None:
    settings, sent, files = stored
    assert len(files) == SLICES and all(f.stat().st_size == SLOT_STEP for f in files)
    joblog = JobLog.open(settings.database_url)
    try:
        by_uid = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in sent}
        for path in files:
            ds = dcmread(path)
            original = by_uid[path.stem]
            assert np.array_equal(ds.pixel_array, original.pixel_array)
            assert ds[0xFFFC, 0xFFFC].VR == "OB"  # the rest of the file is trailing padding
            digest = file_content_sha256(path)
            assert digest == verified_sha256(path) == joblog.recorded_sha256(path.stem)
    finally:
        joblog.close()
    loaded, expected = load_series(files), load_series(sent)  # what the worker's loader reads
    assert np.array_equal(loaded.hu, expected.hu) and np.allclose(loaded.affine, expected.affine)


def _pool_folder(settings: Settings) -> Path:
    """A pool folder as a crashed process leaves it."""
    folder = settings.data_dir / "spool.pool" / "4242-deadbeef"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _forget_receipts(settings: Settings, sop_uids: list[str]) -> None:
    with sqlite3.connect(settings.data_dir / "spinenode.db") as connection:
        connection.executemany(
            "DELETE FROM instances WHERE sop_instance_uid = ?", [(uid,) for uid in sop_uids]
        )
    connection.close()


def _restart(settings: Settings) -> tuple[list[tuple[str, str]], list[Path], int]:
    """Start the SCP again (start-up recovery), stop it: the job's instance events, the spool's
    files, and the instances its job counts."""
    joblog = JobLog.open(settings.database_url)
    scp = StorageSCP(settings, joblog)
    scp.start()
    try:
        (job,) = joblog.jobs(state=JobState.RECEIVING)
        events = [(e.sop_instance_uid, e.kind) for e in joblog.job(job.job_id).instance_events]
        instances = job.instances
    finally:
        scp.stop()
        joblog.close()
    assert list((settings.data_dir / "spool.pool").glob("*/*")) == []  # the pool is emptied
    return sorted(events), sorted(settings.spool_dir.rglob("*.dcm")), instances


def test_acknowledged_files_whose_rename_was_lost_are_renamed_at_start_up(
    stored: tuple[Settings, list[Path], list[Path]],
) -> None:
    # A power loss after the answer and before the journal committed the rename: the file is
    # under its pool name; the receipt may be lost too (committed without an fsync).
    settings, _, files = stored
    pool = _pool_folder(settings)
    for i, path in enumerate(files[:4]):
        os.rename(path, pool / f"{i:08d}")
    _forget_receipts(settings, [f.stem for f in files[2:4]])
    events, after, instances = _restart(settings)
    assert after == files and instances == SLICES
    assert events == sorted((f.stem, "recovered") for f in files[2:4])


def test_a_whole_file_never_renamed_is_recorded_and_a_partial_one_removed(
    stored: tuple[Settings, list[Path], list[Path]],
) -> None:
    # Filled and flushed, not yet renamed, not recorded (never acknowledged; it is recorded as a
    # file found), and one filled in part (a crash mid-write: its checksum does not match).
    settings, _, files = stored
    pool = _pool_folder(settings)
    whole, partial = files[0], files[1]
    _forget_receipts(settings, [whole.stem, partial.stem])
    os.rename(whole, pool / "00000001")
    data = bytearray(partial.read_bytes())
    data[1500:] = bytes(len(data) - 1500)  # from inside its data set on, never on the disk
    (pool / "00000002").write_bytes(data)
    partial.unlink()
    (pool / "00000003").write_bytes(bytes(SLOT_STEP))  # a free file, never filled
    events, after, instances = _restart(settings)
    assert after == sorted(set(files) - {partial}) and instances == SLICES - 1
    assert events == [(whole.stem, "recovered")]


def test_a_pooled_copy_of_a_file_in_place_is_removed_unless_the_job_log_vouches_for_it(
    stored: tuple[Settings, list[Path], list[Path]],
) -> None:
    settings, _, files = stored
    pool = _pool_folder(settings)
    same, other = files[0], files[1]
    (pool / "00000001").write_bytes(same.read_bytes())  # the same instance: nothing to do
    # A damaged file in place and the recorded copy in the pool: the recorded one wins.
    good = other.read_bytes()
    (pool / "00000002").write_bytes(good)
    other.write_bytes(good[:1500] + b"x" * 100 + good[1600:])  # inside the data set
    events, after, _ = _restart(settings)
    assert after == files and events == []
    assert other.read_bytes() == good and same.stat().st_size == SLOT_STEP
