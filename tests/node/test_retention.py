"""Retention: the sweep deletes exactly the finished work that is old enough, nothing of active
jobs, never anything outside the data folder, records what it deleted, and a series sent again
after its purge is a new arrival."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from node.cli import main
from node.retention import Retention, job_folders
from node.scheduler import Scheduler
from node.scp import StorageSCP
from node.settings import RetentionSettings, SelectionRules, Settings
from node.worker import Worker, load_analyzer
from storage.errors import InvalidTransitionError
from storage.joblog import JobLog
from storage.records import DeliveryRequest, InstanceReceipt
from storage.retention import RetentionStore
from storage.spool import Spool
from storage.states import JobState, ReceiptOutcome
from tests.node.dicomnet import receive, send, write_series

SERIES = {name: f"1.2.826.0.1.3680043.8.498.77.{i}" for i, name in enumerate("ABCDEF", 1)}
DAY = timedelta(days=1)


@dataclass
class Env:
    settings: Settings
    joblog: JobLog
    spool: Spool
    folder: Path

    def queue(self, name: str) -> int:
        """Receive series ``name`` (5 slices) and let the scheduler queue it; its job id."""
        paths = write_series(self.folder / name, slices=5, series_uid=SERIES[name])
        receive(self.joblog, self.spool, paths)
        decided = Scheduler(self.joblog, self.settings).tick(datetime.now(UTC) + timedelta(hours=1))
        assert [state for _, state in decided] == [JobState.QUEUED]
        return decided[0][0]

    def finish(self, name: str, state: JobState = JobState.DONE) -> int:
        """A job for series ``name`` that ran and ended in ``state``, with a work folder."""
        job_id = self.queue(name)
        claimed = self.joblog.claim("w-test", 60.0, datetime.now(UTC))
        assert claimed is not None and claimed.job_id == job_id
        outputs = self.settings.work_dir / f"job-{job_id}" / "dicom"
        outputs.mkdir(parents=True)
        (outputs / "seg.dcm").write_bytes(b"x" * 1000)
        self.joblog.transition(job_id, state, reason="test", worker="w-test")
        return job_id

    def spooled(self, name: str) -> list[Path]:
        return sorted(self.settings.spool_dir.rglob(f"*/{SERIES[name]}/*.dcm"))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    settings = Settings(
        data_dir=tmp_path / "var",
        min_free_mb=0,
        selection=SelectionRules(min_slices=4, max_slice_spacing_mm=2.5),
        analyzer="tests.node.analyzers:mip",
        max_job_seconds=300.0,
        retention=RetentionSettings(spool_days=7, outputs_days=30),
    )
    joblog = JobLog.open(settings.database_url)
    yield Env(settings, joblog, Spool(settings.spool_dir), tmp_path / "in")
    joblog.close()


def _with_pending_delivery(env: Env, name: str) -> int:
    job_id = env.queue(name)
    assert env.joblog.claim("w-test", 60.0, datetime.now(UTC)) is not None
    uid = "1.2.826.0.1.3680043.8.498.78.1"
    env.joblog.add_deliveries(job_id, [DeliveryRequest("pacs", uid, "/nonexistent/out.dcm")])
    env.joblog.transition(job_id, JobState.DELIVERING, worker="w-test")
    (env.settings.work_dir / f"job-{job_id}").mkdir(parents=True)
    return job_id


def test_sweep_deletes_exactly_the_finished_and_old_enough(env: Env) -> None:
    done = env.finish("A")
    failed = env.finish("B", JobState.FAILED)
    delivering = _with_pending_delivery(env, "D")
    reopened = env.finish("E")
    queued = env.queue("C")
    late = write_series(env.folder / "E2", slices=6, series_uid=SERIES["E"])[5]
    receive(env.joblog, env.spool, [late])  # one more instance: a new job, still receiving
    retention = Retention(env.joblog, env.settings)
    now = datetime.now(UTC)

    assert retention.sweep(now + 6 * DAY).series == 0  # nothing is old enough yet
    report = retention.sweep(now + 8 * DAY)
    assert (report.series, report.instances, report.work_folders) == (2, 10, 0)
    assert env.spooled("A") == [] and env.spooled("B") == []
    assert len(env.spooled("C")) == 5 and len(env.spooled("D")) == 5  # active: untouched
    assert len(env.spooled("E")) == 6  # a new job of the series is still receiving
    assert env.joblog.job_instances(done) == [] and env.joblog.job_instances(failed) == []
    assert len(env.joblog.job_instances(queued)) == 5
    event = env.joblog.job(done).events[-1]
    assert (event.source, event.target) == (JobState.DONE, JobState.DONE)
    assert "retention: deleted 5 received instances" in (event.reason or "")
    assert "retention.spool_days = 7" in (event.reason or "")

    report = retention.sweep(now + 31 * DAY)
    assert (report.series, report.work_folders) == (0, 3)
    assert sorted(job_folders(env.settings.work_dir)) == [delivering]
    assert "work folder" in (env.joblog.job(reopened).events[-1].reason or "")  # a finished job
    assert "work folder" in (env.joblog.job(failed).events[-1].reason or "")
    assert env.joblog.job(delivering).summary.state is JobState.DELIVERING
    assert env.joblog.job(queued).summary.state is JobState.QUEUED
    assert json.loads((env.settings.data_dir / "retention.json").read_text())["work_folders"] == 3


def test_series_sent_again_after_its_purge_is_a_new_arrival(env: Env) -> None:
    first = env.finish("A")
    Retention(env.joblog, env.settings).sweep(datetime.now(UTC) + 8 * DAY)
    assert env.spooled("A") == []
    second = env.queue("A")  # the same files, sent again
    assert second != first
    paths = [Path(p) for p in env.joblog.job_instances(second)]
    assert len(paths) == 5 and all(p.is_file() for p in paths)
    worker = Worker(env.settings, env.joblog, load_analyzer(env.settings.analyzer), "w-2")
    assert worker.run_once() == second
    assert env.joblog.job(second).summary.state is JobState.DONE
    assert env.joblog.job(first).summary.state is JobState.DONE


def test_sweep_never_follows_links_out_of_the_data_folder(env: Env, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    precious = outside / "precious.dcm"
    precious.write_bytes(b"keep me")
    job_id = env.finish("A")
    (env.settings.work_dir / f"job-{job_id}" / "link.dcm").symlink_to(precious)
    series_dir = env.spooled("A")[0].parent
    for path in series_dir.iterdir():  # the series folder becomes a link to a folder outside
        path.rename(outside / path.name)
    series_dir.rmdir()
    series_dir.symlink_to(outside)
    linked_job = env.finish("B")
    linked = env.settings.work_dir / "job-999"
    linked.symlink_to(outside)  # a link named like a job folder is not a job folder

    report = Retention(env.joblog, env.settings).sweep(datetime.now(UTC) + 31 * DAY)
    assert report.refused == 5  # A's files resolve outside the spool: kept, rows kept
    assert len(env.joblog.job_instances(job_id)) == 5
    assert len(list(outside.glob("*.dcm"))) == 6 and precious.read_bytes() == b"keep me"
    assert not (env.settings.work_dir / f"job-{job_id}").exists()  # the link in it went alone
    assert env.spooled("B") == [] and env.joblog.job_instances(linked_job) == []
    assert linked.is_symlink() and outside.is_dir()
    events = len(env.joblog.job(job_id).events)
    again = Retention(env.joblog, env.settings).sweep(datetime.now(UTC) + 32 * DAY)
    assert (again.series, again.refused) == (0, 5)  # still refused, and not noted again
    assert len(env.joblog.job(job_id).events) == events


def test_job_log_rows_go_only_when_asked_and_after_the_files(env: Env) -> None:
    old = env.finish("A")
    kept = env.queue("B")
    retention = Retention(env.joblog, env.settings)
    later = datetime.now(UTC) + 400 * DAY
    assert retention.sweep(later).jobs_forgotten == 0  # joblog_days = 0: rows are kept
    assert {j.job_id for j in env.joblog.jobs()} == {old, kept}
    rules = RetentionSettings(spool_days=7, outputs_days=30, joblog_days=365)
    retention = Retention(env.joblog, env.settings.with_changes(retention=rules))
    assert retention.sweep(later).jobs_forgotten == 1
    assert {j.job_id for j in env.joblog.jobs()} == {kept}


def test_preview_shows_what_a_sweep_would_free(env: Env) -> None:
    env.finish("A")
    retention = Retention(env.joblog, env.settings)
    later = datetime.now(UTC) + 31 * DAY
    preview = retention.preview(later)
    assert (preview.instances, preview.work_folders, preview.last_sweep) == (5, 1, None)
    assert preview.spool_bytes == sum(p.stat().st_size for p in env.spooled("A"))
    retention.sweep(later)
    preview = retention.preview(later)
    assert (preview.instances, preview.work_folders) == (0, 0)
    assert preview.last_sweep is not None and preview.last_sweep["instances"] == 5


def test_status_shows_what_retention_would_free_and_the_last_pass(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "spinenode.toml"
    config.write_text(f'[node]\ndata_dir = "{env.settings.data_dir}"\n', encoding="utf-8")
    env.finish("A")
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "retention:   spool 7 d, outputs 30 d;" in out and "no pass yet" in out
    Retention(env.joblog, env.settings).sweep(datetime.now(UTC) + 8 * DAY)
    assert main(["status", "--config", str(config), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)["retention"]
    assert (doc["instances"], doc["work_folders"]) == (0, 0)  # nothing left to free today
    assert doc["last_sweep"]["instances"] == 5
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "deleted 5 instances of 1 series, 0 work folders" in out


def _network_settings(tmp_path: Path) -> Settings:
    """An SCP on 127.0.0.1 (a free port the system picks: StorageSCP.port) whose series of 4+
    slices are analysed."""
    return Settings(
        data_dir=tmp_path / "var",
        port=0,
        bind_address="127.0.0.1",
        min_free_mb=0,
        selection=SelectionRules(min_slices=4, max_slice_spacing_mm=2.5),
    )


def test_purged_series_sent_again_over_the_network_gets_a_new_job(tmp_path: Path) -> None:
    settings = _network_settings(tmp_path)
    joblog = JobLog.open(settings.database_url)
    scp = StorageSCP(settings, joblog)
    scp.start()
    try:
        env = Env(settings, joblog, Spool(settings.spool_dir), tmp_path / "in")
        paths = write_series(tmp_path / "a", slices=5, series_uid=SERIES["A"])
        assert send(scp.port, paths) == [0] * 5
        ((first, _),) = Scheduler(joblog, settings).tick(datetime.now(UTC) + timedelta(hours=1))
        assert joblog.claim("w", 60.0, datetime.now(UTC)) is not None
        joblog.transition(first, JobState.DONE, worker="w")
        assert send(scp.port, paths) == [0] * 5  # before the purge: duplicates, no new job
        assert [j.job_id for j in joblog.jobs()] == [first]
        assert Retention(joblog, settings).sweep(datetime.now(UTC) + 8 * DAY).instances == 5
        assert send(scp.port, paths) == [0] * 5  # after it: a new arrival
        second = max(j.job_id for j in joblog.jobs())
        assert second != first and len(env.spooled("A")) == 5
        assert joblog.job(second).summary.state is JobState.RECEIVING
        assert sorted(joblog.job_instances(second)) == sorted(map(str, env.spooled("A")))
    finally:
        scp.stop()
        joblog.close()


def test_retry_after_the_purge_is_refused_with_what_to_do(env: Env) -> None:
    analysis_failed = env.finish("A", JobState.FAILED)
    delivery_failed = _with_pending_delivery(env, "B")
    (delivery,) = env.joblog.job(delivery_failed).deliveries
    env.joblog.delivery_attempted(delivery.delivery_id, False, "connection refused", None)
    assert env.joblog.finish_if_delivered(delivery_failed) is JobState.FAILED
    retention = Retention(env.joblog, env.settings.with_changes(retention=RetentionSettings(1, 2)))
    retention.sweep(datetime.now(UTC) + 1.5 * DAY)  # the spool went, the outputs are still there
    with pytest.raises(InvalidTransitionError, match="received instances were deleted"):
        env.joblog.retry(analysis_failed)
    retention.sweep(datetime.now(UTC) + 3 * DAY)
    with pytest.raises(InvalidTransitionError, match="outputs were deleted"):
        env.joblog.retry(delivery_failed)
    assert env.joblog.job(delivery_failed).summary.state is JobState.FAILED


def test_job_log_purge_pages_past_series_it_must_keep(env: Env) -> None:
    kept, gone = env.finish("A"), env.finish("B")
    later = datetime.now(UTC) + 400 * DAY
    Retention(env.joblog, env.settings).sweep(later)  # files first: spool and work folders
    store = RetentionStore(env.joblog.engine, env.settings.spool_dir)
    first = store.purge_rows(later, {kept}.__contains__, limit=1)
    assert first[0] == 0 and first[1] is not None  # A is kept (as if its folder were still there)
    assert store.purge_rows(later, {kept}.__contains__, limit=1, after=first[1])[0] == 1
    assert [j.job_id for j in env.joblog.jobs()] == [kept]
    assert store.purge_rows(later, {kept}.__contains__, limit=1, after=first[1] + 1) == (0, None)
    assert gone not in {j.job_id for j in env.joblog.jobs()}


def test_jobs_and_job_show_how_many_instances_a_purged_job_had(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "spinenode.toml"
    config.write_text(f'[node]\ndata_dir = "{env.settings.data_dir}"\n', encoding="utf-8")
    job_id = env.finish("A")
    Retention(env.joblog, env.settings).sweep(datetime.now(UTC) + 8 * DAY)
    assert main(["jobs", "--config", str(config)]) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if SERIES["A"] in line]
    assert "5 (deleted)" in row
    assert main(["job", str(job_id), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "5 instances from PACS" in out and "files were deleted by retention" in out
    assert " - … - UTC" not in out, out  # when the series arrived is still known
    assert main(["jobs", "--config", str(config), "--json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert (doc["instances"], doc["spool_purged"]) == (5, True)


class _SweepDuringReceipt(JobLog):
    """A job log on which a retention sweep starts (on its own thread, as in ``serve``) while the
    SCP stores the next instance: after the SCP has looked at the spool file, before its receipt.
    The receipt waits up to a second for the sweep, then goes on."""

    sweep: Callable[[], object] | None = None
    sweeper: threading.Thread | None = None

    def record_instance(self, r: InstanceReceipt) -> ReceiptOutcome:
        sweep, self.sweep = self.sweep, None
        if sweep is not None:
            self.sweeper = threading.Thread(target=sweep)
            self.sweeper.start()
            self.sweeper.join(timeout=1.0)
        return super().record_instance(r)


def test_sweep_during_a_resend_never_loses_an_acknowledged_instance(tmp_path: Path) -> None:
    # A settled series old enough to purge is sent again, and the sweep reaches it while the SCP
    # stores the first instance: that instance's file is there, and recorded, so the SCP keeps
    # it as a duplicate. Every instance the node acknowledged must be on disk with its row.
    settings = _network_settings(tmp_path)
    joblog = _SweepDuringReceipt.open(settings.database_url)
    assert isinstance(joblog, _SweepDuringReceipt)  # open() makes an instance of its class
    scp = StorageSCP(settings, joblog)
    scp.start()
    try:
        paths = write_series(tmp_path / "a", slices=5, series_uid=SERIES["A"])
        assert send(scp.port, paths) == [0] * 5
        ((first, _),) = Scheduler(joblog, settings).tick(datetime.now(UTC) + timedelta(hours=1))
        assert joblog.claim("w", 60.0, datetime.now(UTC)) is not None
        joblog.transition(first, JobState.DONE, worker="w")
        ended = datetime.now(UTC)  # the sweep's cut-off: the job ended before it
        reports = []
        retention = Retention(joblog, settings)
        joblog.sweep = lambda: reports.append(retention.sweep(ended + 7 * DAY))
        assert send(scp.port, paths) == [0] * 5  # every one acknowledged
        assert joblog.sweeper is not None
        joblog.sweeper.join(timeout=60)
        recorded = {Path(p) for job in joblog.jobs() for p in joblog.job_instances(job.job_id)}
        assert len(recorded) == 5
        assert all(path.is_file() for path in recorded), "acknowledged, recorded, but deleted"
        # The SCP held the first instance's lock: the sweep waited, then found the series
        # received again (after the cut-off) and left it alone.
        assert [report.series for report in reports] == [0]
        assert [j.job_id for j in joblog.jobs()] == [first]
    finally:
        scp.stop()
        joblog.close()
