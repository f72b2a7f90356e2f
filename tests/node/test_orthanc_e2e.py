"""End to end with a real Orthanc: upload CT to Orthanc, Orthanc C-STOREs it to the node, the
node's results come back into the same study in Orthanc (checked over Orthanc's REST API)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.service import Service
from node.settings import Destination, SelectionRules, Settings
from node.worker import analyzer_problem
from storage.joblog import JobLog
from storage.states import JobState
from tests.conftest import REPO_ROOT
from tests.node import orthanc as orthanc_helpers
from tests.node.dicomnet import wait_for, write_series
from tests.node.orthanc import Orthanc, orthanc_available

pytestmark = pytest.mark.skipif(
    not orthanc_available(), reason="Orthanc not installed (Debian package 'orthanc')"
)
# The default analysis (node/default_analyzer.py: dicom_io loader, inference, DICOM writers).
ANALYSIS_PROBLEM = analyzer_problem(Settings().analyzer)


def _node_settings(tmp_path: Path, orthanc_port: int, **changes: object) -> Settings:
    settings = Settings(
        bind_address="127.0.0.1",
        port=0,  # a free port, read back once it listens (Service.port)
        data_dir=tmp_path / "var",
        min_free_mb=0,
        quiet_seconds=1.0,
        scheduler_poll_seconds=0.2,
        delivery_poll_seconds=0.2,
        lease_seconds=30.0,
        heartbeat_seconds=2.0,
        selection=SelectionRules(min_slices=4),
        destinations=(Destination("orthanc", "ORTHANC", "127.0.0.1", orthanc_port),),
    )
    return settings.with_changes(**changes)


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    running = Orthanc.launch(tmp_path / "orthanc")  # on free ports, checked once it is up
    yield running
    running.stop()


def _start_node(
    tmp_path: Path, orthanc: Orthanc, box: list[Service], **changes: object
) -> Settings:
    """The node (port 0) sending to ``orthanc``, registered there on the port it bound."""
    settings = _node_settings(tmp_path, orthanc.dicom_port, **changes)
    service = Service(settings)
    box.append(service)
    service.start()
    orthanc.add_modality("spinenode", "SPINENODE", "127.0.0.1", service.port)
    return settings


@pytest.fixture
def service_box() -> Iterator[list[Service]]:
    box: list[Service] = []
    yield box
    for service in box:
        service.stop()


def test_results_arrive_in_the_same_study_in_orthanc(
    tmp_path: Path, orthanc: Orthanc, service_box: list[Service]
) -> None:
    study = orthanc.upload(write_series(tmp_path / "in", slices=6))
    settings = _start_node(tmp_path, orthanc, service_box, analyzer="tests.node.analyzers:mip")
    orthanc.post("/modalities/spinenode/store", {"Resources": [study], "Synchronous": True})
    assert wait_for(lambda: len(orthanc.series_modalities(study)) == 2, timeout=45)
    assert orthanc.series_modalities(study) == ["CT", "OT"]
    joblog = JobLog.open(settings.database_url)
    # the delivery row is settled just after Orthanc has the result: wait for it
    assert wait_for(lambda: [j.state for j in joblog.jobs()] == [JobState.DONE], timeout=30)
    (job,) = joblog.jobs()
    assert job.calling_ae == "ORTHANC"
    joblog.close()


@pytest.mark.skipif(ANALYSIS_PROBLEM is not None, reason=f"real analysis: {ANALYSIS_PROBLEM}")
def test_phantom_seg_sr_sc_arrive_in_orthanc(
    tmp_path: Path, orthanc: Orthanc, service_box: list[Service]
) -> None:
    out = tmp_path / "phantom"
    small = ["--spacing", "2.0", "1.2", "1.2", "--fov", "220"]  # a coarse, cropped grid: fast
    phantom = [sys.executable, "-m", "node", "phantom", "--seed", "3", "--kind", "lumbar"]
    subprocess.run(
        [*phantom, *small, "--out", str(out)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    study = orthanc.upload(sorted((out / "dicom").rglob("*.dcm")))
    settings = _start_node(tmp_path, orthanc, service_box, lease_seconds=120.0)
    orthanc.post("/modalities/spinenode/store", {"Resources": [study], "Synchronous": True})
    joblog = JobLog.open(settings.database_url)
    done = wait_for(lambda: joblog.jobs(state=JobState.DONE) != [], timeout=150)
    (job,) = joblog.jobs()
    detail = joblog.job(job.job_id)
    joblog.close()
    assert done, detail.to_json()
    modalities = orthanc.series_modalities(study)  # every delivery was acknowledged
    assert {"CT", "SEG", "SR"} <= set(modalities), modalities
    assert any(m in ("OT", "SC") for m in modalities), modalities
    assert len(detail.deliveries) >= 3
    assert {"load", "write_dicom", "analysis"} <= {s.stage for s in detail.stages}


def test_orthanc_launch_starts_again_on_other_ports_when_one_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process takes the DICOM port between the pick and Orthanc's bind: Orthanc exits,
    # and launch starts it on two other ports.
    with socket.create_server(("127.0.0.1", 0)) as taken:
        taken_port = int(taken.getsockname()[1])
        free = orthanc_helpers._free_ports
        picks = iter([[taken_port, *free(1)], free(2)])
        monkeypatch.setattr(orthanc_helpers, "_free_ports", lambda count: next(picks))
        running = Orthanc.launch(tmp_path / "orthanc")
        try:
            assert running.dicom_port != taken_port
            assert running.get("/system")["DicomPort"] == running.dicom_port
        finally:
            running.stop()
    assert "already in use" in (tmp_path / "orthanc" / "orthanc.log").read_text()
