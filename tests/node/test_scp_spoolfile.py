"""The spool file format (node.spoolfile) and what its checksum means for re-sends."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from node.scp import StorageSCP
from node.settings import Settings
from node.spoolfile import (
    Provenance,
    content_sha256,
    encode_file_meta,
    file_content_sha256,
    padding_trailer,
    read_provenance,
    verified_sha256,
)
from storage.joblog import JobLog
from storage.states import JobState
from tests.node.dicomnet import send, write_series


def test_file_meta_reads_back_with_pydicom(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    (sent,) = write_series(tmp_path / "in", slices=1)
    dataset = dcmread(sent)
    raw = sent.read_bytes()
    stream = raw[144 + int.from_bytes(raw[140:144], "little") :]
    provenance = Provenance("CT 1", "SPINENODE", "::1")
    uid = str(dataset.SOPInstanceUID)
    path.write_bytes(
        encode_file_meta(CTImageStorage, uid, ExplicitVRLittleEndian, provenance) + stream
    )
    back = dcmread(path)
    assert back.file_meta.MediaStorageSOPInstanceUID == uid
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.file_meta.SendingPresentationAddress == "//[::1]"
    assert back.PixelData == dataset.PixelData
    assert read_provenance(path) == provenance
    assert file_content_sha256(path) == content_sha256(ExplicitVRLittleEndian, stream)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_a_padded_file_reads_back_and_checks_its_own_data_set(tmp_path: Path, syntax: str) -> None:
    # A pooled spool file: meta with the data set's length and checksum, the data set, then
    # Data Set Trailing Padding to the file's fixed size (zeros already there).
    (sent,) = write_series(tmp_path / "in", slices=1, transfer_syntax=syntax)
    raw = sent.read_bytes()
    stream = raw[144 + int.from_bytes(raw[140:144], "little") :]
    digest = content_sha256(syntax, stream)
    meta = encode_file_meta(
        CTImageStorage, "1.2.3", syntax, Provenance("A", "B", "h"), (len(stream), digest)
    )
    trailer = padding_trailer(syntax)
    assert trailer is not None and trailer(7) is None and trailer(2) is None
    size = len(meta) + len(stream) + 1000
    path = tmp_path / "pooled"
    path.write_bytes(meta + stream + (trailer(1000) or b"") + bytes(size))
    path.write_bytes(path.read_bytes()[:size])
    back = dcmread(path)
    assert back.PixelData == dcmread(sent).PixelData
    assert len(back[0xFFFC, 0xFFFC].value) == 1000 - len(trailer(1000) or b"")
    assert file_content_sha256(path) == verified_sha256(path) == digest  # padding left out
    damaged = bytearray(path.read_bytes())
    damaged[len(meta) + 10] ^= 0xFF
    path.write_bytes(damaged)
    assert verified_sha256(path) is None  # a file not filled whole
    path.write_bytes(meta[:-50] + bytes(50) + stream)
    assert verified_sha256(path) is None  # no recorded checksum


def test_deflated_and_big_endian_data_sets_are_not_padded() -> None:
    assert padding_trailer(DeflatedExplicitVRLittleEndian) is None
    assert padding_trailer(ExplicitVRBigEndian) is None


def test_checksum_of_a_file_without_group_length_is_none(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\2\0\1\0OB\0\0\2\0\0\0\0\1")
    assert file_content_sha256(path) is None
    path.write_bytes(b"short")
    assert file_content_sha256(path) is None


def test_the_same_instance_from_another_sender_is_a_duplicate(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", port=0, bind_address="127.0.0.1", min_free_mb=0)
    joblog = JobLog.open(settings.database_url)
    scp = StorageSCP(settings, joblog)
    scp.start()
    try:
        paths = write_series(tmp_path / "in", slices=2)
        assert send(scp.port, paths, calling_ae="CT1") == [0, 0]
        kept = {p: p.read_bytes() for p in settings.spool_dir.rglob("*.dcm")}
        assert send(scp.port, paths, calling_ae="ROUTER") == [0, 0]
        assert {p: p.read_bytes() for p in settings.spool_dir.rglob("*.dcm")} == kept
        (job,) = joblog.jobs(state=JobState.RECEIVING)
        assert job.instances == 2
        assert joblog.job(job.job_id).instance_events == ()
    finally:
        scp.stop()
        joblog.close()
