"""`spinenode serve` runs the retention sweep and the job time limit: real processes, real files."""

from __future__ import annotations

from pathlib import Path

from storage.joblog import JobLog
from storage.states import JobState
from tests.node.dicomnet import PacsSCP, send, wait_for, write_series
from tests.node.test_serve_e2e import Serve, setup  # noqa: F401  (the fixture)

#: About 1.7 s: finished work goes within seconds, while the test watches.
SOON_DAYS = "0.00002"
OTHER_SERIES = "1.2.826.0.1.3680043.8.498.7001.3"


def _events(joblog: JobLog, job_id: int) -> list[str]:
    return [e.reason or "" for e in joblog.job(job_id).events]


def test_serve_purges_finished_work_after_the_retention_period(
    setup: tuple[Path, PacsSCP],  # noqa: F811
    tmp_path: Path,
) -> None:
    config, pacs = setup
    env = {
        "SPINENODE_RETENTION_SPOOL_DAYS": SOON_DAYS,
        "SPINENODE_RETENTION_OUTPUTS_DAYS": SOON_DAYS,
        "SPINENODE_RETENTION_INTERVAL_SECONDS": "0.5",
    }
    node = Serve(config, tmp_path / "serve.log", **env)
    joblog = JobLog.open(f"sqlite:///{tmp_path / 'var' / 'spinenode.db'}")
    try:
        assert send(node.port, write_series(tmp_path / "in", slices=6)) == [0] * 6
        assert wait_for(lambda: len(pacs.received) == 1, timeout=60)

        def purged() -> bool:
            reasons = _events(joblog, 1)
            return any("work folder" in r for r in reasons) and any(
                "6 received instances" in r for r in reasons
            )

        assert wait_for(purged, timeout=60), (tmp_path / "serve.log").read_text()
        assert joblog.job(1).summary.state is JobState.DONE
    finally:
        joblog.close()
        assert node.stop() == 0
    assert list((tmp_path / "var" / "spool").rglob("*.dcm")) == []
    assert not (tmp_path / "var" / "work" / "job-1").exists()
    log = (tmp_path / "serve.log").read_text()
    assert "retention: 1 series (6 instances" in log
    assert "Test^Node" not in log and "NODE-TEST-1" not in log  # no patient data at INFO


def test_serve_stops_a_job_over_the_time_limit_and_goes_on(
    setup: tuple[Path, PacsSCP],  # noqa: F811
    tmp_path: Path,
) -> None:
    config, _ = setup
    env = {
        "SPINENODE_WORKER_ANALYZER": "tests.node.sleepy:sleepy",
        "SPINENODE_WORKER_MAX_JOB_SECONDS": "2",
    }
    node = Serve(config, tmp_path / "serve.log", **env)
    joblog = JobLog.open(f"sqlite:///{tmp_path / 'var' / 'spinenode.db'}")
    try:
        assert send(node.port, write_series(tmp_path / "a", slices=6)) == [0] * 6
        other = write_series(tmp_path / "b", slices=6, series_uid=OTHER_SERIES)
        assert send(node.port, other) == [0] * 6
        # one worker: both jobs fail by the limit only if it went on after the first
        assert wait_for(lambda: len(joblog.jobs(state=JobState.FAILED)) == 2, timeout=90), (
            tmp_path / "serve.log"
        ).read_text()
        reasons = [job.reason or "" for job in joblog.jobs()]
    finally:
        joblog.close()
        assert node.stop() == 0
    assert all("exceeded the time limit of 2 s" in reason for reason in reasons)
