"""Ingest rate of the node's SCP vs Orthanc and DCMTK storescp, and end-to-end latency.

Run: ``.venv/bin/python bench/bench_ingest.py [--slices 300] [--size 512] [--repeat 2]
[--associations 1 4] [--scp-processes N] [--pool-files N] [--quiet 2] [--skip-e2e]``

1. Writes one synthetic CT series (``--slices`` × ``--size`` × ``--size``, Explicit VR LE) to tmp.
2. Sends it with DCMTK ``storescu`` (a C++ sender, so the sender is not the bottleneck) to each
   receiver on 127.0.0.1, all with ``TCP_NODELAY=1``: ``spinenode serve`` (spool with fsync +
   job log row per instance), Orthanc (its own storage and index), ``storescp`` (writes files, no
   fsync). Prints images/s per receiver (best of ``--repeat`` runs, taken in turns with the other
   receivers), the receiver's CPU time per image in that run (every process of it: the node's
   serving process, its receiving processes and its worker), how many processes that was, and the
   ratios node/peer, for one association and for several at once (the series shared out among
   them), with the load average (the machine may be shared), and how long the node's receipt
   transactions took in that run (from its receivers' logs; with several associations they
   include waiting for the job log's write lock), with the wall time of each step of its C-STORE
   handler per instance (mean/max ms: ``between`` its answer and the next request's handler call,
   the UIDs and checksum, the instance lock, the spool write's steps, the receipt).
3. When the default analyzer loads, a lumbar phantom of the same size (1.0 × 0.8 × 0.8 mm) goes
   Orthanc → node → Orthanc; prints the time from the last C-STORE received by the node to the
   job being DONE (every result acknowledged by Orthanc), by phase and by analysis stage.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from dicom_io.ct_writer import CTSeriesSpec, write_ct_series  # noqa: E402
from node.settings import Settings  # noqa: E402
from node.worker import analyzer_problem  # noqa: E402
from storage.joblog import JobLog  # noqa: E402
from storage.records import JobDetail  # noqa: E402
from storage.states import JobState  # noqa: E402
from tests.node.orthanc import Orthanc, orthanc_available  # noqa: E402

DEFAULT_ANALYZER = Settings().analyzer
ENV = {**os.environ, "TCP_NODELAY": "1"}
for _name in [k for k in ENV if k.startswith("SPINENODE_") and k != "SPINENODE_DATA"]:
    del ENV[_name]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(
    port: int, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the receiver exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def make_series(
    folder: Path, slices: int, size: int, uid: str = "1.2.826.0.1.3680043.8.498.9090"
) -> list[Path]:
    rng = np.random.default_rng(0)
    hu = rng.normal(0, 30, size=(slices, size, size)).astype(np.float32) - 200
    hu[:, size // 3 : size // 2, size // 3 : 2 * size // 3] = 700
    affine = np.eye(4)
    affine[:3, 0] = (0, 0, 1.0)
    affine[:3, 1] = (0, 0.7, 0)
    affine[:3, 2] = (0.7, 0, 0)
    spec = CTSeriesSpec(
        "Bench^Ingest", "BENCH1", "19700101", "O", uid + ".1", uid + ".2", uid + ".3",
        "20260101", "120000", "B1", "1", 1, "bench", "LSPINE",
    )  # fmt: skip
    return write_ct_series(hu, affine, folder, spec)


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant of it (Linux /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    tree, todo = [pid], list(parents.get(pid, []))
    while todo:
        tree.append(todo.pop())
        todo.extend(parents.get(tree[-1], []))
    return tree


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU time each process has used so far (Linux /proc; gone ones left out)."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


#: Processes of the last receiver measured (the receiver's process and its descendants).
LAST_PROCESSES = [0]


def timed_storescu(port: int, called: str, folders: list[Path], pid: int) -> tuple[float, float]:
    """(seconds, CPU seconds of the receiver and all its child processes) to send ``folders``
    with :func:`storescu`."""
    pids = process_tree(pid)
    before = cpu_seconds(pids)
    seconds = storescu(port, called, folders)
    after = cpu_seconds(pids)
    LAST_PROCESSES[0] = len(pids)
    return seconds, sum(after[p] - before[p] for p in after if p in before)


def storescu(port: int, called: str, folders: list[Path]) -> float:
    """Seconds to send every file in ``folders``: one ``storescu`` (one association) per folder,
    all at once."""
    started = time.perf_counter()
    senders = [
        subprocess.Popen(
            ["storescu", "-aet", "BENCH", "-aec", called, "+sd", "127.0.0.1", str(port), str(f)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for f in folders
    ]
    for sender in senders:
        _, err = sender.communicate()
        if sender.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode(errors='replace')[-500:]}")
    return time.perf_counter() - started


def split(files: list[Path], parts: int, work: Path) -> list[Path]:
    """``parts`` folders of hard links sharing out ``files`` (one folder: the series folder)."""
    if parts == 1:
        return [files[0].parent]
    folders = [work / f"part{parts}-{i}" for i in range(parts)]
    for i, path in enumerate(files):
        folders[i % parts].mkdir(exist_ok=True)
        os.link(path, folders[i % parts] / path.name)
    return folders


#: ``scp.processes`` of the node under test (None: the node's default).
SCP_PROCESSES: list[int | None] = [None]
#: ``scp.pool_files`` of the node under test (None: the node's default).
POOL_FILES: list[int | None] = [None]
#: Rows (and columns) of the series' slices (``--size``).
SIZE = [512]


def node_config(
    folder: Path, port: int, quiet: float, dest_port: int | None, analyzer: str
) -> Path:
    dest = (
        f'[destinations.orthanc]\nae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = {dest_port}\n'
        if dest_port
        else ""
    )
    text = (
        f'[node]\nbind_address = "127.0.0.1"\nport = {port}\ndata_dir = "{folder}"\n'
        f"min_free_mb = 0\n[scheduler]\nquiet_seconds = {quiet}\npoll_seconds = 0.2\n"
        f"[delivery]\npoll_seconds = 0.2\n[worker]\nlease_seconds = 300\n"
        f'analyzer = "{analyzer}"\n{dest}'
    )
    text += "[scp]\n"
    if SCP_PROCESSES[0] is not None:
        text += f"processes = {SCP_PROCESSES[0]}\n"
    if POOL_FILES[0] is not None:
        text += f"pool_files = {POOL_FILES[0]}\n"
    path = folder.parent / f"{folder.name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def start_node(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**ENV, "PYTHONPATH": str(REPO)}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "node", "-v", "serve", "-c", str(config)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


#: The receivers' receipt-time lines ("receiver N stopped: ...") of each node run, by run name.
RECEIPT_TIMES: dict[str, list[str]] = {}


def ingest_node(work: Path, folders: list[Path], run: int) -> tuple[float, float]:
    port = free_port()
    # The worker stays idle during ingest (quiet period of an hour); any importable analyzer does.
    analyzer = "tests.node.analyzers:mip"
    name = f"node{run}-{len(folders)}"
    config = node_config(work / name, port, quiet=3600, dest_port=None, analyzer=analyzer)
    process = start_node(config, work / f"{name}.log")
    try:
        wait_port(port, process=process)
        time.sleep(1.0)  # let the worker process finish starting
        fill_pools(work, name, port)
        return timed_storescu(port, "SPINENODE", folders, process.pid)
    finally:
        stop(process)
        lines = (work / f"{name}.log").read_text(errors="replace").splitlines()
        RECEIPT_TIMES[name] = [ln.split(": ", 1)[1] for ln in lines if "receipt transactions" in ln]


def fill_pools(work: Path, name: str, port: int) -> None:
    """Bring the node to its state when a series arrives after an idle moment: every receiver
    has received before (its spool pool is made after its first write) and its pool is full
    (docs/operations.md, Durability). Sends one-slice series of another study on as many
    associations at once as there are receivers until every pool is full."""
    settings = Settings()
    processes = SCP_PROCESSES[0] if SCP_PROCESSES[0] is not None else settings.scp_processes
    files = POOL_FILES[0] if POOL_FILES[0] is not None else settings.scp_pool_files
    wanted = max(processes, 1) * files
    pool = work / name / "spool.pool"
    for attempt in range(8):
        if sum(1 for _ in pool.glob("*/*")) >= wanted:
            return
        folders = [
            make_series(
                work / f"{name}-warm{attempt}-{i}",
                1,
                SIZE[0],
                f"1.2.826.0.1.3680043.8.498.{9091 + 10 * attempt + i}",
            )[0].parent
            for i in range(max(processes, 1))
        ]
        storescu(port, "SPINENODE", folders)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(1 for _ in pool.glob("*/*")) < wanted:
            time.sleep(0.1)
    if sum(1 for _ in pool.glob("*/*")) < wanted:
        raise RuntimeError(f"the spool pools in {pool} did not fill")


def ingest_storescp(work: Path, folders: list[Path], run: int) -> tuple[float, float]:
    port = free_port()
    out = work / f"storescp{run}-{len(folders)}"
    out.mkdir()
    process = subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "-od", str(out), str(port)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        return timed_storescu(port, "STORESCP", folders, process.pid)
    finally:
        stop(process)


def ingest_orthanc(work: Path, folders: list[Path], run: int) -> tuple[float, float]:
    orthanc = Orthanc(
        work / f"orthanc{run}-{len(folders)}", free_port(), free_port(), modalities={}
    )
    try:
        return timed_storescu(orthanc.dicom_port, "ORTHANC", folders, orthanc.process.pid)
    finally:
        orthanc.stop()


def end_to_end(work: Path, slices: int, size: int, quiet: float) -> None:
    """Phantom → Orthanc → node → Orthanc, with the job log's per-stage breakdown."""
    out = work / "phantom"
    subprocess.run(
        [sys.executable, "-m", "node", "phantom", "--seed", "1", "--kind", "lumbar",
         "--shape", str(slices), str(size), str(size), "--spacing", "1.0", "0.8", "0.8",
         "--out", str(out)],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    node_port, dicom_port, http_port = free_port(), free_port(), free_port()
    orthanc = Orthanc(
        work / "orthanc-e2e", dicom_port, http_port,
        modalities={"spinenode": ("SPINENODE", "127.0.0.1", node_port)},
    )  # fmt: skip
    config = node_config(
        work / "node-e2e", node_port, quiet=quiet, dest_port=dicom_port, analyzer=DEFAULT_ANALYZER
    )
    process = start_node(config, work / "node-e2e.log")
    try:
        study = orthanc.upload(sorted((out / "dicom").rglob("*.dcm")))
        wait_port(node_port, process=process)
        orthanc.post("/modalities/spinenode/store", {"Resources": [study], "Synchronous": True})
        joblog = JobLog.open(f"sqlite:///{work / 'node-e2e' / 'spinenode.db'}")
        detail = wait_finished(joblog)
        joblog.close()
        modalities = orthanc.series_modalities(study)
    finally:
        stop(process)
        orthanc.stop()
    report_end_to_end(detail, modalities, f"{slices}x{size}x{size} lumbar phantom", quiet)


def wait_finished(joblog: JobLog, timeout: float = 900.0) -> JobDetail:
    """The job once it is DONE/FAILED/SKIPPED (all deliveries acknowledged by Orthanc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = joblog.jobs()
        if jobs and jobs[0].state in (JobState.DONE, JobState.FAILED, JobState.SKIPPED):
            return joblog.job(jobs[0].job_id)
        time.sleep(0.1)
    raise RuntimeError("the job did not finish in time")


def report_end_to_end(detail: JobDetail, modalities: list[str], what: str, quiet: float) -> None:
    at = {event.target: event.at for event in detail.events}
    last = detail.last_instance_at
    print(f"\nend to end ({what}): job {detail.summary.state}; series in the study: {modalities}")
    if last is None or JobState.DONE not in at:
        return
    phases = (
        (f"quiet period ({quiet:g} s setting)", last, at[JobState.QUEUED]),
        ("queued -> claimed", at[JobState.QUEUED], at[JobState.RUNNING]),
        ("analysis (worker)", at[JobState.RUNNING], at[JobState.DELIVERING]),
        ("delivery to Orthanc", at[JobState.DELIVERING], at[JobState.DONE]),
    )
    for name, start, end in phases:
        print(f"  {name:<32} {(end - start).total_seconds():7.2f} s")
    total = (at[JobState.DONE] - last).total_seconds()
    print(f"  {'last C-STORE -> results stored':<32} {total:7.2f} s (target 45 s)")
    for stage in detail.stages:
        print(f"    stage {stage.stage:<26} {stage.seconds:7.2f} s")


def _load() -> str:
    """The 1, 5 and 15 minute load averages (the machine may be shared: read ratios with it)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--associations",
        type=int,
        nargs="+",
        default=[1, 4],
        help="concurrent associations to measure, the series shared out among them",
    )
    parser.add_argument(
        "--scp-processes",
        type=int,
        default=None,
        help="the node's scp.processes (default: its default)",
    )
    parser.add_argument(
        "--pool-files",
        type=int,
        default=None,
        help="the node's scp.pool_files (default: its default; 0: no pooled spool files)",
    )
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument(
        "--quiet", type=float, default=2.0, help="quiet period (s) for the end-to-end run"
    )
    args = parser.parse_args()
    SCP_PROCESSES[0] = args.scp_processes
    POOL_FILES[0] = args.pool_files
    SIZE[0] = args.size
    if not (shutil.which("storescu") and shutil.which("storescp") and orthanc_available()):
        sys.exit("needs DCMTK (storescu, storescp) and Orthanc installed")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        files = make_series(work / "series", args.slices, args.size)
        mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"series: {len(files)} images, {args.size}x{args.size}, {mb:.0f} MB, TCP_NODELAY=1")
        print(f"load average at start: {_load()}")
        for parallel in args.associations:
            folders = split(files, parallel, work)
            print(f"{parallel} association(s) at once:")
            receivers = (
                ("spinenode", ingest_node),
                ("orthanc", ingest_orthanc),
                ("storescp", ingest_storescp),
            )
            # Round robin (node, Orthanc, storescp, node, ...): on a shared machine every receiver
            # meets the same moments of load, which keeps the ratios fair.
            runs: dict[str, list[tuple[float, float, int, int]]] = {n: [] for n, _ in receivers}
            for run in range(args.repeat):
                for name, ingest in receivers:
                    seconds, cpu = ingest(work, folders, run)
                    runs[name].append((seconds, cpu, LAST_PROCESSES[0], run))
            rates: dict[str, float] = {}
            for name, _ in receivers:
                seconds, cpu, processes, best = min(runs[name])
                rates[name] = len(files) / seconds
                print(
                    f"  {name:<10} {rates[name]:8.1f} images/s"
                    f"  ({seconds:.2f} s, best of {args.repeat};"
                    f" receiver CPU {1000 * cpu / len(files):.2f} ms/image"
                    f" in {processes} process{'es' if processes > 1 else ''})"
                )
                for line in (
                    RECEIPT_TIMES.get(f"node{best}-{parallel}", []) if name == "spinenode" else []
                ):
                    print(f"    {line}")
            print(f"  ratio spinenode/orthanc:  {rates['spinenode'] / rates['orthanc']:.2f}")
            print(f"  ratio spinenode/storescp: {rates['spinenode'] / rates['storescp']:.2f}")
            print(f"  load average after: {_load()}")
        if args.skip_e2e:
            return
        if analyzer_problem(DEFAULT_ANALYZER) is not None:
            print(f"\nend to end: skipped ({analyzer_problem(DEFAULT_ANALYZER)})")
            return
        end_to_end(work, args.slices, args.size, args.quiet)


if __name__ == "__main__":
    main()
