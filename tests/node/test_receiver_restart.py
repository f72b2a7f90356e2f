"""A receiving process killed mid-run (node/receivers.py starts it again): the receiver that
replaces it empties the spool pool folder the dead one left (storage/spool_pool.py), puts the
whole files back into the spool, records the one without a receipt, removes the rest, and leaves
the running receiver's folder alone."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

from pydicom import dcmread

from node.receivers import ReceiverPool
from node.settings import Settings
from node.spoolfile import file_content_sha256
from storage.joblog import JobLog
from storage.spool_pool import DEFAULT_SLOT_BYTES
from storage.states import JobState
from tests.node.dicomnet import send, wait_for, write_series

POOL_FILES = 3


def _pool_folder(settings: Settings, pid: int) -> Path:
    (folder,) = (settings.data_dir / "spool.pool").glob(f"{pid}-*")
    return folder


def _pool_files(settings: Settings, pid: int) -> list[Path]:
    return list((settings.data_dir / "spool.pool").glob(f"{pid}-*/*"))


def _spooled(settings: Settings, path: Path) -> Path:
    ds = dcmread(path, stop_before_pixels=True)
    uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    return settings.spool_dir / uids[0] / uids[1] / f"{uids[2]}.dcm"


def test_a_receiver_started_again_empties_the_pool_folder_of_the_dead_one(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "var",
        port=0,  # a free port the system picks (pool.port)
        bind_address="127.0.0.1",
        min_free_mb=0,
        scp_processes=2,
        scp_pool_files=POOL_FILES,
    )
    paths = write_series(tmp_path / "in", slices=4, size=512)  # 512 x 512: the pool's size
    joblog = JobLog.open(settings.database_url)
    pool = ReceiverPool(settings, joblog)
    pool.start()
    port = pool.port
    try:
        first, second = pool.pids
        for path in paths[:2]:  # one each: both fill their pools after their first write
            assert send(port, [path]) == [0]
        assert wait_for(
            lambda: all(len(_pool_files(settings, pid)) == POOL_FILES for pid in (first, second)),
            timeout=60,
        )
        folders = [_pool_folder(settings, pid) for pid in (first, second)]
        for path in paths[2:]:  # one each again, now into pooled files
            assert send(port, [path]) == [0]
        assert pool.handed_over == [2, 2]
        acknowledged, unrecorded = _spooled(settings, paths[2]), _spooled(settings, paths[3])
        assert acknowledged.stat().st_size == DEFAULT_SLOT_BYTES
        digests = {p: file_content_sha256(p) for p in (acknowledged, unrecorded)}
        # What a dead receiver may leave in its folder: a whole file whose rename did not happen
        # (here: an acknowledged one, and one filled but never recorded), one filled in part,
        # and free files.
        os.rename(acknowledged, folders[0] / "lost-rename")
        os.rename(unrecorded, folders[0] / "never-renamed")
        with sqlite3.connect(settings.data_dir / "spinenode.db") as connection:
            connection.execute(
                "DELETE FROM instances WHERE sop_instance_uid = ?", (unrecorded.stem,)
            )
        connection.close()
        (folders[0] / "partial").write_bytes(paths[0].read_bytes()[:4000])
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: pool.pids[:1] not in ([], [first]), timeout=60)
        assert wait_for(lambda: not folders[0].exists(), timeout=30)  # emptied and removed
        assert {p: file_content_sha256(p) for p in digests} == digests  # back in the spool
        assert len(list(folders[1].iterdir())) >= POOL_FILES - 1  # the running one's: untouched
        assert _pool_folder(settings, pool.pids[0]).is_dir()  # the new receiver's own
        (job,) = joblog.jobs(state=JobState.RECEIVING)
        detail = joblog.job(job.job_id)
        assert job.instances == 4
        assert [(e.sop_instance_uid, e.kind) for e in detail.instance_events] == [
            (unrecorded.stem, "recovered")
        ]
        assert send(port, paths) == [0] * 4  # duplicates of what is kept
    finally:
        pool.stop()
        joblog.close()
