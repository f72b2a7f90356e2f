"""One analysis in a child process that the worker can stop: the job time limit.

An analysis that runs in the worker's own process cannot be stopped from outside short of killing
the worker (Python threads cannot be cancelled, and a NumPy call does not look at signals). So each
job's analysis runs in a child process made by a *forkserver* (``multiprocessing``): the server is
started once per worker process with the analyzer's module imported, and each job is a fork of it,
so a job pays for a fork and a pickled call, not for importing NumPy, SciPy and pydicom again
(``bench/bench_job_overhead.py`` measures both). The server is single-threaded, so forking it is
safe where forking the worker (heartbeat thread, database connections) is not.

The worker waits for the child's answer on a pipe, together with the child's exit, at most the
time limit; it stops waiting (and kills the child) when the limit passes, when its lease is lost,
or when a signal handler raises in its main thread (SIGTERM: the worker releases the job). The
child ignores SIGTERM and SIGINT, so a service manager that signals the whole process group does
not make the analysis look crashed: the worker decides. A child whose worker dies (SIGKILL) exits
by itself: its end of the pipe sees the worker's end close.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Generic, TypeVar, cast

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How often the waiting worker looks at its lease while the child runs.
POLL_S = 0.5
#: How long a killed child may take to be reaped.
REAP_S = 10.0
#: Exit status of a child whose worker went away.
ORPHAN_EXIT = 3


class AnalysisProcessError(Exception):
    """The analysis produced no result; the message is the job's reason."""


class AnalysisFailedError(AnalysisProcessError):
    """The analysis raised; the message is ``Type: message``, ``details`` the child's traceback."""

    def __init__(self, message: str, details: str) -> None:
        super().__init__(message)
        self.details = details


class AnalysisTimeoutError(AnalysisProcessError):
    """The analysis ran longer than the time limit and was stopped."""


class AnalysisCrashedError(AnalysisProcessError):
    """The child process ended without an answer (killed, out of memory, a crash in C code)."""


class AnalysisAbandonedError(AnalysisProcessError):
    """The worker stopped waiting because ``abandon`` was set (its lease was lost)."""


@dataclass(frozen=True, slots=True)
class ChildCall(Generic[T]):
    """What a child runs: ``analyzer(paths, workdir)``; ``verbosity`` configures its logging
    like the worker's (``None``: left as the child finds it).

    ``analyzer`` may be a ``module:attribute`` name (see :func:`resolve`), imported by the child
    only: then the worker process never imports the analysis (about 140 MB less per worker for
    the default one; the fork server has it imported already).
    """

    analyzer: Callable[[Sequence[Path], Path], T] | str
    paths: tuple[Path, ...]
    workdir: Path
    verbosity: int | None = None


def resolve(spec: str) -> Callable[..., object]:
    """The callable named ``module:attribute`` (default attribute ``analyze``; a class is
    instantiated without arguments)."""
    module_name, _, attribute = spec.partition(":")
    target = getattr(importlib.import_module(module_name), attribute or "analyze")
    if isinstance(target, type):
        target = target()
    return cast(Callable[..., object], target)


def _context() -> multiprocessing.context.ForkServerContext:
    return multiprocessing.get_context("forkserver")


def prepare(modules: Sequence[str]) -> None:
    """Start this process's fork server now, with ``modules`` imported in it.

    Called once by a worker process at start-up, so that the first job does not pay for the
    imports; without it the server starts on the first job and each child imports the
    analyzer's module itself (slower per job, same behaviour).
    """
    _context().set_forkserver_preload(["node.isolation", *modules])
    from multiprocessing import forkserver

    forkserver.ensure_running()


def run_in_child(call: ChildCall[T], limit_s: float, abandon: threading.Event) -> T:
    """Run ``call`` in a child process and return its result.

    Raises
    ------
    AnalysisFailedError
        The analyzer raised (its traceback is in ``details``).
    AnalysisTimeoutError
        It ran longer than ``limit_s`` seconds; the child was killed.
    AnalysisAbandonedError
        ``abandon`` was set meanwhile; the child was killed.
    AnalysisCrashedError
        The child died without an answer.
    BaseException
        Whatever a signal handler raises in the caller's thread while it waits (the child is
        killed first).
    """
    receiver, sender = _context().Pipe(duplex=True)
    process = _context().Process(
        target=child_main, args=(sender, call), name="spinenode-analysis", daemon=False
    )
    process.start()
    sender.close()  # only the child holds it now: its death reads as EOF here
    try:
        return cast(T, _await(process, receiver, limit_s, abandon))
    finally:
        receiver.close()  # a child still running sees EOF and exits
        _stop(process)


def _await(
    process: BaseProcess, receiver: Connection, limit_s: float, abandon: threading.Event
) -> object:
    deadline = time.monotonic() + limit_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AnalysisTimeoutError(f"analysis exceeded the time limit of {limit_s:g} s")
        if abandon.is_set():
            raise AnalysisAbandonedError("analysis abandoned: the job's lease was lost")
        ready = wait([receiver, process.sentinel], timeout=min(POLL_S, left))
        if receiver in ready:
            try:
                kind, value, details = receiver.recv()
            except EOFError:
                pass  # the child died before answering
            else:
                if kind == "ok":
                    return value
                raise AnalysisFailedError(str(value), str(details))
        if process.sentinel in ready or not process.is_alive():
            process.join(REAP_S)
            raise AnalysisCrashedError(_death(process.exitcode))


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"the analysis process was killed by {name}{hint} before it gave a result"
    return f"the analysis process exited with status {exitcode} before it gave a result"


def _stop(process: BaseProcess) -> None:
    if process.is_alive():
        process.kill()
    process.join(REAP_S)
    if process.exitcode is None:
        logger.error("analysis process %s did not go away after SIGKILL", process.pid)
        return
    process.close()


def child_main(sender: Connection, call: ChildCall[T]) -> None:
    """The child's entry point: run the call, send ``(kind, value, details)`` back."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)  # the worker decides; see the module docstring
    if call.verbosity is not None:
        from node.cli import configure_logging

        configure_logging(call.verbosity)
    threading.Thread(target=_exit_when_orphaned, args=(sender,), daemon=True).start()
    try:
        analyzer = resolve(call.analyzer) if isinstance(call.analyzer, str) else call.analyzer
        value = analyzer(call.paths, call.workdir)
    except Exception as exc:  # the error is the job's reason; the worker logs the traceback
        sender.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        return
    try:
        sender.send(("ok", value, ""))
    except (pickle.PicklingError, TypeError, AttributeError) as exc:  # cannot cross processes
        reason = f"the analysis result cannot be sent back: {type(exc).__name__}: {exc}"
        sender.send(("error", reason, traceback.format_exc()))


def _exit_when_orphaned(sender: Connection) -> None:
    """Exit the child when the worker's end of the pipe closes (the worker died or gave up)."""
    with contextlib.suppress(OSError):
        sender.poll(None)
    os._exit(ORPHAN_EXIT)
