"""Per-instance cost of the SCP's durable path, step by step, without the network.

Run: ``.venv/bin/python bench/bench_store_path.py [--instances 100] [--size 512]
[--spool-files 20000] [--threads 4]``

For ``--instances`` synthetic CT slices (``--size`` × ``--size``, Explicit VR LE) it times, per
instance (median and mean, ms), each step the C-STORE handler runs between the last PDU and the
response: reading the UIDs from the data set's bytes (:func:`node.wireparse.read_identity`, what the
SCP does; and, for comparison, decoding it with pydicom as ``event.dataset`` does), the spool file
meta and the content checksum (:mod:`node.spoolfile`), the spool write (temporary file, write,
fdatasync, rename, folder fsync, each step apart; and a folder fsync on its own, with nothing
renamed into the folder since the last one), and the receipt transaction, committed as the
SCP does (``synchronous = NORMAL``, :data:`storage.database.DEFERRED_DURABILITY`) and, for
comparison, with ``synchronous = FULL``. The spool and the job log are in a temporary folder
on the same file system as ``--tmp`` (default: the system's temporary folder).

Then ``--threads`` writers at once into one series folder (as concurrent associations write):
files per second and the write's steps (each writer fsyncs the folder itself; the kernel may let
concurrent fsyncs share a journal commit).

Then the same with pooled spool files (:mod:`storage.spool_pool`, what the SCP does when
``scp.pool_files`` > 0): how long making the pool took (wall and this process's CPU per file: the
filler's cost, paid while the node is idle), then one writer and ``--threads`` writers at once
filling pooled files (write, fdatasync, rename; no folder fsync).

Then the start-up reconciliation's scan (:func:`storage.reconcile.unrecorded_files`) over a spool of
``--spool-files`` small files, every one recorded in the job log: the time it adds to every start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_ingest import make_series  # noqa: E402
from pynetdicom.dsutils import decode  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from node.spoolfile import (  # noqa: E402
    Provenance,
    content_sha256,
    encode_file_meta,
    padding_trailer,
)
from node.wireparse import read_identity  # noqa: E402
from storage import receipts  # noqa: E402
from storage.database import create_database_engine  # noqa: E402
from storage.joblog import JobLog  # noqa: E402
from storage.reconcile import unrecorded_files  # noqa: E402
from storage.records import InstanceReceipt  # noqa: E402
from storage.spool import Spool, WriteTimes  # noqa: E402

SYNTAX = "1.2.840.10008.1.2.1"
#: The seconds of each step (not the ``pooled`` flag, not ``file_bytes``).
TIME_FIELDS = [name for name in WriteTimes.__slots__ if name.endswith("_s")]


def data_sets(folder: Path, count: int, size: int) -> list[bytes]:
    """The encoded data sets (what arrives in the C-STORE's Data Set) of ``count`` slices."""
    out = []
    for path in make_series(folder, count, size):
        raw = path.read_bytes()
        out.append(raw[144 + int.from_bytes(raw[140:144], "little") :])
    return out


def timed(step: Callable[[int], object], count: int) -> list[float]:
    times = []
    for index in range(count):
        started = time.perf_counter()
        step(index)
        times.append((time.perf_counter() - started) * 1000.0)
    return times


def report(name: str, times: list[float]) -> float:
    median, mean = statistics.median(times), statistics.fmean(times)
    print(f"  {name:<44} median {median:6.3f} ms  mean {mean:6.3f} ms")
    return median


def _receipt(spool: Spool, ds: dict[str, str], data: bytes, digest: str) -> InstanceReceipt:
    return InstanceReceipt(
        study_uid=ds["StudyInstanceUID"],
        series_uid=ds["SeriesInstanceUID"],
        sop_instance_uid=ds["SOPInstanceUID"],
        sop_class_uid=ds["SOPClassUID"],
        modality=ds["Modality"],
        calling_ae="BENCH",
        peer_host="127.0.0.1",
        path=str(spool.instance_path(ds["StudyInstanceUID"], ds["SeriesInstanceUID"],
                                     ds["SOPInstanceUID"])),
        sha256=digest,
        size=len(data),
        received_at=datetime.now(UTC),
    )  # fmt: skip


def run(work: Path, streams: list[bytes]) -> None:
    n = len(streams)
    keys = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality")
    idents: list[dict[str, str]] = []
    files: list[bytes] = []
    digests: list[str] = []
    provenance = Provenance("BENCH", "SPINENODE", "127.0.0.1")

    def identify(i: int) -> None:
        ident = read_identity(streams[i], False)
        values = (ident.study_uid, ident.series_uid, ident.sop_instance_uid)
        idents.append(dict(zip(keys, (*values, ident.sop_class_uid, ident.modality), strict=True)))

    def decode_with_pydicom(i: int) -> None:
        ds = decode(BytesIO(streams[i]), False, True, False)
        {k: str(ds.get(k, "")) for k in keys}

    def meta_and_checksum(i: int) -> None:
        ident = idents[i]
        meta = encode_file_meta(ident["SOPClassUID"], ident["SOPInstanceUID"], SYNTAX, provenance)
        files.append(meta + streams[i])
        digests.append(content_sha256(SYNTAX, streams[i]))

    spool = Spool(work / "spool")
    receipts_of: list[InstanceReceipt] = []

    steps: list[WriteTimes] = []

    def write(i: int) -> None:
        steps.append(spool.write_atomic(Path(receipts_of[i].path), files[i]))

    def dir_fsync(i: int) -> None:
        fd = os.open(Path(receipts_of[i].path).parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def report_steps() -> None:
        for field in TIME_FIELDS:
            report(f"  of which {field.removesuffix('_s').replace('_', ' ')}",
                   [1000 * getattr(t, field) for t in steps])  # fmt: skip

    print(f"per instance, {n} instances of {len(streams[0]) / 1e6:.2f} MB:")
    total = report("read the UIDs from the bytes (node.wireparse)", timed(identify, n))
    report("  (decode the data set with pydicom: before)", timed(decode_with_pydicom, n))
    total += report("file meta + sha256 (node.spoolfile)", timed(meta_and_checksum, n))
    receipts_of.extend(_receipt(spool, idents[i], files[i], digests[i]) for i in range(n))
    total += report("spool write: tmp, write, fdatasync, rename, dir fsync", timed(write, n))
    report_steps()
    report("  a folder fsync alone, nothing renamed since", timed(dir_fsync, n))
    joblog = JobLog.open(f"sqlite:///{work / 'normal.db'}")
    total += report("receipt transaction, synchronous NORMAL (used)", timed(
        lambda i: joblog.record_instance(receipts_of[i]), n))  # fmt: skip
    joblog.close()
    full = create_database_engine(f"sqlite:///{work / 'full.db'}")

    def record_full(i: int) -> None:
        with Session(full) as session, session.begin():
            # the receipt's statements, in a transaction without the deferred-durability option
            receipts._record(session.connection(), receipts_of[i])

    report("receipt transaction, synchronous FULL (before)", timed(record_full, n))
    full.dispose()
    print(f"  {'sum of the steps used':<44} median {total:6.3f} ms")


def filesystem(path: Path) -> str:
    """The type and device of the file system holding ``path`` (Linux /proc/mounts)."""
    best = ("", "?", "?")
    for line in Path("/proc/mounts").read_text().splitlines():
        device, mount, kind = line.split()[:3]
        if path.is_relative_to(mount) and len(mount) > len(best[0]):
            best = (mount, kind, device)
    return f"{best[1]} on {best[2]} (mounted at {best[0]})"


def concurrent_writes(work: Path, streams: list[bytes], threads: int) -> None:
    """``threads`` writers at once into one series folder, as concurrent associations write:
    files per second and the write's steps."""
    spool = Spool(work / "concurrent")
    steps: list[WriteTimes] = []
    study, series = "1.2.826.0.1.3680043.8.498.88", "1.2.826.0.1.3680043.8.498.88.1"

    def writer(first: int) -> None:
        for index in range(first, len(streams), threads):
            path = spool.instance_path(study, series, f"{series}.{index + 1}")
            steps.append(spool.write_atomic(path, streams[index]))

    started = time.perf_counter()
    pool = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    seconds = time.perf_counter() - started
    print(f"{threads} writers at once, {len(streams)} files: {len(streams) / seconds:.0f} files/s")
    for field in TIME_FIELDS:
        report(f"  {field.removesuffix('_s').replace('_', ' ')}",
               [1000 * getattr(t, field) for t in steps])  # fmt: skip
    spool.close()


def pooled_writes(work: Path, streams: list[bytes], threads: int) -> None:
    """Make a pool of ``len(streams)`` files, then fill them: one writer, then ``threads``."""
    spool = Spool(work / "pooled")
    n = len(streams)
    study, series = "1.2.826.0.1.3680043.8.498.89", "1.2.826.0.1.3680043.8.498.89.1"
    provenance = Provenance("BENCH", "SPINENODE", "127.0.0.1")
    trailer = padding_trailer(SYNTAX)

    def fill() -> None:
        cpu, started = time.process_time(), time.perf_counter()
        spool.start_pool(n, eager=True)
        while spool.pool_free() < n:
            time.sleep(0.005)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(f"pool of {n} files made in {wall:.2f} s: {1000 * wall / n:.2f} ms wall and"
              f" {1000 * cpu / n:.2f} ms CPU (this process) per file")  # fmt: skip

    def writer(first: int, step: int, pass_: int, steps: list[WriteTimes]) -> None:
        for index in range(first, n, step):
            sop = f"{series}.{pass_}.{index + 1}"
            meta = encode_file_meta(
                "1.2.840.10008.5.1.4.1.1.2", sop, SYNTAX, provenance,
                (len(streams[index]), content_sha256(SYNTAX, streams[index])),
            )  # fmt: skip
            path = spool.instance_path(study, series, sop)
            steps.append(spool.write_atomic(path, (meta, streams[index]), trailer))

    for pass_, count in ((1, 1), (2, threads)):
        fill()
        steps: list[WriteTimes] = []
        started = time.perf_counter()
        pool = [
            threading.Thread(target=writer, args=(i, count, pass_, steps)) for i in range(count)
        ]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        seconds = time.perf_counter() - started
        pooled = sum(t.pooled for t in steps)
        print(f"{count} writer(s) filling pooled files, {n} files ({pooled} pooled):"
              f" {n / seconds:.0f} files/s")  # fmt: skip
        for field in ("write_s", "datasync_s", "rename_s"):
            report(f"  {field.removesuffix('_s')}", [1000 * getattr(t, field) for t in steps])
        time.sleep(0.6)  # the filler waits for a quiet moment
    spool.close()


def startup_scan(work: Path, count: int) -> None:
    """Seconds :func:`unrecorded_files` takes over ``count`` recorded spool files."""
    spool = Spool(work / "scan-spool")
    study = "1.2.826.0.1.3680043.8.498.77"
    joblog = JobLog.open(f"sqlite:///{work / 'scan.db'}")
    for index in range(count):
        series = f"{study}.{index // 300 + 1}"
        sop = f"{series}.{index % 300 + 1}"
        path = spool.instance_path(study, series, sop)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")  # no fsync: only the names matter here
        digest = content_sha256(SYNTAX, b"x")
        joblog.record_instance(
            InstanceReceipt(study, series, sop, "1.2.840.10008.5.1.4.1.1.2", "CT", "BENCH",
                            "127.0.0.1", str(path), digest, 1, datetime.now(UTC))
        )  # fmt: skip
    started = time.perf_counter()
    missing = unrecorded_files(joblog, spool)
    seconds = time.perf_counter() - started
    joblog.close()
    print(
        f"start-up scan of {count} recorded spool files: {seconds:.2f} s ({len(missing)} missing)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--spool-files", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=4, help="concurrent writers (1: none)")
    args = parser.parse_args()
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=args.tmp) as tmp:
        work = Path(tmp)
        print(f"spool file system: {filesystem(work)}")
        streams = data_sets(work / "series", args.instances, args.size)
        run(work, streams)
        if args.threads > 1:
            concurrent_writes(work, streams, args.threads)
        pooled_writes(work, streams, args.threads)
        if args.spool_files:
            startup_scan(work, args.spool_files)
    print("load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
