"""The receipt transaction (what the SCP waits for after the spool write) on SQLite and PostgreSQL.

Run: ``.venv/bin/python bench/bench_receipts.py [--receipts 600] [--repeat 3] [--postgres URL]``

For each backend, ``--repeat`` times: a fresh job log, ``--receipts`` new instances (two series)
recorded through :meth:`storage.joblog.JobLog.record_instance`, then the same instances again
(duplicates, as a re-send); prints the median of each, in ms. SQLite is a file in a temporary
folder. PostgreSQL is ``--postgres`` (a scratch database: its ``public`` schema is dropped!), or
else a throwaway cluster that this script starts with ``scripts/pg_scratch.sh start DIR
--durable`` (fsync on, as a real server; 127.0.0.1 only) and deletes at the end; without
PostgreSQL installed only SQLite is measured. The backends are measured in turns (round robin over
``--repeat``) so that load swings on a shared machine hit both alike.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, text  # noqa: E402

from storage.joblog import JobLog  # noqa: E402
from storage.records import InstanceReceipt  # noqa: E402

T0 = datetime(2026, 1, 5, 8, 0, 0, tzinfo=UTC)
ROOT = "1.2.826.0.1.3680043.10.9"


def _receipt(n: int) -> InstanceReceipt:
    series = f"{ROOT}.{n // 300 + 1}"
    sop = f"{series}.{n % 300 + 1}"
    return InstanceReceipt(
        study_uid=ROOT,
        series_uid=series,
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        modality="CT",
        calling_ae="BENCH",
        peer_host="127.0.0.1",
        path=f"/spool/{ROOT}/{series}/{sop}.dcm",
        sha256=hashlib.sha256(sop.encode()).hexdigest(),
        size=525_000,
        received_at=T0 + timedelta(milliseconds=n),
    )


def _timed(log: JobLog, receipts: list[InstanceReceipt]) -> float:
    """Median ms of one record_instance over ``receipts``."""
    times = []
    for r in receipts:
        start = time.perf_counter()
        log.record_instance(r)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _measure(url: str, count: int, empty: Callable[[], None]) -> tuple[float, float]:
    empty()
    receipts = [_receipt(n) for n in range(count)]
    with JobLog.open(url) as log:
        return _timed(log, receipts), _timed(log, receipts)


def _empty_postgres(url: str) -> Callable[[], None]:
    def empty() -> None:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()

    return empty


def _start_postgres(folder: Path) -> str | None:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "pg_scratch.sh"), "start", str(folder), "--durable"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        print(f"PostgreSQL: not measured ({done.stderr.strip() or 'no server installed'})")
        return None
    return done.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receipts", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", default=None, help="a scratch PostgreSQL database URL")
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average {load}, {os.cpu_count()} CPUs; {args.receipts} receipts per run")
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_db = Path(tmp) / "jobs.db"
        backends: dict[str, tuple[str, Callable[[], None]]] = {
            "sqlite": (f"sqlite:///{sqlite_db}", lambda: sqlite_db.unlink(missing_ok=True)),
        }
        # Its own folder under the system's temporary one (the cluster may run as `postgres`,
        # which cannot enter this process's private temporary folder).
        cluster = Path(tempfile.mkdtemp(prefix="spinenode-pg."))
        pg_url = args.postgres or _start_postgres(cluster)
        if pg_url:
            backends["postgresql"] = (pg_url, _empty_postgres(pg_url))
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in backends}
        try:
            for _ in range(args.repeat):
                for name, (url, empty) in backends.items():
                    results[name].append(_measure(url, args.receipts, empty))
        finally:
            subprocess.run(  # stops the cluster, if one was started, and deletes the folder
                ["bash", str(REPO / "scripts" / "pg_scratch.sh"), "stop", str(cluster)],
                check=False,
            )
    for name, runs in results.items():
        new = ", ".join(f"{n:.3f}" for n, _ in runs)
        dup = ", ".join(f"{d:.3f}" for _, d in runs)
        print(f"{name:10s} new receipt median ms: {new}; duplicate: {dup}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
