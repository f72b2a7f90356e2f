"""The job time limit and the analysis child process: a job over ``worker.max_job_seconds`` is
FAILED with the limit as its reason and the next job runs; a child that dies fails its job; a child
whose worker is killed goes away by itself."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from node.scheduler import Scheduler
from node.settings import SelectionRules, Settings
from node.worker import Worker, load_analyzer, worker_main
from storage.joblog import JobLog
from storage.spool import Spool
from storage.states import JobState
from tests.node.dicomnet import SERIES_UID, receive, wait_for, write_series

LATER = timedelta(hours=1)
OTHER_SERIES = "1.2.826.0.1.3680043.8.498.99"


@dataclass
class Env:
    settings: Settings
    joblog: JobLog
    spool: Spool


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    settings = Settings(
        data_dir=tmp_path / "var",
        min_free_mb=0,
        quiet_seconds=1.0,
        selection=SelectionRules(min_slices=4, max_slice_spacing_mm=2.5),
        lease_seconds=30.0,
        heartbeat_seconds=0.5,
        max_job_seconds=1.0,
        analyzer="tests.node.analyzers:mip",
    )
    joblog = JobLog.open(settings.database_url)
    yield Env(settings, joblog, Spool(settings.spool_dir))
    joblog.close()


def _queue(env: Env, folder: Path, series_uid: str = SERIES_UID) -> list[int]:
    receive(env.joblog, env.spool, write_series(folder, slices=5, series_uid=series_uid))
    decided = Scheduler(env.joblog, env.settings).tick(datetime.now(UTC) + LATER)
    assert all(state is JobState.QUEUED for _, state in decided)
    return [job_id for job_id, _ in decided]


def _worker(env: Env, analyzer: str, name: str = "w-test") -> Worker:
    return Worker(env.settings, env.joblog, load_analyzer(analyzer), name)


def _gone(pid: int) -> bool:
    """The process ``pid`` has ended (a zombie that nobody reaped counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_job_over_the_time_limit_fails_with_the_limit_and_the_next_job_runs(
    env: Env, tmp_path: Path
) -> None:
    (first,) = _queue(env, tmp_path / "a")
    (second,) = _queue(env, tmp_path / "b", OTHER_SERIES)
    assert _worker(env, "tests.node.sleepy:sleepy").run_once() == first
    detail = env.joblog.job(first)
    assert detail.summary.state is JobState.FAILED
    assert "exceeded the time limit of 1 s" in (detail.summary.reason or "")
    assert "worker.max_job_seconds" in (detail.summary.reason or "")
    assert detail.summary.worker == "w-test"
    assert detail.lease_until is None  # the lease is released with the final state
    assert [s.stage for s in detail.stages] == ["analysis"]
    child = int((env.settings.work_dir / f"job-{first}" / "started").read_text())
    assert wait_for(lambda: _gone(child), timeout=10)  # the analysis was stopped, not left running
    worker = _worker(env, env.settings.analyzer)
    worker.settings = env.settings.with_changes(max_job_seconds=300.0)
    assert worker.run_once() == second
    assert env.joblog.job(second).summary.state is JobState.DONE  # no destination: nothing to send


def test_analysis_process_that_dies_fails_the_job_with_how_it_died(
    env: Env, tmp_path: Path
) -> None:
    (job_id,) = _queue(env, tmp_path / "a")
    worker = _worker(env, "tests.node.sleepy:crash")
    worker.settings = env.settings.with_changes(max_job_seconds=300.0)
    assert worker.run_once() == job_id
    summary = env.joblog.job(job_id).summary
    assert summary.state is JobState.FAILED
    assert "killed by SIGKILL" in (summary.reason or "")


def test_analysis_output_comes_back_from_the_child(env: Env, tmp_path: Path) -> None:
    (job_id,) = _queue(env, tmp_path / "a")
    worker = _worker(env, env.settings.analyzer)
    worker.settings = env.settings.with_changes(max_job_seconds=300.0)
    assert worker.run_once() == job_id
    detail = env.joblog.job(job_id)
    assert detail.summary.state is JobState.DONE
    assert {s.stage for s in detail.stages} == {"load", "write", "analysis"}
    assert (env.settings.work_dir / f"job-{job_id}" / "mip.dcm").is_file()


def test_analysis_stops_when_its_worker_is_killed(env: Env, tmp_path: Path) -> None:
    (job_id,) = _queue(env, tmp_path / "a")
    settings = env.settings.with_changes(
        analyzer="tests.node.analyzers:slow", max_job_seconds=300.0
    )
    process = multiprocessing.get_context("spawn").Process(
        target=worker_main, args=(settings, 0, 0, os.getpid())
    )
    process.start()
    marker = env.settings.work_dir / f"job-{job_id}" / "started"
    try:
        assert wait_for(lambda: marker.exists() and marker.read_text().strip() != "", timeout=60)
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        process.join(10)
    finally:
        if process.is_alive():
            process.kill()
    child = int(marker.read_text())
    assert child != process.pid
    assert wait_for(lambda: _gone(child), timeout=10)
    assert env.joblog.job(job_id).summary.state is JobState.RUNNING  # taken again after the lease


def test_lost_lease_stops_the_analysis_and_leaves_the_job_to_its_new_holder(
    env: Env, tmp_path: Path
) -> None:
    (job_id,) = _queue(env, tmp_path / "a")
    worker = _worker(env, "tests.node.sleepy:sleepy")
    worker.settings = env.settings.with_changes(max_job_seconds=300.0)
    marker = env.settings.work_dir / f"job-{job_id}" / "started"

    def steal() -> None:  # another worker takes the job as if this one's lease had expired
        assert wait_for(lambda: marker.exists() and marker.read_text().strip() != "", timeout=60)
        assert env.joblog.claim("thief", 60.0, datetime.now(UTC) + LATER) is not None

    thief = threading.Thread(target=steal)
    thief.start()
    assert worker.run_once() == job_id  # returns long before the 120 s sleep would end
    thief.join()
    assert wait_for(lambda: _gone(int(marker.read_text())), timeout=10)
    summary = env.joblog.job(job_id).summary
    assert (summary.state, summary.worker) == (JobState.RUNNING, "thief")


def test_sigterm_releases_the_job_and_stops_its_analysis(env: Env, tmp_path: Path) -> None:
    (job_id,) = _queue(env, tmp_path / "a")
    settings = env.settings.with_changes(analyzer="tests.node.sleepy:sleepy", max_job_seconds=300.0)
    process = multiprocessing.get_context("spawn").Process(
        target=worker_main, args=(settings, 0, 0, os.getpid())
    )
    process.start()
    marker = env.settings.work_dir / f"job-{job_id}" / "started"
    try:
        assert wait_for(lambda: marker.exists() and marker.read_text().strip() != "", timeout=60)
        process.terminate()
        process.join(30)
        assert process.exitcode == 0
    finally:
        if process.is_alive():
            process.kill()
    assert wait_for(lambda: _gone(int(marker.read_text())), timeout=10)
    detail = env.joblog.job(job_id)
    assert detail.summary.state is JobState.QUEUED
    assert "SIGTERM" in (detail.events[-1].reason or "")


def test_result_that_cannot_be_sent_back_fails_the_job_with_why(env: Env, tmp_path: Path) -> None:
    (job_id,) = _queue(env, tmp_path / "a")
    worker = _worker(env, "tests.node.sleepy:unpicklable")
    worker.settings = env.settings.with_changes(max_job_seconds=300.0)
    assert worker.run_once() == job_id
    summary = env.joblog.job(job_id).summary
    assert summary.state is JobState.FAILED
    assert "the analysis result cannot be sent back" in (summary.reason or "")
