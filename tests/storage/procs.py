"""Process entry points for the concurrency tests (module level, so ``spawn`` can import them)."""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections.abc import Callable
from datetime import timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

from storage.joblog import JobLog
from tests.storage.factory import T0, receipt


def claim_all(url: str, worker: str, start: Barrier, out: Queue[Any]) -> None:
    """Claim jobs until none is left; puts (worker, ids this process got) on ``out``."""
    got: list[int] = []
    with JobLog.open(url) as log:
        start.wait()
        while (job := log.claim(worker, 3600.0, T0 + timedelta(hours=1))) is not None:
            got.append(job.job_id)
    out.put((worker, got))


def receive_series(url: str, first: int, count: int, start: Barrier, out: Queue[Any]) -> None:
    """Record instances ``first .. first+count-1`` of series 0, each twice; puts the NEW count."""
    new = 0
    with JobLog.open(url) as log:
        start.wait()
        for index in range(first, first + count):
            new += log.record_instance(receipt(0, index)) == "new"
            log.record_instance(receipt(0, index))  # a re-send: a duplicate
    out.put((first, new))


def open_job_log(url: str, n: int, start: Barrier, out: Queue[Any]) -> None:
    """Open the job log (upgrading it if needed); puts (n, its job ids)."""
    start.wait()
    with JobLog.open(url) as log:
        out.put((n, [job.job_id for job in log.jobs()]))


def run_together(target: Callable[..., None], arg_lists: list[tuple[Any, ...]]) -> list[Any]:
    """Start one spawned process per argument tuple, release them at once, collect results."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(len(arg_lists) + 1)  # everyone opened the job log: go
    out: Queue[Any] = ctx.Queue()
    processes = [ctx.Process(target=target, args=(*args, start, out)) for args in arg_lists]
    for process in processes:
        process.start()
    start.wait(timeout=120)
    results: list[Any] = []
    while len(results) < len(processes):
        try:
            results.append(out.get(timeout=1.0))
        except queue.Empty:
            crashed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            assert not crashed, f"a child process failed with exit code {crashed}"
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    return sorted(results)


def claim_and_hang(url: str, worker: str, start: Barrier, out: Queue[Any]) -> None:
    """Claim one job, report it, then hang until killed (a worker that dies mid-job)."""
    with JobLog.open(url) as log:
        start.wait()
        job = log.claim(worker, 30.0, T0 + timedelta(hours=1))
        out.put((worker, job))
        threading.Event().wait()
