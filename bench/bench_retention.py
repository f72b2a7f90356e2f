"""How long a retention pass takes on a job log of realistic size (issue 7, retention).

Builds a job log with ``--series`` finished series of ``--instances`` received instances each
(small files in a real spool, recorded through the job log's receipt path, jobs moved to DONE with
their work folders), plus as many still queued series, then times :meth:`Retention.preview` (what
``spinenode status`` runs) and one :meth:`Retention.sweep` that purges the finished half.

Run: ``.venv/bin/python bench/bench_retention.py [--series 40] [--instances 300]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from node.retention import Retention  # noqa: E402
from node.settings import Settings  # noqa: E402
from storage.joblog import JobLog  # noqa: E402
from storage.records import InstanceReceipt  # noqa: E402
from storage.spool import Spool  # noqa: E402
from storage.states import JobState  # noqa: E402

STUDY = "1.2.826.0.1.3680043.8.498.5"
CT = "1.2.840.10008.5.1.4.1.1.2"


def populate(settings: Settings, joblog: JobLog, series: int, instances: int) -> None:
    spool = Spool(settings.spool_dir)
    now = datetime.now(UTC)
    for s in range(2 * series):
        series_uid = f"{STUDY}.{s + 1}"
        for i in range(instances):
            sop = f"{series_uid}.{i + 1}"
            data = f"instance {sop}".encode().ljust(2048, b".")
            path = spool.instance_path(STUDY, series_uid, sop)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)  # no fsync: this builds a fixture, it is not the SCP
            sha = hashlib.sha256(data).hexdigest()
            receipt = InstanceReceipt(
                STUDY, series_uid, sop, CT, "CT", "PACS", "::1", str(path), sha, len(data), now
            )
            joblog.record_instance(receipt)
    for job in joblog.jobs(limit=10 * series):
        joblog.transition(job.job_id, JobState.QUEUED)
    for _ in range(series):  # the first half runs and ends
        claimed = joblog.claim("bench", 60.0, now)
        assert claimed is not None
        folder = settings.work_dir / f"job-{claimed.job_id}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text("{}")
        joblog.transition(claimed.job_id, JobState.DONE, worker="bench")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--series", type=int, default=40, help="finished series (and as many queued)"
    )
    parser.add_argument("--instances", type=int, default=300, help="instances per series")
    args = parser.parse_args()
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "var")
        with JobLog.open(settings.database_url) as joblog:
            start = time.perf_counter()
            populate(settings, joblog, args.series, args.instances)
            total = 2 * args.series * args.instances
            print(f"job log with {2 * args.series} series, {total} instances: built in "
                  f"{time.perf_counter() - start:.1f} s")  # fmt: skip
            retention = Retention(joblog, settings)
            later = datetime.now(UTC) + timedelta(days=31)
            start = time.perf_counter()
            preview = retention.preview(later)
            print(f"preview (spinenode status): {(time.perf_counter() - start) * 1000:.0f} ms; "
                  f"would free {preview.instances} instances, "
                  f"{preview.work_folders} work folders")  # fmt: skip
            start = time.perf_counter()
            report = retention.sweep(later)
            seconds = time.perf_counter() - start
            print(f"sweep: {seconds:.2f} s for {report.series} series, {report.instances} "
                  f"instances, {report.work_folders} work folders "
                  f"({seconds / max(report.instances, 1) * 1e3:.3f} ms per instance)")  # fmt: skip
            start = time.perf_counter()
            retention.sweep(later)
            print(
                f"sweep with nothing left to delete: {(time.perf_counter() - start) * 1000:.0f} ms"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
