"""The SCP's spool writes over real associations on 127.0.0.1: the order of issue 7 (file written,
renamed, its folder fsync'd, then the receipt, then the answer), and no refusal when retention
removes the series folder while a file is being created in it."""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE

from node.recovery import recover_spool
from node.scp import StorageSCP
from node.settings import Settings
from storage.joblog import JobLog
from storage.spool import Spool
from tests.node.dicomnet import write_series

#: One clock for the SCP's threads and the peers': the order of events, not their times.
_TICKS = itertools.count()


class RecordingSpool(Spool):
    """The real spool, recording when each file is renamed, each folder fsync starts and ends,
    and each receipt transaction starts (the receipt lock is taken; attributed to the file the
    same thread renamed last), in ticks of :data:`_TICKS`. Each folder fsync is slowed down, so
    that a receipt overlapping it would be seen."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.renamed: dict[str, int] = {}  # file name -> tick
        self.receipts: dict[str, int] = {}  # file name -> tick
        self.flushes: list[tuple[int, int]] = []  # (start, end) ticks
        self._lock = threading.Lock()
        self._last = threading.local()

    def _replace(self, tmp_name: str, path: Path) -> None:
        super()._replace(tmp_name, path)
        self.renamed[path.name] = next(_TICKS)
        self._last.name = path.name

    def sync_folder(self, folder: Path) -> None:
        start = next(_TICKS)
        time.sleep(0.02)
        super().sync_folder(folder)
        with self._lock:
            self.flushes.append((start, next(_TICKS)))

    @contextmanager
    def receipt_lock(self) -> Iterator[None]:
        with super().receipt_lock():
            self.receipts[self._last.name] = next(_TICKS)
            yield


class VanishingFolderSpool(Spool):
    """The real spool whose series folder (and study folder) is removed, as retention removes
    empty ones, right after the writer made it and before it creates its file there (once)."""

    removed = 0

    def _make_dirs(self, folder: Path) -> None:
        super()._make_dirs(folder)
        if not self.removed:
            folder.rmdir()
            folder.parent.rmdir()
            self.removed += 1


class Node:
    def __init__(self, tmp_path: Path, spool_class: type[Spool]) -> None:
        settings = Settings(  # the usual path: no pooled files (test_scp_spool_pool.py)
            data_dir=tmp_path / "var",
            port=0,  # a free port the system picks: settings.port once started
            bind_address="127.0.0.1",
            min_free_mb=0,
            scp_pool_files=0,
        )
        self.joblog = JobLog.open(settings.database_url)
        self.scp = StorageSCP(settings, self.joblog)
        self.spool = spool_class(settings.spool_dir)
        self.scp.spool = self.scp.handler.spool = self.spool
        self.scp.start()
        self.settings = settings.with_changes(port=self.scp.port)

    def stop(self) -> None:
        self.scp.stop()
        self.joblog.close()


@pytest.fixture
def recording(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path, RecordingSpool)
    yield node
    node.stop()


def _send_all(port: int, paths: list[Path], answered: dict[str, tuple[int, int]]) -> None:
    """One association storing ``paths``; records each answer's status and tick by file name."""
    ae = AE(ae_title="PACS")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(str(dcmread(paths[0]).SOPClassUID))
    assoc = ae.associate("127.0.0.1", port, ae_title="SPINENODE")
    assert assoc.is_established
    try:
        for path in paths:
            ds = dcmread(path)
            status = int(assoc.send_c_store(ds).Status)
            answered[f"{ds.SOPInstanceUID}.dcm"] = (status, next(_TICKS))
    finally:
        assoc.release()


def test_receipt_and_success_come_after_the_folder_fsync_that_follows_the_rename(
    recording: Node, tmp_path: Path
) -> None:
    paths = write_series(tmp_path / "in", slices=24, size=16)
    answered: dict[str, tuple[int, int]] = {}
    threads = [
        threading.Thread(target=_send_all, args=(recording.settings.port, paths[i::4], answered))
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spool = recording.spool
    assert isinstance(spool, RecordingSpool)
    assert sorted(answered) == sorted(spool.renamed) == sorted(spool.receipts)
    assert len(answered) == 24
    for name, (status, tick) in answered.items():
        assert status == 0
        renamed, recorded = spool.renamed[name], spool.receipts[name]
        # a folder fsync that started after the rename ended before the receipt transaction
        # started, and the receipt before the success was seen
        assert any(renamed < start and end < recorded for start, end in spool.flushes), name
        assert recorded < tick, name
    # every write fsyncs its folder itself
    assert len(spool.flushes) == 24


def test_a_series_folder_removed_while_a_file_is_created_is_made_again(tmp_path: Path) -> None:
    node = Node(tmp_path, VanishingFolderSpool)
    try:
        paths = write_series(tmp_path / "in", slices=2, size=16)
        answered: dict[str, tuple[int, int]] = {}
        _send_all(node.settings.port, paths, answered)
        assert [status for status, _ in answered.values()] == [0, 0]
        assert isinstance(node.spool, VanishingFolderSpool) and node.spool.removed == 1
        assert sorted(p.name for p in node.settings.spool_dir.rglob("*.dcm")) == sorted(answered)
        assert [j.instances for j in node.joblog.jobs()] == [2]
    finally:
        node.stop()


def _sent_then_forgotten(
    node: Node, tmp_path: Path, slices: int
) -> tuple[list[Path], dict[str, tuple[int, int]], RecordingSpool]:
    """``slices`` instances stored, then their receipt rows deleted (as if the receiving process
    had died between the rename and the receipt); the spool's flush record cleared."""
    paths = write_series(tmp_path / "in", slices=slices, size=16)
    answered: dict[str, tuple[int, int]] = {}
    _send_all(node.settings.port, paths, answered)
    database = node.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        assert connection.execute("DELETE FROM instances").rowcount == slices
    spool = node.spool
    assert isinstance(spool, RecordingSpool)
    spool.renamed.clear()
    spool.flushes.clear()
    return paths, answered, spool


def test_a_file_left_unrecorded_is_written_again_before_its_receipt(
    recording: Node, tmp_path: Path
) -> None:
    # A receiving process that dies between the rename and the receipt leaves a file nobody
    # recorded, whose name may not be on disk yet (start-up recovery runs only when the node
    # starts): when the sender sends it again, it is written again, flushes included, rather
    # than recorded as found.
    paths, answered, spool = _sent_then_forgotten(recording, tmp_path, 1)
    _send_all(recording.settings.port, paths, answered)
    assert [status for status, _ in answered.values()] == [0]
    assert list(spool.renamed) == list(answered) and len(spool.flushes) == 1


def test_start_up_recovery_flushes_each_folder_before_recording_its_files(
    recording: Node, tmp_path: Path
) -> None:
    _, _, spool = _sent_then_forgotten(recording, tmp_path, 3)
    assert recover_spool(spool, recording.joblog) == 3
    assert len(spool.flushes) == 1  # one series folder
