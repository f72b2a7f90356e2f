"""Several processes (or threads) share one job log: claims and receipts stay consistent."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from multiprocessing.queues import Queue
from typing import Any

from storage.joblog import JobLog
from storage.states import JobState
from tests.storage import procs
from tests.storage.factory import T0, queued_jobs, receipt

WORKERS = 4
JOBS = 40


def test_concurrent_claims_never_give_a_job_to_two_workers(any_db_url: str) -> None:
    url = any_db_url
    with JobLog.open(url) as log:
        ids = queued_jobs(log, JOBS, instances=1)
    results = procs.run_together(procs.claim_all, [(url, f"w{n}") for n in range(WORKERS)])
    everything = [job_id for _, got in results for job_id in got]
    assert Counter(everything).most_common(1)[0][1] == 1, "a job was claimed twice"
    assert sorted(everything) == sorted(ids)
    owner = {job_id: worker for worker, got in results for job_id in got}
    with JobLog.open(url) as log:
        summaries = log.jobs(limit=JOBS)
    assert {s.state for s in summaries} == {JobState.RUNNING}
    assert all(s.worker == owner[s.job_id] and s.attempts == 1 for s in summaries)


def test_concurrent_receipts_of_one_series_make_one_job(any_db_url: str) -> None:
    url = any_db_url
    JobLog.open(url).close()
    per_process = 15
    results = procs.run_together(
        procs.receive_series, [(url, n * per_process, per_process) for n in range(3)]
    )
    assert [new for _, new in results] == [per_process] * 3
    with JobLog.open(url) as log:
        (job,) = log.jobs()
        assert job.instances == 3 * per_process
        assert len(log.job_instances(job.job_id)) == 3 * per_process


def test_concurrent_resend_of_a_finished_series_opens_one_new_job(any_db_url: str) -> None:
    # The series' job ran; three associations send more of it at once: one new job, not three
    # (on PostgreSQL the receipts of one series take turns on the series row).
    url = any_db_url
    with JobLog.open(url) as log:
        (done,) = queued_jobs(log, 1, instances=1)
        assert log.claim("w1", 60.0, T0 + timedelta(hours=1)) is not None
        log.transition(done, JobState.DONE, "analysed", worker="w1")
    per_process = 5
    results = procs.run_together(
        procs.receive_series, [(url, 1 + n * per_process, per_process) for n in range(3)]
    )
    assert [new for _, new in results] == [per_process] * 3
    with JobLog.open(url) as log:
        jobs = log.jobs()
    assert sorted(j.state for j in jobs) == [JobState.DONE, JobState.RECEIVING]


def test_threads_share_one_job_log(any_db_url: str) -> None:
    # The SCP records instances from one thread per association.
    with JobLog.open(any_db_url) as log:

        def receive(series: int) -> list[str]:
            return [log.record_instance(receipt(series, i)).value for i in range(10)]

        with ThreadPoolExecutor(max_workers=6) as pool:
            outcomes = list(pool.map(receive, [0, 1, 2, 0, 1, 2]))
        flat = [o for got in outcomes for o in got]
        assert flat.count("new") == 30 and flat.count("duplicate") == 30
        assert sorted(j.instances for j in log.jobs()) == [10, 10, 10]


def test_job_of_a_killed_worker_is_reclaimed_after_its_lease(any_db_url: str) -> None:
    url = any_db_url
    with JobLog.open(url) as log:
        (job_id,) = queued_jobs(log, 1)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    out: Queue[Any] = ctx.Queue()
    child = ctx.Process(target=procs.claim_and_hang, args=(url, "doomed", start, out))
    child.start()
    try:
        start.wait(timeout=120)
        worker, claimed = out.get(timeout=120)
    finally:
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL
    assert (worker, claimed.job_id) == ("doomed", job_id)
    with JobLog.open(url) as log:
        assert log.claim("w2", 30.0, claimed.lease_until) is None  # lease not yet expired
        again = log.claim("w2", 30.0, claimed.lease_until + timedelta(seconds=1))
        assert again is not None
        assert (again.job_id, again.reclaimed_from, again.attempts) == (job_id, "doomed", 2)
