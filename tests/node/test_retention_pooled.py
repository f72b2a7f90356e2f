"""Retention's preview of the bytes a purge frees, for spool files written into pooled files
(storage/spool_pool.py): those are padded to their pool size, and the preview must count what
deleting them frees, not the data sets' length."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from node.retention import Retention
from node.scheduler import Scheduler
from node.scp import StorageSCP
from node.settings import RetentionSettings, SelectionRules, Settings
from storage.joblog import JobLog
from storage.spool_pool import SLOT_STEP
from storage.states import JobState
from tests.node.dicomnet import send, wait_for, write_series

SLICES = 5


def test_the_preview_counts_the_pooled_files_bytes_as_deleting_them_frees(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "var",
        port=0,  # a free port the system picks (scp.port)
        bind_address="127.0.0.1",
        min_free_mb=0,
        scp_pool_files=0,  # the pool is started below, with files of one 64 KiB step
        selection=SelectionRules(min_slices=4, max_slice_spacing_mm=2.5),
        retention=RetentionSettings(spool_days=7),
    )
    joblog = JobLog.open(settings.database_url)
    scp = StorageSCP(settings, joblog)
    scp.start()
    try:
        scp.spool.start_pool(SLICES, SLOT_STEP, eager=True)
        assert wait_for(lambda: scp.spool.pool_free() == SLICES, timeout=30, step=0.02)
        assert send(scp.port, write_series(tmp_path / "in", slices=SLICES)) == [0] * SLICES
        assert scp.handler.step_times.pooled == SLICES
        files = sorted(settings.spool_dir.rglob("*.dcm"))
        sizes = [f.stat().st_size for f in files]
        assert sizes == [SLOT_STEP] * SLICES  # padded: each data set is a few KiB
        ((job, _),) = Scheduler(joblog, settings).tick(datetime.now(UTC) + timedelta(hours=1))
        assert joblog.claim("w", 60.0, datetime.now(UTC)) is not None
        joblog.transition(job, JobState.DONE, worker="w")
        retention = Retention(joblog, settings)
        later = datetime.now(UTC) + timedelta(days=8)
        preview = retention.preview(later)
        report = retention.sweep(later)
    finally:
        scp.stop()
        joblog.close()
    assert (preview.instances, report.instances) == (SLICES, SLICES)
    assert preview.spool_bytes == report.spool_bytes == sum(sizes)
    assert not any(f.exists() for f in files)
