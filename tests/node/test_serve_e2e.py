"""`spinenode serve` end to end: an SCU sends a CT series, the results reach a pynetdicom PACS.

The node runs as a real process (`python -m node serve`) with a worker process; the PACS is a
pynetdicom storage SCP on 127.0.0.1. Both listen on port 0: the system gives each a free port
and the test reads it back (the node logs "serving on 127.0.0.1:PORT"), so no port chosen ahead
can be taken by another process in between. The analysis is ``tests.node.analyzers:mip`` (a real MIP
secondary capture) so these tests do not depend on the image analysis being finished.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.joblog import JobLog
from storage.states import DeliveryState, JobState
from tests.conftest import REPO_ROOT
from tests.node.dicomnet import PacsSCP, echo, send, wait_for, write_series

CONFIG = """
[node]
ae_title = "SPINENODE"
bind_address = "127.0.0.1"
port = 0
data_dir = "{data}"
min_free_mb = 0

[scheduler]
quiet_seconds = 1
poll_seconds = 0.2

[selection]
min_slices = 4

[worker]
count = 1
analyzer = "tests.node.analyzers:mip"
lease_seconds = 10
heartbeat_seconds = 1

[delivery]
poll_seconds = 0.2

[destinations.pacs]
ae_title = "PACS"
host = "127.0.0.1"
port = {pacs_port}
"""


#: The line ``serve`` logs once it listens (node/service.py), with the port it bound.
SERVING = re.compile(rb"serving on 127\.0\.0\.1:(\d+) with")


class Serve:
    """``python -m node -v serve -c CONFIG`` as a child process, its log in a file; the config
    says ``port = 0`` and :attr:`port` is the one it bound (read from its log)."""

    def __init__(self, config: Path, log: Path, **env: str) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SPINENODE_")}
        environ |= {"PYTHONPATH": str(REPO_ROOT), **env}
        self.log = log
        start = log.stat().st_size if log.exists() else 0  # earlier runs' lines: not ours
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "node", "-v", "serve", "-c", str(config)],
                cwd=REPO_ROOT,
                env=environ,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.port = 0

        def serving() -> bool:
            found = SERVING.search(log.read_bytes()[start:])
            self.port = int(found.group(1)) if found else 0
            return found is not None or self.process.poll() is not None

        if not wait_for(serving, timeout=60) or not self.port or echo(self.port) != 0:
            self.stop(signal.SIGKILL)
            pytest.fail(f"spinenode serve did not start:\n{log.read_text()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, PacsSCP]]:
    pacs = PacsSCP(tmp_path / "pacs", 0).start()  # port 0: it reads back the one it got
    config = tmp_path / "spinenode.toml"
    config.write_text(CONFIG.format(data=tmp_path / "var", pacs_port=pacs.port), encoding="utf-8")
    yield config, pacs
    pacs.stop()


def test_series_in_results_out_with_the_job_timeline(
    setup: tuple[Path, PacsSCP], tmp_path: Path
) -> None:
    config, pacs = setup
    node = Serve(config, tmp_path / "serve.log")
    try:
        assert send(node.port, write_series(tmp_path / "in", slices=6)) == [0] * 6
        assert wait_for(lambda: len(pacs.received) == 1, timeout=60), (
            tmp_path / "serve.log"
        ).read_text()
        joblog = JobLog.open(f"sqlite:///{tmp_path / 'var' / 'spinenode.db'}")
        assert wait_for(lambda: joblog.jobs(state=JobState.DONE) != [], timeout=30)
        (job,) = joblog.jobs()
        detail = joblog.job(job.job_id)
        joblog.close()
    finally:
        assert node.stop() == 0
    assert [e.target for e in detail.events] == [
        JobState.RECEIVING,
        JobState.QUEUED,
        JobState.RUNNING,
        JobState.DELIVERING,
        JobState.DONE,
    ]
    assert {"load", "write", "analysis"} <= {s.stage for s in detail.stages}
    assert [d.state for d in detail.deliveries] == [DeliveryState.SENT]
    assert detail.summary.calling_ae == "PACS" and detail.summary.instances == 6
    log = (tmp_path / "serve.log").read_text()
    assert f"job {job.job_id} series {job.series_uid}" in log  # lines carry job id and series
    assert "Test^Node" not in log and "NODE-TEST-1" not in log  # never the patient's name or ID


def test_node_killed_mid_series_loses_nothing(setup: tuple[Path, PacsSCP], tmp_path: Path) -> None:
    config, pacs = setup
    paths = write_series(tmp_path / "in", slices=6)
    hold = {"SPINENODE_SCHEDULER_QUIET_SECONDS": "3600"}  # the series stays open across restarts
    first = Serve(config, tmp_path / "serve.log", **hold)
    try:
        assert send(first.port, paths[:3]) == [0] * 3
        children = descendants(first.process.pid)
    finally:
        first.stop(signal.SIGKILL)  # a crash, not a clean stop
    assert wait_for(lambda: not any(map(alive, children)), timeout=30)  # no orphans keep running
    second = Serve(config, tmp_path / "serve.log", **hold)
    assert send(second.port, paths[3:]) == [0] * 3
    assert second.stop() == 0
    third = Serve(config, tmp_path / "serve.log")  # quiet period back to 1 s
    try:
        assert wait_for(lambda: len(pacs.received) == 1, timeout=60)
    finally:
        assert third.stop() == 0
    joblog = JobLog.open(f"sqlite:///{tmp_path / 'var' / 'spinenode.db'}")
    (job,) = joblog.jobs()
    joblog.close()
    assert job.instances == 6


def test_sigterm_stops_the_receiving_processes_and_leaves_no_child(
    setup: tuple[Path, PacsSCP], tmp_path: Path
) -> None:
    config, _ = setup
    node = Serve(config, tmp_path / "serve.log", SPINENODE_SCP_PROCESSES="3")
    try:
        children = descendants(node.process.pid)
        assert len(children) >= 4  # three receivers and a worker
        assert send(node.port, write_series(tmp_path / "in", slices=4)) == [0] * 4
        # and whatever started since (the worker's fork server, the resource tracker)
        children += [pid for pid in descendants(node.process.pid) if pid not in children]
    finally:
        assert node.stop() == 0
    # serve returns only once every process it started (and theirs) has exited
    assert [command_line(pid) for pid in children if alive(pid)] == []
    log = (tmp_path / "serve.log").read_text()
    assert "with 3 receiving processes" in log
    assert log.count("receipt transactions took") == 3  # each receiver stopped cleanly


def descendants(pid: int) -> list[int]:
    """Process ids of every descendant of ``pid`` (Linux /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(parents.get(pid, []))
    while todo:
        found.append(todo.pop())
        todo.extend(parents.get(found[-1], []))
    return found


def command_line(pid: int) -> str:
    """``pid`` and its command line, to name a process left behind."""
    try:
        return (
            f"{pid}: " + (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")).decode()
        )
    except OSError:
        return f"{pid}: (gone)"


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_worker_killed_mid_job_is_replaced_and_the_job_completes(
    setup: tuple[Path, PacsSCP], tmp_path: Path
) -> None:
    config, pacs = setup
    env = {
        "SPINENODE_WORKER_ANALYZER": "tests.node.analyzers:slow_once",
        "SPINENODE_WORKER_LEASE_SECONDS": "3",
    }
    node = Serve(config, tmp_path / "serve.log", **env)
    joblog = JobLog.open(f"sqlite:///{tmp_path / 'var' / 'spinenode.db'}")
    try:
        assert send(node.port, write_series(tmp_path / "in", slices=6)) == [0] * 6
        marker = tmp_path / "var" / "work" / "job-1" / "started"
        assert wait_for(marker.exists, timeout=60)
        holder = joblog.job(1).summary.worker or ""
        os.kill(int(holder.split(":")[-2]), signal.SIGKILL)  # worker ids are host:pid:index
        assert wait_for(lambda: len(pacs.received) == 1, timeout=90), (
            tmp_path / "serve.log"
        ).read_text()
        detail = joblog.job(1)
    finally:
        joblog.close()
        assert node.stop() == 0
    assert detail.summary.attempts == 2
    assert any("expired" in (e.reason or "") for e in detail.events)
    assert "worker 0 (pid" in (tmp_path / "serve.log").read_text()  # the supervisor restarted it
