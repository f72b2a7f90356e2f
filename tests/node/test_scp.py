"""The storage SCP over real associations on 127.0.0.1: durability, refusals, idempotency."""

from __future__ import annotations

import resource
import signal
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless
from pynetdicom import AE

from node.scp import StorageSCP, StoreStatus
from node.settings import AllowedPeer, Settings, TLSSettings
from storage.joblog import JobLog
from storage.states import JobState
from tests.node.dicomnet import SERIES_UID, echo, make_tls_chain, send, write_series


def _settings(tmp_path: Path, **changes: object) -> Settings:
    """Port 0: the SCP listens on a free port the system picks (``Node.port``)."""
    base = Settings(data_dir=tmp_path / "var", port=0, bind_address="127.0.0.1", min_free_mb=0)
    return base.with_changes(**changes)


class Node:
    """An SCP and its job log on a tmp data dir; restartable. ``settings.port`` is the port it
    bound."""

    def __init__(self, settings: Settings) -> None:
        self.joblog = JobLog.open(settings.database_url)
        self.scp = StorageSCP(settings, self.joblog)
        self.scp.start()
        self.settings = settings.with_changes(port=self.scp.port)
        self.port = self.scp.port

    def stop(self) -> None:
        self.scp.stop()
        self.joblog.close()

    def spool_files(self) -> list[Path]:
        root = self.settings.spool_dir
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    running = Node(_settings(tmp_path))
    yield running
    running.stop()


def test_echo(node: Node) -> None:
    assert echo(node.settings.port) == 0x0000


def test_store_is_spooled_and_recorded_before_success(node: Node, tmp_path: Path) -> None:
    paths = write_series(tmp_path / "in", slices=5)
    assert send(node.settings.port, paths) == [0] * 5
    files = node.spool_files()
    assert len(files) == 5
    sent = {str(dcmread(p).SOPInstanceUID): dcmread(p).PixelData for p in paths}
    for f in files:
        ds = dcmread(f)
        assert ds.file_meta.TransferSyntaxUID == dcmread(paths[0]).file_meta.TransferSyntaxUID
        assert ds.PixelData == sent[str(ds.SOPInstanceUID)]
    node.joblog.close()
    reopened = JobLog.open(node.settings.database_url)  # persisted, not only in memory
    jobs = reopened.jobs(state=JobState.RECEIVING)
    assert [(j.series_uid, j.instances, j.calling_ae) for j in jobs] == [(SERIES_UID, 5, "PACS")]
    assert sorted(reopened.job_instances(jobs[0].job_id)) == [str(f) for f in files]
    reopened.close()


def test_compressed_transfer_syntax_is_kept_as_received(node: Node, tmp_path: Path) -> None:
    paths = write_series(tmp_path / "in", slices=2, transfer_syntax=RLELossless)
    assert send(node.settings.port, paths) == [0, 0]
    for f in node.spool_files():
        assert dcmread(f).file_meta.TransferSyntaxUID == RLELossless


def test_resend_is_idempotent_and_conflict_is_refused_and_recorded(
    node: Node, tmp_path: Path
) -> None:
    paths = write_series(tmp_path / "in", slices=3)
    assert send(node.settings.port, paths) == [0, 0, 0]
    before = {f: f.read_bytes() for f in node.spool_files()}
    assert send(node.settings.port, paths) == [0, 0, 0]
    changed = dcmread(paths[0])
    changed.SeriesDescription = "different content, same SOP Instance UID"
    changed.save_as(tmp_path / "changed.dcm")
    assert send(node.settings.port, [tmp_path / "changed.dcm"]) == [StoreStatus.CONFLICT]
    assert {f: f.read_bytes() for f in node.spool_files()} == before  # stored files kept
    (job,) = node.joblog.jobs(state=JobState.RECEIVING)
    assert job.instances == 3
    detail = node.joblog.job(job.job_id)
    assert [e.kind for e in detail.instance_events] == ["conflict"]


def test_non_ct_sop_classes_are_not_negotiated(node: Node) -> None:
    ae = AE(ae_title="PACS")
    mr_storage = "1.2.840.10008.5.1.4.1.1.4"
    ae.add_requested_context(mr_storage)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")
    assoc = ae.associate("127.0.0.1", node.settings.port, ae_title="SPINENODE")
    assert assoc.is_established
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    assoc.release()
    assert accepted == {"1.2.840.10008.5.1.4.1.1.2"}


def test_invalid_uid_is_refused_and_nothing_is_written(node: Node, tmp_path: Path) -> None:
    (path,) = write_series(tmp_path / "in", slices=1)
    ds = dcmread(path)
    ds.StudyInstanceUID = "1.2.03.4"  # leading zero in a component: not a UID
    ds.save_as(tmp_path / "bad.dcm")
    ds.StudyInstanceUID = ""  # the real-world case of an empty dataset-level UID
    ds.save_as(tmp_path / "empty.dcm")
    statuses = send(node.settings.port, [tmp_path / "bad.dcm", tmp_path / "empty.dcm"])
    assert statuses == [StoreStatus.INVALID_UID, StoreStatus.INVALID_UID]
    assert node.spool_files() == []
    assert node.joblog.jobs() == []


def test_called_ae_and_allowlist(tmp_path: Path) -> None:
    allow = (AllowedPeer("PACS", "127.0.0.1"), AllowedPeer("WS1", "10.9.9.9"))
    running = Node(_settings(tmp_path, allow=allow))
    try:
        assert echo(running.port, calling_ae="PACS") == 0
        assert echo(running.port, calling_ae="INTRUDER") is None
        assert echo(running.port, calling_ae="WS1") is None  # right AE, wrong host
        assert echo(running.port, calling_ae="PACS", called_ae="SOMEONE") is None
    finally:
        running.stop()


def test_free_space_guard_refuses_with_a700(tmp_path: Path) -> None:
    running = Node(_settings(tmp_path, min_free_mb=1 << 40))
    try:
        paths = write_series(tmp_path / "in", slices=2)
        assert send(running.port, paths) == [StoreStatus.OUT_OF_SPACE] * 2
        assert running.spool_files() == []
    finally:
        running.stop()


def test_full_disk_refusal_leaves_no_partial_file(node: Node, tmp_path: Path) -> None:
    # The file-size limit makes the spool write fail mid-file (EFBIG) as a full disk would
    # (ENOSPC); the job log's few small pages stay below it.
    (big,) = write_series(tmp_path / "in", slices=1, size=768)  # ~1.2 MB
    small = write_series(tmp_path / "small", slices=1, size=16, series_uid=SERIES_UID + ".5")
    assert send(node.settings.port, small) == [0]  # the job log exists before the limit
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, hard))
    try:
        statuses = send(node.settings.port, [big])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert statuses == [StoreStatus.OUT_OF_SPACE]
    names = [p.name for p in node.settings.spool_dir.rglob("*") if p.is_file()]
    assert names == [f"{dcmread(small[0]).SOPInstanceUID}.dcm"]  # no partial, no temp file
    assert [j.instances for j in node.joblog.jobs()] == [1]


def test_max_associations(tmp_path: Path) -> None:
    running = Node(_settings(tmp_path, max_associations=1))
    ae = AE(ae_title="PACS")
    ae.add_requested_context("1.2.840.10008.1.1")
    first = ae.associate("127.0.0.1", running.port, ae_title="SPINENODE")
    try:
        assert first.is_established
        assert echo(running.port) is None
    finally:
        first.release()
        running.stop()


def test_restart_mid_series_loses_nothing(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "in", slices=6)
    first = Node(_settings(tmp_path))
    assert send(first.port, paths[:3]) == [0] * 3
    first.stop()
    second = Node(_settings(tmp_path))
    try:
        assert send(second.port, paths[3:]) == [0] * 3
        (job,) = second.joblog.jobs(state=JobState.RECEIVING)
        assert job.instances == 6
        assert len(second.spool_files()) == 6
    finally:
        second.stop()


def test_tls_association(tmp_path: Path) -> None:
    chain = make_tls_chain(tmp_path / "tls")
    tls = TLSSettings(enabled=True, cert=chain["server"], key=chain["server_key"], ca=chain["ca"])
    running = Node(_settings(tmp_path, tls=tls))
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=chain["ca"])
    client.load_cert_chain(chain["client"], chain["client_key"])
    try:
        paths = write_series(tmp_path / "in", slices=2)
        assert send(running.port, paths, ssl_context=client) == [0, 0]
        assert len(running.spool_files()) == 2
        no_cert = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=chain["ca"])
        assert send(running.port, paths, ssl_context=no_cert) is None  # client cert required
    finally:
        running.stop()


def test_enhanced_ct_is_accepted(node: Node, tmp_path: Path) -> None:
    (path,) = write_series(tmp_path / "in", slices=5, enhanced=True)
    assert send(node.settings.port, [path]) == [0]
    (job,) = node.joblog.jobs(state=JobState.RECEIVING)
    assert job.instances == 1


@pytest.mark.realdata
def test_real_series_with_empty_dataset_uids_is_refused_with_a_reason(
    node: Node, tmp_path: Path, shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The dataset-level Study/Series/SOP UIDs are empty (only the file meta has the SOP UIDs): a
    # real-world malformed input. Sent with the file meta's SOP UIDs, it must be refused, not kept.
    folder = shared_data / "real-dicom" / "totalseg-t11-t12"
    path = sorted(folder.iterdir())[0]
    ds = dcmread(path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.save_as(tmp_path / "real.dcm")
    assert send(node.settings.port, [tmp_path / "real.dcm"]) == [StoreStatus.INVALID_UID]
    assert node.spool_files() == []
    assert "StudyInstanceUID: UID is empty" in caplog.text


def test_deflated_transfer_syntax_is_accepted(node: Node, tmp_path: Path) -> None:
    (path,) = write_series(tmp_path / "in", slices=1)
    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    assert send(node.settings.port, [tmp_path / "deflated.dcm"]) == [0]
    (stored,) = node.spool_files()
    kept = dcmread(stored)
    assert kept.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert kept.PixelData == ds.PixelData


def test_resend_repairs_a_spool_file_that_differs_from_the_recorded_bytes(
    node: Node, tmp_path: Path
) -> None:
    # The state a failed write after a crash could leave: the job log vouches for the sent bytes
    # but the spool holds others. A re-send must put the vouched-for bytes on disk before success.
    paths = write_series(tmp_path / "in", slices=2)
    assert send(node.settings.port, paths) == [0, 0]
    damaged = node.spool_files()[0]
    good = damaged.read_bytes()
    damaged.write_bytes(good[:-100] + b"\0" * 100)
    assert send(node.settings.port, paths) == [0, 0]
    assert damaged.read_bytes() == good
    (job,) = node.joblog.jobs(state=JobState.RECEIVING)
    assert job.instances == 2
