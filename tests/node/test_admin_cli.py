"""The admin commands (jobs, job, status, retry) on a real job log built by the storage API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from node.cli import main
from node.cli.jobs import parse_when, table
from storage.joblog import JobLog
from storage.models import SCHEMA_VERSION
from storage.records import DeliveryRequest, OutputRecord
from storage.states import JobState
from tests.conftest import REPO_ROOT
from tests.storage.conftest import postgres_url
from tests.storage.factory import T0, queued_jobs, receipt, series_uid

NOW = T0 + timedelta(hours=1)
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def _populate(url: str) -> tuple[int, int, int]:
    """Three jobs: one DONE with a delivery and stage timings, one FAILED delivery, one QUEUED."""
    with JobLog.open(url) as log:
        done, failed, queued = queued_jobs(log, 3)
        for job_id in (done, failed):
            assert log.claim("worker-1", 60.0, NOW) is not None
            log.record_stage(job_id, "segment", 4.25)
            log.record_outputs(job_id, [OutputRecord(f"2.25.{job_id}", SEG_CLASS, "/out.dcm")])
            log.add_deliveries(job_id, [DeliveryRequest("pacs", f"2.25.{job_id}", "/out.dcm")])
            log.transition(job_id, JobState.DELIVERING, "1 output", worker="worker-1")
            (due,) = [d for d in log.due_deliveries(NOW) if d.job_id == job_id]
            ok = job_id == done
            log.delivery_attempted(due.delivery_id, ok, None if ok else "refused", None)
            log.finish_if_delivered(job_id)
    return done, failed, queued


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


def test_jobs_lists_a_table_and_json_with_filters(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    done, failed, queued = _populate(url)
    assert main(["jobs", "--db", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATE", "TRIES"]
    assert [line.split()[0] for line in lines[1:]] == [str(queued), str(failed), str(done)]
    assert lines[1].index(series_uid(2)) == lines[0].index("SERIES UID")  # aligned columns
    assert main(["jobs", "--db", url, "--state", "failed", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(j["job_id"], j["state"]) for j in doc] == [(failed, "failed")]
    assert doc[0]["reason"] == "1 of 1 deliveries gave up: pacs: refused"
    assert main(["jobs", "--db", url, "--since", "2999-01-01", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["jobs", "--db", url, "--since", "1d", "--until", "2999-01-01", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


def test_job_shows_timeline_timings_and_deliveries(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    done, _, _ = _populate(url)
    with JobLog.open(url) as log:
        log.record_instance(receipt(0, 0, b"other bytes", calling_ae="OTHERPACS"))
    assert main(["job", str(done), "--db", url]) == 0
    out = capsys.readouterr().out
    assert "instance events (re-sends):" in out and "conflict  OTHERPACS" in out
    assert out.startswith(f"job {done}: done")
    for expected in ("timeline (UTC):", "claimed by worker-1", "segment", "4.25", "sent"):
        assert expected in out
    assert f"outputs (1):\nKIND  SOP INSTANCE UID  FILE\nSEG   2.25.{done}" in out
    assert main(["job", str(done), "--db", url, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["target"] for e in doc["events"]] == [
        "receiving",
        "queued",
        "running",
        "delivering",
        "done",
    ]
    assert doc["stages"][0]["seconds"] == 4.25
    assert doc["deliveries"][0]["state"] == "sent"
    assert doc["outputs"] == [
        {"sop_instance_uid": f"2.25.{done}", "sop_class_uid": SEG_CLASS, "path": "/out.dcm"}
    ]
    assert main(["job", "9999", "--db", url]) == 1
    assert "no job with id 9999" in capsys.readouterr().err


def test_retry_reopens_a_failed_job(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    done, failed, _ = _populate(url)
    assert main(["retry", str(failed), "--db", url]) == 0
    assert f"job {failed}: failed → delivering" in capsys.readouterr().out
    with JobLog.open(url) as log:
        assert log.job(failed).summary.state is JobState.DELIVERING
        assert [d.job_id for d in log.due_deliveries(NOW)] == [failed]
    assert main(["retry", str(done), "--db", url]) == 1
    assert "only failed jobs can be retried" in capsys.readouterr().err


def test_status_reads_the_settings_file_for_database_and_spool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "var"
    config = tmp_path / "spinenode.toml"
    config.write_text(f'[node]\ndata_dir = "{data_dir}"\n', encoding="utf-8")
    _, failed, _ = _populate(f"sqlite:///{data_dir / 'spinenode.db'}")
    assert main(["status", "--config", str(config), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["jobs_by_state"] == {
        "receiving": 0,
        "queued": 1,
        "running": 0,
        "delivering": 0,
        "done": 1,
        "skipped": 0,
        "failed": 1,
    }
    assert doc["spool"] == str(data_dir / "spool")
    assert doc["spool_free_bytes"] > 0
    assert [f["job_id"] for f in doc["recent_failures"]] == [failed]
    # worker-1 was last seen at NOW (a test clock in the past): not live any more
    assert doc["workers"] == []
    db = f"sqlite:///{data_dir / 'spinenode.db'}"
    assert doc["job_log"] == {"url": db, "schema_version": SCHEMA_VERSION}
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "queued 1" in out and "failed 1" in out and "GiB free" in out
    assert "recent failures:" in out
    assert f"job log:     {db} (schema {SCHEMA_VERSION})" in out


def test_status_names_a_postgresql_job_log_without_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = postgres_url()  # the scratch cluster trusts 127.0.0.1: any password is accepted
    with_password = url.replace("postgres@", "postgres:s3cret@", 1)
    JobLog.open(with_password).close()
    assert main(["status", "--db", with_password]) == 0
    out = capsys.readouterr().out
    assert "job log:     postgresql+psycopg://postgres:***@" in out and "s3cret" not in out


def test_missing_job_log_is_reported_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'absent' / 'jobs.db'}"
    assert main(["jobs", "--db", url]) == 2
    assert "no job log at" in capsys.readouterr().err
    assert not (tmp_path / "absent").exists()


def test_dates_and_tables() -> None:
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert parse_when("2h", now) == now - timedelta(hours=2)
    assert parse_when("2026-11-20") == datetime(2026, 11, 20, tzinfo=UTC)
    assert parse_when("2026-11-20T10:00+01:00") == datetime(2026, 11, 20, 9, tzinfo=UTC)
    with pytest.raises(Exception, match="not a date"):
        parse_when("yesterday")
    assert table(("A", "BB", "C"), [[1, None, "x"], [100, 2, "y"]]).splitlines() == [
        "A    BB  C",
        "1    -   x",
        "100  2   y",
    ]


def test_output_into_a_closed_pipe_stops_without_a_traceback(url: str) -> None:
    # `spinenode jobs | head -1`: the reader is gone before the listing is written.
    _populate(url)
    # Buffered stdout, as in a shell (PYTHONUNBUFFERED=1 made every write reach the pipe at once,
    # so the test passed only where the variable was set).
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SPINENODE_") and k != "PYTHONUNBUFFERED"
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "node", "jobs", "--db", url],
        cwd=REPO_ROOT,
        env=environ | {"PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.close()  # before the child has started up and written anything
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert b"Traceback" not in stderr, stderr.decode()
