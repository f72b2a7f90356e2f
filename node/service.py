"""``spinenode serve``: the SCP, the scheduler and the outbox in one process, N worker processes.

The SCP listens in this process and hands each connection to one of ``scp.processes`` receiving
processes (:mod:`node.receivers`; with 0 it answers associations on threads of this process); the
scheduler, the outbox sender and the
retention sweep (:mod:`node.retention`) each run on a thread; workers are separate processes
(multiprocessing *spawn*, so they share nothing but the job log and the spool; each runs its
analyses in child processes, :mod:`node.isolation`). A worker that dies is started again; its job
is taken again after the lease expires. SIGTERM/SIGINT stop everything cleanly: the SCP stops
accepting, the threads finish their current pass, workers release or finish their job (see
:mod:`node.worker`), and ``serve`` returns only once every process it started has exited (each
worker waits for its fork server; the resource tracker that *spawn* starts is stopped last). The
signal handlers set nothing themselves (:mod:`node.stopsignal`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Protocol

from node.receivers import ReceiverPool, restart_backoff
from node.retention import Retention
from node.scheduler import Scheduler
from node.scp import StorageSCP
from node.scu import Outbox
from node.settings import Settings
from node.stopsignal import SignalRelay
from node.worker import worker_main
from storage.joblog import JobLog

logger = logging.getLogger(__name__)

#: How long a stopping worker may take to release or finish its job before it is killed.
WORKER_STOP_GRACE_S = 30.0
#: How long ``serve`` waits for the resource tracker to exit once its other processes are gone.
TRACKER_STOP_S = 15.0


class Listener(Protocol):
    """The SCP as ``serve`` runs it: in this process, or in receiving processes."""

    @property
    def port(self) -> int: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Service:
    """Everything ``spinenode serve`` runs: :meth:`start`, :meth:`supervise`, :meth:`stop`."""

    def __init__(self, settings: Settings, verbosity: int = 0) -> None:
        self.settings = settings
        self.verbosity = verbosity
        self.stopping = threading.Event()
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[BaseProcess | None] = [None] * settings.worker_count
        self._started_at = [0.0] * settings.worker_count
        self._quick_exits = [0] * settings.worker_count
        self._threads: list[threading.Thread] = []
        self.joblog: JobLog | None = None
        self.scp: Listener | None = None

    def start(self) -> None:
        """Open the job log, listen, start the threads and the worker processes."""
        for folder in (self.settings.data_dir, self.settings.spool_dir, self.settings.work_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.joblog = JobLog.open(self.settings.database_url)
        for index in range(self.settings.worker_count):
            self._start_worker(index)
        scheduler = Scheduler(self.joblog, self.settings)
        outbox = Outbox(self.joblog, self.settings)
        for name, loop in (("scheduler", scheduler.run), ("outbox", outbox.run)):
            self._start_thread(name, loop)
        if self.settings.scp_processes:
            self.scp = ReceiverPool(self.settings, self.joblog, self.verbosity)
        else:
            self.scp = StorageSCP(self.settings, self.joblog)
        self.scp.start()
        # After the SCP's start-up (spool reconciliation), never concurrently with it.
        self._start_thread("retention", Retention(self.joblog, self.settings).run)

    @property
    def port(self) -> int:
        """The port the SCP listens on once started (``port`` 0: the one the system chose)."""
        return 0 if self.scp is None else self.scp.port

    def _start_thread(self, name: str, loop: Callable[[threading.Event], None]) -> None:
        thread = threading.Thread(target=loop, args=(self.stopping,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_worker(self, index: int) -> None:
        process = self._context.Process(
            target=worker_main,
            args=(self.settings, index, self.verbosity, os.getpid()),
            name=f"spinenode-worker-{index}",
        )
        process.start()
        self._workers[index] = process
        self._started_at[index] = time.monotonic()
        logger.info("worker %d started (pid %s)", index, process.pid)

    def supervise(self, poll_seconds: float = 1.0) -> None:
        """Restart workers that died, until :attr:`stopping` is set.

        A worker that keeps dying right after its start is restarted with a growing delay
        (up to a minute) so that a broken installation does not spin.
        """
        while not self.stopping.wait(poll_seconds):
            for index, process in enumerate(self._workers):
                if process is None or process.is_alive():
                    continue
                lived = time.monotonic() - self._started_at[index]
                self._quick_exits[index], delay = restart_backoff(self._quick_exits[index], lived)
                logger.error(
                    "worker %d (pid %s) exited with %s after %.0f s; starting it again in %.0f s",
                    index,
                    process.pid,
                    process.exitcode,
                    lived,
                    delay,
                )
                process.close()
                self._workers[index] = None
                if self.stopping.wait(delay):
                    return
                self._start_worker(index)

    def stop(self) -> None:
        """Stop accepting, stop the threads, stop the workers, close the job log."""
        self.stopping.set()
        if self.scp is not None:
            self.scp.stop()
        for process in self._workers:
            if process is not None and process.is_alive():
                process.terminate()  # SIGTERM: release or finish the running job
        for process in self._workers:
            if process is None:
                continue
            process.join(WORKER_STOP_GRACE_S)
            if process.is_alive():
                logger.error("worker pid %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join()
        for thread in self._threads:
            thread.join()
        if self.joblog is not None:
            self.joblog.close()
        logger.info("spinenode stopped")


def serve(settings: Settings, verbosity: int = 0) -> int:
    """Run the node until SIGTERM or SIGINT; returns the exit status once every process it
    started has exited.

    The signals set :attr:`Service.stopping` through a :class:`SignalRelay` (never from the
    handler itself: see :mod:`node.stopsignal`).
    """
    service = Service(settings, verbosity)
    try:
        with SignalRelay(service.stopping):
            try:
                service.start()
                logger.info(
                    "spinenode %s serving on %s:%d with %d worker(s); data in %s",
                    settings.ae_title,
                    settings.bind_address,
                    service.port,
                    settings.worker_count,
                    settings.data_dir,
                )
                service.supervise()
            finally:
                service.stop()
    finally:
        stop_resource_tracker()  # also when start-up failed (the port taken, say)
    return 0


def stop_resource_tracker(timeout_s: float = TRACKER_STOP_S) -> None:
    """Stop this process's ``multiprocessing`` resource tracker and wait for it to exit (at most
    ``timeout_s``).

    *spawn* starts the tracker as a child of the serving process on the first child it starts,
    and every process started from here holds its pipe: it exits by itself only once all of them
    and this process are gone, so ``serve`` used to return while it still ran (a process left
    behind, for a service manager or a test looking right after the exit). Called once the
    workers and receivers have been joined (the workers wait for their fork servers), so it
    exits at once. ``ResourceTracker._stop`` is CPython's own (its tests use it); without it, or
    when the tracker does not exit in time (a process of ours still holds its pipe), this logs
    and returns.
    """
    from multiprocessing import resource_tracker

    stop = getattr(resource_tracker._resource_tracker, "_stop", None)
    if stop is None:
        logger.warning("cannot stop the multiprocessing resource tracker: no _stop here")
        return
    thread = threading.Thread(target=stop, name="resource-tracker-stop", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        logger.error("the multiprocessing resource tracker did not exit in %.0f s", timeout_s)
