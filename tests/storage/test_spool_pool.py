"""Pooled spool files (storage/spool_pool.py): made ahead with zeros and flushed, filled in place
(same file, same size, no folder flush), renamed to the instance's name; the usual write when
none fits; a failed pooled write leaves nothing."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from storage.errors import SpoolError
from storage.spool import Spool
from storage.spool_pool import (
    SLOT_STEP,
    SWITCH_AFTER,
    FilePool,
    lock_new_folder,
    orphaned_folders,
    slot_for,
)

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
SLOT = SLOT_STEP  # 64 KiB files: small and quick to make


def _trailer(free: int) -> bytes:
    return b"PAD" + free.to_bytes(4, "little")


def _wait_full(spool: Spool, files: int) -> None:
    deadline = time.monotonic() + 30
    while spool.pool_free() < files:
        assert time.monotonic() < deadline, "the pool did not fill"
        time.sleep(0.02)


class _RecordingSpool(Spool):
    """The real spool, counting folder fsyncs."""

    folder_syncs = 0

    def sync_folder(self, folder: Path) -> None:
        self.folder_syncs += 1
        super().sync_folder(folder)


@pytest.fixture
def pooled(tmp_path: Path) -> _RecordingSpool:
    spool = _RecordingSpool(tmp_path / "spool")
    spool.start_pool(3, SLOT, eager=True)
    _wait_full(spool, 3)
    return spool


def test_the_filler_makes_files_of_zeros_outside_the_spool(pooled: Spool) -> None:
    files = pooled.pooled_files()
    assert len(files) == 3
    assert all(
        f.is_relative_to(pooled.pool_root) and not f.is_relative_to(pooled.root) for f in files
    )
    assert all(f.read_bytes() == bytes(SLOT) for f in files)
    assert list(pooled.instance_files()) == []
    pooled.close()
    assert pooled.pooled_files() == []  # closing removes the free files


def test_a_pooled_write_fills_a_made_file_in_place_and_renames_it(pooled: _RecordingSpool) -> None:
    before = {f.stat().st_ino for f in pooled.pooled_files()}
    path = pooled.instance_path(STUDY, SERIES, SOP)
    times = pooled.write_atomic(path, [b"head", memoryview(b"data")], _trailer)
    assert times.pooled and times.folder_sync_s == 0.0
    assert path.stat().st_ino in before  # the same file: its blocks were there already
    assert path.stat().st_size == SLOT  # and its size did not change
    tail = _trailer(SLOT - 8)
    assert path.read_bytes() == b"headdata" + tail + bytes(SLOT - 8 - len(tail))
    assert pooled.folder_syncs == 0  # no flush of the folder it was renamed into
    assert len(pooled.pooled_files()) == 2
    pooled.close()


def test_without_a_trailer_or_a_fitting_file_the_usual_write_runs(pooled: _RecordingSpool) -> None:
    path = pooled.instance_path(STUDY, SERIES, SOP)
    assert not pooled.write_atomic(path, b"no trailer").pooled
    big = pooled.instance_path(STUDY, SERIES, SOP + ".1")
    assert not pooled.write_atomic(big, b"x" * SLOT, _trailer).pooled  # does not fit
    refused = pooled.instance_path(STUDY, SERIES, SOP + ".2")
    assert not pooled.write_atomic(refused, b"odd", lambda free: None).pooled
    assert refused.read_bytes() == b"odd"
    assert len(pooled.pooled_files()) == 2  # the refused trailer's file is not reused
    assert pooled.folder_syncs == 3  # each usual write flushes its folder
    pooled.close()


class _FailingRenameSpool(Spool):
    def _replace(self, tmp_name: str, path: Path) -> None:
        raise OSError(5, "Input/output error")


def test_nothing_is_made_before_the_first_write(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.start_pool(2, SLOT)
    time.sleep(0.2)
    assert spool.pooled_files() == []  # an SCP that receives nothing writes nothing
    path = spool.instance_path(STUDY, SERIES, SOP)
    assert not spool.write_atomic(path, b"first", _trailer).pooled
    _wait_full(spool, 2)
    spool.close()


def test_a_failed_pooled_write_leaves_no_file(tmp_path: Path) -> None:
    spool = _FailingRenameSpool(tmp_path / "spool")
    spool.start_pool(2, SLOT, eager=True)
    _wait_full(spool, 2)
    path = spool.instance_path(STUDY, SERIES, SOP)
    with pytest.raises(SpoolError, match="Input/output error"):
        spool.write_atomic(path, b"data", _trailer)
    assert not path.exists()
    assert len(spool.pooled_files()) == 1  # the filled one is removed, not given back
    spool.close()


def test_the_pool_switches_size_only_after_several_writes_needed_another(tmp_path: Path) -> None:
    pool = FilePool(tmp_path / "pool", 2, SLOT)
    pool.start(eager=True)
    deadline = time.monotonic() + 30
    while pool.free_count() < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    big = 3 * SLOT
    for _ in range(SWITCH_AFTER - 1):
        assert pool.take(big) is None
    assert pool.free_count() == 2  # one odd instance (or seven) keeps the pool as it is
    assert pool.take(10) is not None
    for _ in range(SWITCH_AFTER):
        assert pool.take(big) is None
    while pool.free_count() < 2:  # made again, of the new size, once no file is taken
        assert time.monotonic() < deadline
        time.sleep(0.02)
    taken = pool.take(big)
    assert taken is not None and taken[1] == slot_for(big) == os.path.getsize(taken[0])
    pool.close()


def test_the_filler_leaves_the_free_space_guard_s_reserve_alone(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.start_pool(2, SLOT, eager=True, reserve=spool.free_bytes() + 10**12)
    time.sleep(0.3)
    assert spool.pooled_files() == [] and spool.pool_free() == 0
    path = spool.instance_path(STUDY, SERIES, SOP)
    assert not spool.write_atomic(path, b"data", _trailer).pooled  # the usual write still runs
    spool.close()


def test_instances_of_another_size_do_not_start_the_filler(tmp_path: Path) -> None:
    pool = FilePool(tmp_path / "pool", 2, 4 * SLOT)
    pool.start()
    for _ in range(SWITCH_AFTER - 1):
        assert pool.take(100) is None  # smaller than the pool's files by far: not pooled
    time.sleep(0.8)  # longer than the filler's idle wait
    assert pool.free_count() == 0 and not list((tmp_path / "pool").glob("*"))
    assert pool.take(3 * SLOT + 100) is None  # fits: the filler starts after the idle wait
    deadline = time.monotonic() + 30
    while pool.free_count() < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pool.close()


def test_recovery_claims_only_the_folders_of_pools_whose_process_is_gone(tmp_path: Path) -> None:
    running = Spool(tmp_path / "spool")
    running.start_pool(1, SLOT)  # not eager: its folder (locked), no file yet
    (live,) = running.pool_root.iterdir()
    dead = running.pool_root / "4242-deadbeef"  # a folder whose process is gone: no lock held
    dead.mkdir()
    other = Spool(tmp_path / "spool")
    with other.orphaned_pools() as folders:
        assert folders == [dead]
        with running.orphaned_pools() as again:
            assert again == []  # claimed: nobody else empties it meanwhile
    with other.orphaned_pools() as folders:
        assert folders == [dead]  # the claim ended with the block
    running.close()  # removes its folder and lets go of the lock
    assert not live.exists()


def _waits_for_lock(inode: int) -> bool:
    """Whether a process waits for an ``flock`` on ``inode`` (Linux ``/proc/locks``)."""
    lines = Path("/proc/locks").read_text().splitlines()
    return any("->" in line and f":{inode} " in line for line in lines)


def test_a_folder_removed_by_a_sweep_while_it_is_made_is_made_again(tmp_path: Path) -> None:
    # A new pool's folder exists, unlocked, for a moment: a sweep may claim it, and remove it
    # while the pool waits for its lock. The pool then makes it again and holds the lock of a
    # folder that is there.
    root = tmp_path / "spool.pool"
    folder = root / "4243-cafe"
    folder.mkdir(parents=True)
    inode = folder.stat().st_ino
    locked: list[int] = []
    with orphaned_folders(root) as claimed:
        assert claimed == [folder]
        maker = threading.Thread(target=lambda: locked.append(lock_new_folder(folder)))
        maker.start()
        deadline = time.monotonic() + 30
        while not _waits_for_lock(inode):  # the pool has opened it and waits for the sweep
            assert time.monotonic() < deadline, "lock_new_folder never waited for the lock"
            time.sleep(0.01)
        folder.rmdir()  # what the sweep does with an empty folder
    maker.join(30)
    (fd,) = locked
    try:
        assert os.fstat(fd).st_nlink > 0 and os.fstat(fd).st_ino == folder.stat().st_ino
        with orphaned_folders(root) as claimed:
            assert claimed == []  # locked: no sweep takes it now
    finally:
        os.close(fd)
