"""Scheduler and workers: selection rules, claims with leases, SIGKILL and SIGTERM mid-job."""

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
from pydicom import dcmread

from node.scheduler import Scheduler, series_facts
from node.settings import Destination, SelectionRules, Settings
from node.worker import Worker, analyzer_problem, load_analyzer, worker_main
from storage.joblog import JobLog
from storage.spool import Spool
from storage.states import JobState
from tests.node.dicomnet import receive, wait_for, write_series

LATER = timedelta(hours=1)


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
        lease_seconds=2.0,
        heartbeat_seconds=0.5,
        analyzer="tests.node.analyzers:mip",
        destinations=(Destination("pacs", "PACS", "127.0.0.1", 11113),),
    )
    joblog = JobLog.open(settings.database_url)
    yield Env(settings, joblog, Spool(settings.spool_dir))
    joblog.close()


def _queued_job(env: Env, tmp_path: Path, **series: object) -> int:
    receive(env.joblog, env.spool, write_series(tmp_path / "in", **series))  # type: ignore[arg-type]
    decided = Scheduler(env.joblog, env.settings).tick(datetime.now(UTC) + LATER)
    assert [state for _, state in decided] == [JobState.QUEUED]
    return decided[0][0]


def test_scheduler_waits_for_the_quiet_period(env: Env, tmp_path: Path) -> None:
    receive(env.joblog, env.spool, write_series(tmp_path / "in", slices=5))
    scheduler = Scheduler(env.joblog, env.settings)
    assert scheduler.tick(datetime.now(UTC)) == []  # still arriving
    assert [s for _, s in scheduler.tick(datetime.now(UTC) + LATER)] == [JobState.QUEUED]


@pytest.mark.parametrize(
    ("series", "reason"),
    [
        ({"slices": 3}, "3 slices; at least 4 needed"),
        ({"slices": 5, "spacing": (3.0, 1.0, 1.0)}, "slice spacing up to 3.00 mm exceeds 2.50"),
    ],
)
def test_selection_rules_skip_with_a_reason(
    env: Env, tmp_path: Path, series: dict[str, object], reason: str
) -> None:
    receive(env.joblog, env.spool, write_series(tmp_path / "in", **series))  # type: ignore[arg-type]
    ((job_id, state),) = Scheduler(env.joblog, env.settings).tick(datetime.now(UTC) + LATER)
    assert state is JobState.SKIPPED
    assert reason in (env.joblog.job(job_id).summary.reason or "")


def test_gap_in_a_series_is_skipped(env: Env, tmp_path: Path) -> None:
    paths = write_series(tmp_path / "in", slices=7)
    receive(env.joblog, env.spool, paths[:3] + paths[4:])  # slice 3 never arrived: a 4 mm gap
    ((job_id, state),) = Scheduler(env.joblog, env.settings).tick(datetime.now(UTC) + LATER)
    assert state is JobState.SKIPPED
    assert "4.00 mm" in (env.joblog.job(job_id).summary.reason or "")


def test_worker_runs_a_job_and_queues_deliveries(env: Env, tmp_path: Path) -> None:
    job_id = _queued_job(env, tmp_path, slices=5)
    worker = Worker(env.settings, env.joblog, load_analyzer(env.settings.analyzer), "w-test")
    assert worker.run_once() == job_id
    assert worker.run_once() is None
    detail = env.joblog.job(job_id)
    assert detail.summary.state is JobState.DELIVERING
    assert {s.stage for s in detail.stages} == {"load", "write", "analysis"}
    (delivery,) = detail.deliveries
    assert delivery.destination == "pacs"
    assert dcmread(delivery.path).SOPInstanceUID == delivery.sop_instance_uid
    states = [e.target for e in detail.events]
    assert states == [JobState.RECEIVING, JobState.QUEUED, JobState.RUNNING, JobState.DELIVERING]


def test_analysis_error_fails_the_job_with_its_message(env: Env, tmp_path: Path) -> None:
    job_id = _queued_job(env, tmp_path, slices=5)
    for path in env.joblog.job_instances(job_id):
        Path(path).write_bytes(b"not DICOM")
    worker = Worker(env.settings, env.joblog, load_analyzer(env.settings.analyzer), "w-test")
    assert worker.run_once() == job_id
    summary = env.joblog.job(job_id).summary
    assert summary.state is JobState.FAILED
    assert "InvalidDicomError" in (summary.reason or "")


def _spawn_worker(settings: Settings) -> multiprocessing.process.BaseProcess:
    process = multiprocessing.get_context("spawn").Process(
        target=worker_main, args=(settings, 0, 0, os.getpid())
    )
    process.start()
    return process


def test_killed_worker_job_is_taken_again_after_the_lease(env: Env, tmp_path: Path) -> None:
    job_id = _queued_job(env, tmp_path, slices=5)
    process = _spawn_worker(env.settings.with_changes(analyzer="tests.node.analyzers:slow"))
    marker = env.settings.work_dir / f"job-{job_id}" / "started"
    try:
        assert wait_for(marker.exists, timeout=60)
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        process.join(10)
    finally:
        if process.is_alive():
            process.kill()
    assert env.joblog.job(job_id).summary.state is JobState.RUNNING
    worker = Worker(env.settings, env.joblog, load_analyzer(env.settings.analyzer), "w-second")
    assert wait_for(lambda: worker.run_once() == job_id, timeout=30, step=0.2)
    detail = env.joblog.job(job_id)
    assert detail.summary.state is JobState.DELIVERING
    assert detail.summary.attempts == 2
    assert any("expired" in (e.reason or "") for e in detail.events)


def test_sigterm_releases_the_running_job(env: Env, tmp_path: Path) -> None:
    job_id = _queued_job(env, tmp_path, slices=5)
    process = _spawn_worker(env.settings.with_changes(analyzer="tests.node.analyzers:slow"))
    marker = env.settings.work_dir / f"job-{job_id}" / "started"
    try:
        assert wait_for(marker.exists, timeout=60)
        process.terminate()
        process.join(30)
        assert process.exitcode == 0
    finally:
        if process.is_alive():
            process.kill()
    detail = env.joblog.job(job_id)
    assert detail.summary.state is JobState.QUEUED
    assert "SIGTERM" in (detail.events[-1].reason or "")


def test_worker_loop_stops_when_asked(env: Env) -> None:
    worker = Worker(env.settings, env.joblog, load_analyzer(env.settings.analyzer), "w-idle")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop, 0.05))
    thread.start()
    stop.set()
    thread.join(10)
    assert not thread.is_alive()


def test_enhanced_ct_frames_count_as_slices(env: Env, tmp_path: Path) -> None:
    paths = write_series(tmp_path / "in", slices=5, enhanced=True)
    facts = series_facts(paths)
    assert (facts.slices, facts.modalities) == (5, ("CT",))
    assert facts.max_gap_mm == pytest.approx(2.0)
    receive(env.joblog, env.spool, paths)
    ((_, state),) = Scheduler(env.joblog, env.settings).tick(datetime.now(UTC) + LATER)
    assert state is JobState.QUEUED


def test_analyzer_setting_is_checked_before_serving() -> None:
    assert analyzer_problem("tests.node.analyzers:mip") is None
    assert "ModuleNotFoundError" in (analyzer_problem("no_such_module:analyze") or "")
    assert "AttributeError" in (analyzer_problem("tests.node.analyzers:nothing") or "")


def test_job_whose_workers_keep_dying_is_failed(env: Env, tmp_path: Path) -> None:
    job_id = _queued_job(env, tmp_path, slices=5)
    start = datetime.now(UTC) - timedelta(hours=3)
    for hour in range(3):  # three workers claimed it and vanished (their leases expired)
        claimed = env.joblog.claim(f"gone-{hour}", 2.0, start + timedelta(hours=hour))
        assert claimed is not None and claimed.job_id == job_id
    worker = Worker(env.settings, env.joblog, load_analyzer(env.settings.analyzer), "w-test")
    assert worker.run_once() == job_id
    summary = env.joblog.job(job_id).summary
    assert summary.state is JobState.FAILED
    assert "gave up after 3 attempts" in (summary.reason or "")


@pytest.mark.realdata
def test_real_tilted_series_with_gaps_is_skipped_with_the_gap(
    env: Env, tmp_path: Path, shared_data: Path
) -> None:
    folder = shared_data / "real-dicom" / "ge-head-gantry-tilt"
    receive(env.joblog, env.spool, sorted(folder.glob("*.dcm")), calling_ae="CT1")
    ((job_id, state),) = Scheduler(env.joblog, env.settings).tick(datetime.now(UTC) + LATER)
    assert state is JobState.SKIPPED
    reason = env.joblog.job(job_id).summary.reason or ""
    assert "slice spacing up to" in reason and "max_slice_spacing_mm" in reason
