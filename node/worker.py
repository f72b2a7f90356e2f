"""Workers: separate processes that claim queued jobs with a lease, run the analysis, queue outputs.

A worker claims the oldest QUEUED job (or a RUNNING job whose lease expired: its worker died),
renews the lease from a heartbeat thread, runs the :class:`Analyzer` on the series' spooled files,
records each stage's duration, and queues one delivery per output instance and destination. SIGTERM
stops the worker: a job in analysis is released back to QUEUED (its outputs are deterministic, so
a re-run creates no duplicates), a job past analysis is finished first.

The analysis runs in a child process (:mod:`node.isolation`), so that a job running longer than
``worker.max_job_seconds`` can be stopped: it is FAILED with the limit as its reason and the worker
goes on with the next job. A child that dies without an answer (killed, out of memory) fails the
job with how it died; a lost lease stops the child and leaves the job to its new holder.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, cast

from pydicom import dcmread

from node.isolation import (
    AnalysisAbandonedError,
    AnalysisFailedError,
    AnalysisProcessError,
    AnalysisTimeoutError,
    ChildCall,
    prepare,
    resolve,
    run_in_child,
)
from node.settings import Settings
from node.stopsignal import SignalRelay
from storage.errors import StorageError
from storage.joblog import JobLog
from storage.records import ClaimedJob, DeliveryRequest
from storage.states import JobState

logger = logging.getLogger(__name__)

#: A job claimed more often than this (its workers died or were killed each time) is FAILED.
MAX_JOB_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class AnalysisOutcome:
    """What an analysis produced: DICOM files to deliver, stage timings (s), or why it skipped."""

    outputs: list[Path] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    skipped_reason: str | None = None


class Analyzer(Protocol):
    """The seam between the node and the analysis: series files in, output files out.

    It runs in a child process (:mod:`node.isolation`), so it must be importable by name: a
    module-level function, or a class instantiated without arguments; its result is pickled.
    """

    def __call__(self, paths: Sequence[Path], workdir: Path) -> AnalysisOutcome:
        """Analyse the series in ``paths``; write outputs under ``workdir`` (empty, owned)."""
        ...


def load_analyzer(spec: str) -> Analyzer:
    """The analyzer named ``module:attribute`` (a class is instantiated without arguments)."""
    return cast(Analyzer, resolve(spec))


def analyzer_problem(spec: str) -> str | None:
    """Why the analyzer ``module:attribute`` cannot be loaded, or ``None`` when it can.

    The serving process calls this once before it starts workers, so a wrong setting (or an
    analysis that is not installed) stops ``serve`` with a message instead of a crash loop.
    """
    try:
        target = load_analyzer(spec)
    except (ImportError, AttributeError, TypeError) as exc:
        return f"worker.analyzer = {spec!r} cannot be loaded: {type(exc).__name__}: {exc}"
    if not callable(target):
        return f"worker.analyzer = {spec!r} is not callable"
    return None


class WorkerTerminatedError(Exception):
    """Raised in the worker's main thread by SIGTERM while an analysis runs."""


class _Heartbeat(threading.Thread):
    """Renews the lease every ``heartbeat_seconds``; ``lost`` is set when the lease is gone."""

    def __init__(self, joblog: JobLog, job: ClaimedJob, settings: Settings) -> None:
        super().__init__(name=f"heartbeat-{job.job_id}", daemon=True)
        self.joblog, self.job, self.settings = joblog, job, settings
        self.stopped = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.heartbeat_seconds):
            try:
                now = datetime.now(UTC)
                held = self.joblog.heartbeat(
                    self.job.job_id, self.job.worker, self.settings.lease_seconds, now
                )
            except StorageError:
                logger.exception("job %d: heartbeat failed; trying again", self.job.job_id)
                continue
            if not held:
                logger.warning("job %d: lease lost by %s", self.job.job_id, self.job.worker)
                self.lost.set()
                return


class Worker:
    """Claims and runs jobs one at a time (one per process; run several processes for more)."""

    def __init__(
        self,
        settings: Settings,
        joblog: JobLog,
        analyzer: Analyzer | str,
        worker_id: str,
        verbosity: int | None = None,
    ) -> None:
        self.settings = settings
        self.joblog = joblog
        self.analyzer = analyzer  # a name is imported only by the analysis process
        self.worker_id = worker_id
        self.verbosity = verbosity  # the analysis process logs like this worker
        self.analysing = False  # SIGTERM interrupts only while this is true

    def run_once(self) -> int | None:
        """Claim and run one job; its id, or ``None`` when there was nothing to claim."""
        job = self.joblog.claim(self.worker_id, self.settings.lease_seconds, datetime.now(UTC))
        if job is None:
            return None
        logger.info(
            "job %d series %s: claimed by %s (attempt %d)",
            job.job_id,
            job.series_uid,
            self.worker_id,
            job.attempts,
        )
        heartbeat = _Heartbeat(self.joblog, job, self.settings)
        heartbeat.start()
        try:
            self._run_job(job, heartbeat)
        finally:
            heartbeat.stopped.set()
            heartbeat.join()
        return job.job_id

    def run(self, stop: threading.Event, poll_seconds: float = 1.0) -> None:
        """Run jobs until ``stop`` is set, polling the queue every ``poll_seconds`` when idle."""
        while not stop.is_set():
            try:
                if self.run_once() is None:
                    stop.wait(poll_seconds)
            except WorkerTerminatedError:
                raise
            except Exception:  # e.g. the job log is unreachable: keep the worker, try again
                logger.exception("worker %s: error; trying again", self.worker_id)
                stop.wait(poll_seconds)

    def _run_job(self, job: ClaimedJob, heartbeat: _Heartbeat) -> None:
        if job.attempts > MAX_JOB_ATTEMPTS:
            reason = f"gave up after {job.attempts - 1} attempts that ended without a result"
            self._finish(job, heartbeat, JobState.FAILED, reason)
            return
        workdir = self.settings.work_dir / f"job-{job.job_id}"
        shutil.rmtree(workdir, ignore_errors=True)  # a previous, interrupted attempt
        workdir.mkdir(parents=True)
        call = ChildCall(
            self.analyzer,
            tuple(Path(p) for p in self.joblog.job_instances(job.job_id)),
            workdir,
            self.verbosity,
        )
        started = time.perf_counter()
        try:
            self.analysing = True
            outcome = run_in_child(call, self.settings.max_job_seconds, heartbeat.lost)
        except WorkerTerminatedError:
            self.analysing = False
            self.joblog.release(job.job_id, self.worker_id, "worker stopped (SIGTERM)")
            logger.info("job %d series %s: released on SIGTERM", job.job_id, job.series_uid)
            raise
        except AnalysisAbandonedError:
            logger.warning("job %d: lease lost; analysis stopped", job.job_id)
            return
        except AnalysisProcessError as exc:  # an error, the time limit, a dead child: FAILED
            self.analysing = False
            self._analysis_failed(job, heartbeat, exc, time.perf_counter() - started)
            return
        finally:
            self.analysing = False
        for stage, seconds in outcome.stage_seconds.items():
            self.joblog.record_stage(job.job_id, stage, seconds)
        self.joblog.record_stage(job.job_id, "analysis", time.perf_counter() - started)
        try:
            self._conclude(job, heartbeat, outcome)
        except StorageError:
            raise  # the job log itself is in trouble: the lease runs out, the job is taken again
        except Exception as exc:  # e.g. an output file that is not DICOM
            logger.exception("job %d series %s: outputs unusable", job.job_id, job.series_uid)
            self._finish(job, heartbeat, JobState.FAILED, f"outputs: {type(exc).__name__}: {exc}")

    def _analysis_failed(
        self, job: ClaimedJob, heartbeat: _Heartbeat, exc: AnalysisProcessError, seconds: float
    ) -> None:
        details = exc.details if isinstance(exc, AnalysisFailedError) else ""
        logger.error(
            "job %d series %s: analysis failed after %.1f s: %s\n%s",
            job.job_id,
            job.series_uid,
            seconds,
            exc,
            details,
        )
        self.joblog.record_stage(job.job_id, "analysis", seconds)
        reason = str(exc)
        if isinstance(exc, AnalysisTimeoutError):
            reason += " (worker.max_job_seconds); stopped"
        self._finish(job, heartbeat, JobState.FAILED, reason)

    def _conclude(self, job: ClaimedJob, heartbeat: _Heartbeat, outcome: AnalysisOutcome) -> None:
        if outcome.skipped_reason is not None:
            self._finish(job, heartbeat, JobState.SKIPPED, outcome.skipped_reason)
            return
        destinations = self.settings.routes_for(job.calling_ae)
        if not outcome.outputs or not destinations:
            why = "no outputs" if not outcome.outputs else f"no destination for {job.calling_ae}"
            self._finish(job, heartbeat, JobState.DONE, f"{why}; nothing to deliver")
            return
        uids = [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in outcome.outputs]
        requests = [
            DeliveryRequest(dest.name, uid, str(path))
            for dest in destinations
            for uid, path in zip(uids, outcome.outputs, strict=True)
        ]
        if heartbeat.lost.is_set():
            logger.warning("job %d: lease lost; leaving the job to its new holder", job.job_id)
            return
        self.joblog.add_deliveries(job.job_id, requests)
        self._finish(job, heartbeat, JobState.DELIVERING, None)

    def _finish(
        self, job: ClaimedJob, heartbeat: _Heartbeat, state: JobState, reason: str | None
    ) -> None:
        if heartbeat.lost.is_set():
            logger.warning("job %d: lease lost; not moving it to %s", job.job_id, state)
            return
        self.joblog.transition(job.job_id, state, reason=reason, worker=self.worker_id)
        logger.info(
            "job %d series %s: %s%s",
            job.job_id,
            job.series_uid,
            state,
            f" ({reason})" * bool(reason),
        )


def worker_id(index: int) -> str:
    """``host:pid:index``, unique among the node's workers."""
    return f"{socket.gethostname()}:{os.getpid()}:{index}"


def _watch_parent(parent_pid: int, stop: threading.Event) -> None:
    """Stop the worker (after its current job) when the serving process is gone (killed)."""
    while not stop.wait(1.0):
        if os.getppid() != parent_pid:
            logger.warning("worker %d: parent %d is gone; stopping", os.getpid(), parent_pid)
            stop.set()


def worker_main(settings: Settings, index: int, verbosity: int, parent_pid: int) -> None:
    """Entry point of a worker process (multiprocessing *spawn*): run jobs until SIGTERM/SIGINT,
    or until the process ``parent_pid`` (the serving process) is gone; returns once its fork
    server has exited too.

    The signals are taken before anything else starts (a SIGTERM during start-up stops the
    worker once it is up, through the same ``finally``); they set ``stop`` from a relay thread
    (:mod:`node.stopsignal`), and interrupt a running analysis by raising in the main thread.
    """
    from node.cli import configure_logging

    configure_logging(verbosity)
    stop = threading.Event()
    name = worker_id(index)
    workers: list[Worker] = []  # what the handler looks at (no lock taken there)

    def on_signal(received: signal.Signals) -> None:
        if workers and workers[0].analysing:
            raise WorkerTerminatedError(received.name)

    with SignalRelay(stop, on_signal=on_signal):
        try:
            _run_worker(settings, name, verbosity, parent_pid, stop=stop, workers=workers)
        except WorkerTerminatedError as exc:
            logger.info("worker %s: %s during analysis; job released", name, exc)
        finally:
            stop_fork_server()
            logger.info("worker %s stopped", name)


def _run_worker(
    settings: Settings,
    name: str,
    verbosity: int,
    parent_pid: int,
    *,
    stop: threading.Event,
    workers: list[Worker],
) -> None:
    joblog = JobLog.open(settings.database_url)
    try:
        workers.append(Worker(settings, joblog, settings.analyzer, name, verbosity))
        prepare([settings.analyzer.partition(":")[0]])  # imported once, by the fork server
        threading.Thread(
            target=_watch_parent, args=(parent_pid, stop), name="parent-watch", daemon=True
        ).start()
        logger.info("worker %s started", name)
        workers[0].run(stop, poll_seconds=min(1.0, settings.heartbeat_seconds))
    finally:
        joblog.close()


def stop_fork_server() -> None:
    """Stop this process's fork server (:func:`node.isolation.prepare`) and wait for it.

    It exits by itself when this process is gone, but only after it: ``serve`` joined the worker
    and returned while the server still ran (a process left behind). ``ForkServer._stop`` is
    CPython's own (its tests use it); a server never started is left alone.
    """
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)
    if stop is None:
        logger.warning("cannot stop the fork server: no _stop here")
        return
    stop()
