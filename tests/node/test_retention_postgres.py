"""`spinenode serve` with its job log on PostgreSQL: receive, analyse, deliver, purge with the
retention sweep, and the admin commands read it all back (skipped without a scratch PostgreSQL
database, see tests/storage/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.cli import main
from storage.joblog import JobLog
from storage.states import JobState
from tests.node.dicomnet import PacsSCP, send, wait_for, write_series
from tests.node.test_serve_e2e import Serve, setup  # noqa: F401  (the fixture)
from tests.storage.conftest import postgres_url

SOON_DAYS = "0.00002"  # about 1.7 s


def test_serve_on_postgresql_runs_delivers_and_purges(
    setup: tuple[Path, PacsSCP],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = postgres_url()
    config, pacs = setup
    env = {
        "SPINENODE_DATABASE_URL": url,
        "SPINENODE_RETENTION_SPOOL_DAYS": SOON_DAYS,
        "SPINENODE_RETENTION_INTERVAL_SECONDS": "0.5",
    }
    node = Serve(config, tmp_path / "serve.log", **env)
    joblog = JobLog.open(url)
    try:
        assert send(node.port, write_series(tmp_path / "in", slices=6)) == [0] * 6
        assert wait_for(lambda: len(pacs.received) == 1, timeout=60)

        def purged() -> bool:
            return any("6 received instances" in (e.reason or "") for e in joblog.job(1).events)

        assert wait_for(purged, timeout=60), (tmp_path / "serve.log").read_text()
        detail = joblog.job(1)
        assert detail.summary.state is JobState.DONE
        assert [d.state.value for d in detail.deliveries] == ["sent"]
    finally:
        joblog.close()
        assert node.stop() == 0
    assert list((tmp_path / "var" / "spool").rglob("*.dcm")) == []
    assert not (tmp_path / "var" / "spinenode.db").exists()  # nothing went to SQLite
    assert main(["jobs", "--db", url, "--json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert (doc["state"], doc["instances"], doc["spool_purged"]) == ("done", 6, True)
