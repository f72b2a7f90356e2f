"""What running each job's analysis in its own process costs the worker (issue 7, time limit).

The worker runs every analysis in a child forked from a per-worker fork server that has the
analyzer's module imported (:mod:`node.isolation`), so that a job over ``worker.max_job_seconds``
can be stopped. This prints, in one run:

- the one-off cost of starting that fork server with ``node.default_analyzer`` imported;
- the per-job cost of a no-op analysis in the worker's own process (the old way) and in a child
  (the new way), and the difference: the overhead every job pays;
- the per-job cost a fresh *spawned* process would pay instead (interpreter start plus importing
  NumPy, SciPy, pydicom, highdicom and the pipeline): what the fork server saves;
- a small real analysis (``tests.node.analyzers:mip`` on a 40 x 128 x 128 series) in process and
  in a child, with the ratio;
- the resident memory of an idle worker process (default analyzer) and of its fork server, and
  of a process that imports the default analysis itself (what a worker was before).

Run: ``.venv/bin/python bench/bench_job_overhead.py [--jobs 30]``.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from node.isolation import ChildCall, child_main, prepare, run_in_child  # noqa: E402
from node.worker import AnalysisOutcome  # noqa: E402
from tests.node import analyzers  # noqa: E402
from tests.node.dicomnet import write_series  # noqa: E402

Analyzer = Callable[[Sequence[Path], Path], AnalysisOutcome]
NEVER = threading.Event()


def timed(runs: int, once: Callable[[], object]) -> list[float]:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        once()
        seconds.append(time.perf_counter() - start)
    return seconds


def in_child(analyzer: Analyzer, paths: Sequence[Path], workdir: Path) -> AnalysisOutcome:
    return run_in_child(ChildCall(analyzer, tuple(paths), workdir), 600.0, NEVER)


def spawned(analyzer: Analyzer, paths: Sequence[Path], workdir: Path) -> None:
    """One job in a freshly spawned interpreter (what a child per job costs without the server)."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe()
    process = context.Process(target=child_main, args=(sender, ChildCall(analyzer, (), workdir)))
    process.start()
    sender.close()
    kind, _, details = receiver.recv()
    assert kind == "ok", details
    process.join()


def report(name: str, seconds: list[float]) -> float:
    mean = statistics.fmean(seconds)
    spread = statistics.stdev(seconds) if len(seconds) > 1 else 0.0
    print(f"  {name:<44} {mean * 1000:9.2f} ms  (sd {spread * 1000:.2f}, n={len(seconds)})")
    return mean


def resident_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return -1


def worker_memory(settle_s: float) -> None:
    """An idle worker process with the default analyzer: its memory and its fork server's."""
    from node.settings import Settings
    from node.worker import worker_main

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "var")
        settings.data_dir.mkdir()
        context = multiprocessing.get_context("spawn")
        worker = context.Process(target=worker_main, args=(settings, 0, 0, os.getpid()))
        worker.start()
        assert worker.pid is not None
        time.sleep(settle_s)  # the fork server imports in the background
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        servers = ", ".join(f"{resident_mb(int(c))} MB" for c in children) or "none"
        print(f"  worker process: {resident_mb(worker.pid)} MB; its fork server: {servers}")
        worker.terminate()
        worker.join()
        receiver, sender = context.Pipe()
        importer = context.Process(target=_import_default_analysis, args=(sender,))
        importer.start()
        print(f"  a process that imports node.default_analyzer itself: {receiver.recv()} MB")
        importer.join()


def _import_default_analysis(sender: Connection) -> None:
    importlib.import_module("node.default_analyzer")
    sender.send(resident_mb(os.getpid()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=30, help="jobs per measurement (default 30)")
    parser.add_argument("--spawned", type=int, default=3, help="spawned-process jobs (default 3)")
    parser.add_argument(
        "--settle", type=float, default=12.0, help="seconds before measuring memory"
    )
    args = parser.parse_args()
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = write_series(work / "series", slices=40, size=128)
        noop, mip = analyzers.noop, analyzers.mip
        start = time.perf_counter()
        prepare(["node.default_analyzer", "tests.node.analyzers"])
        in_child(noop, paths, work)  # waits for the server's imports
        started = time.perf_counter() - start
        print(f"fork server start, node.default_analyzer imported: {started * 1000:.0f} ms")
        print("  (once per worker process, in the background of its start-up)")
        print("per job, no-op analysis:")
        base = report("in the worker's process", timed(args.jobs, lambda: noop(paths, work)))
        child = report(
            "in a child of the fork server",
            timed(args.jobs, lambda: in_child(noop, paths, work)),
        )
        fresh = report(
            "in a freshly spawned process (imports)",
            timed(args.spawned, lambda: spawned(analyzers.imports_then_noop, paths, work)),
        )
        print(f"  overhead per job: {(child - base) * 1000:.1f} ms with the fork server,")
        print(f"  {(fresh - base) * 1000:.0f} ms with a spawned process ({fresh / child:.0f}x)")
        print("per job, mip on a 40 x 128 x 128 series (first run of each not counted):")
        runs = max(args.jobs // 3, 2)
        own = report("in the worker's process", timed(runs, lambda: mip(paths, work))[1:])
        kid = report(
            "in a child of the fork server",
            timed(runs, lambda: in_child(mip, paths, work))[1:],
        )
        print(f"  child - in-process: {(kid - own) * 1000:.0f} ms; child / in-process: "
              f"{kid / own:.2f}x")  # fmt: skip
    print(f"resident memory, {args.settle:g} s after a worker's start:")
    worker_memory(args.settle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
