"""Independent items of work shared between this process and one forked child (two cores).

The child is a *fork* of this process: it sees every array as it is (copy on write), so nothing
is pickled on the way in; only each item's result comes back, pickled through a pipe. Both
processes take the next item from a shared counter, so a slow item does not hold a queue of
others behind it. The function and the data are the same in both processes, so the results
are those of a serial run; an item the child did not return (it raised, or it died) is
computed again here, so an error is raised here exactly as a serial run would raise it.

SciPy's distance transforms and most of the planner's small NumPy steps hold the GIL, so
threads would not share this work out; processes do. While two processes work, BLAS runs one
thread in each: OpenBLAS's own threads would otherwise compete with the other process for the
same two cores (its idle threads spin), which made the planning stage up to 1.7x slower on a
loaded two-core machine. ``SPINENODE_WORKERS=1`` runs everything serially (for comparison, or
where forking is unwelcome).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import TypeVar

from threadpoolctl import threadpool_limits

logger = logging.getLogger(__name__)

T = TypeVar("T")

WORKERS_ENV = "SPINENODE_WORKERS"
MAX_WORKERS = 2  # this process and one child: the target machine has two cores
JOIN_S = 5.0
CHILD_WAIT_MIN_S = 60.0  # after this process's own items: at least this long for the child's


def worker_count() -> int:
    """Processes to use: ``SPINENODE_WORKERS`` when set, else two where two CPUs are ours."""
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env:
        try:
            return max(1, min(MAX_WORKERS, int(env)))
        except ValueError:
            logger.warning("%s=%r is not a number; running serially", WORKERS_ENV, env)
            return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call on this platform
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def _can_fork() -> bool:
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    return not multiprocessing.current_process().daemon  # a daemon may not have children


def fork_map(
    fn: Callable[[int], T],
    n: int,
    workers: int | None = None,
    child_wait_min_s: float = CHILD_WAIT_MIN_S,
) -> list[T]:
    """``[fn(0), ..., fn(n - 1)]``, the items shared with a forked child where two workers are
    allowed (``workers``; default :func:`worker_count`).

    ``fn`` must not depend on state the items change (each process changes only its own copy)
    and its results must pickle. Once this process has no item left, it waits for the child
    twice as long as its own items took, at least ``child_wait_min_s``; a child that has not
    answered by then (hung, e.g. on a lock another thread held at the fork) is killed and its
    items are computed here.
    """
    workers = worker_count() if workers is None else workers
    if workers < 2 or n < 2 or not _can_fork():
        return [fn(i) for i in range(n)]
    with threadpool_limits(limits=1, user_api="blas"):  # set before the fork: the child's too
        return _shared(fn, n, child_wait_min_s)


def _shared(fn: Callable[[int], T], n: int, child_wait_min_s: float) -> list[T]:
    """``fork_map``'s items taken by this process and one forked child."""
    ctx = multiprocessing.get_context("fork")
    counter: Synchronized[int] = ctx.Value("i", 0)
    reader, writer = ctx.Pipe(duplex=False)
    for stream in (sys.stdout, sys.stderr):  # or the child would write their buffers again
        if stream is not None:
            stream.flush()
    child = ctx.Process(
        target=_child, args=(fn, n, counter, reader, writer), name="spinenode-fork-map", daemon=True
    )
    child.start()
    writer.close()
    mine: dict[int, T] = {}
    start = time.monotonic()
    try:
        for i in _take(counter, n):
            mine[i] = fn(i)
        theirs = _receive(reader, max(child_wait_min_s, 2.0 * (time.monotonic() - start)))
    except BaseException:
        child.kill()  # the error ends the map: the child's items are not wanted
        raise
    finally:
        reader.close()
        child.join(JOIN_S)
        if child.is_alive():
            child.kill()
            child.join(JOIN_S)
    out: list[T] = []
    for i in range(n):
        if i in mine:
            out.append(mine[i])
        elif i in theirs:
            out.append(theirs[i])  # type: ignore[arg-type]
        else:
            out.append(fn(i))  # the child failed on it: again here, where an error is raised
    return out


def _take(counter: Synchronized[int], n: int) -> Iterator[int]:
    """The next unclaimed item, until none is left (shared by both processes)."""
    while True:
        with counter.get_lock():
            i = counter.value
            counter.value = i + 1
        if i >= n:
            return
        yield i


def _receive(reader: Connection, wait_s: float) -> dict[int, object]:
    """The child's results (none if it died, sent something unexpected or took over ``wait_s``)."""
    try:
        if not reader.poll(wait_s):
            logger.warning(
                "fork_map: no results from the child in %.0f s; its items run here", wait_s
            )
            return {}
        kind, results = reader.recv()
    except (EOFError, OSError) as exc:
        logger.warning("fork_map: the child gave no results (%s); its items run here", exc)
        return {}
    if kind != "ok":
        logger.warning("fork_map: the child failed; its failed item runs here:\n%s", kind)
    return dict(results)


def _child(
    fn: Callable[[int], object],
    n: int,
    counter: Synchronized[int],
    reader: Connection,
    writer: Connection,
) -> None:
    """The child's side: take items until none is left, send what it computed."""
    reader.close()  # the parent's end: a parent gone makes the send below fail, not block
    results: dict[int, object] = {}
    kind = "ok"
    try:
        for i in _take(counter, n):
            results[i] = fn(i)
    except Exception:  # sent back: the parent computes the item again and raises there
        kind = traceback.format_exc()
    try:
        writer.send((kind, results))
    except Exception as exc:  # the parent is gone, or a result does not pickle: it recomputes
        logger.warning("fork_map child: results not sent (%s)", exc)
    finally:
        writer.close()
