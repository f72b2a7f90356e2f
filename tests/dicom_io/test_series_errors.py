"""Bad input: each case raises a typed error whose message says what is wrong, never a crash."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from dicom_io import LoadPolicy, load_series
from dicom_io.errors import (
    DicomIOError,
    MalformedDatasetError,
    NotApplicableError,
    PixelDataError,
    UnreadableFileError,
)
from tests.dicom_io.helpers import SERIES_UID, make_hu, make_spec, rewrite, write_series


def _series(tmp_path: Path, slices: int = 3, **options: Any) -> list[Path]:
    return write_series(tmp_path, make_hu((slices, 40, 36)), **options)


def test_not_ct_is_not_applicable(tmp_path: Path) -> None:
    paths = _series(tmp_path)
    rewrite(paths, lambda ds, _: setattr(ds, "Modality", "MR"))
    with pytest.raises(NotApplicableError, match="modality is 'MR', not CT"):
        load_series(tmp_path)


def test_a_non_ct_sop_class_is_not_applicable(tmp_path: Path) -> None:
    paths = _series(tmp_path)
    rewrite(paths, lambda ds, _: setattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.7"))
    with pytest.raises(NotApplicableError, match="not a CT image storage class"):
        load_series(tmp_path)


def test_one_slice_is_not_applicable(tmp_path: Path) -> None:
    _series(tmp_path, slices=1)
    with pytest.raises(NotApplicableError, match="1 slice"):
        load_series(tmp_path)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize("keyword", ["SeriesInstanceUID", "StudyInstanceUID", "SOPInstanceUID"])
@pytest.mark.parametrize("bad", ["", "1.2.03.x"], ids=["empty", "malformed"])
def test_empty_or_malformed_uids_are_refused_or_repaired(
    tmp_path: Path, keyword: str, bad: str
) -> None:
    hu = make_hu((3, 40, 36))
    paths = write_series(tmp_path, hu)
    rewrite(paths, lambda ds, _: setattr(ds, keyword, bad))
    with pytest.raises(MalformedDatasetError, match=f"{keyword} is empty or malformed"):
        load_series(tmp_path)
    policy = LoadPolicy(repair_uids=True)
    first, second = load_series(tmp_path, policy=policy), load_series(tmp_path, policy=policy)
    np.testing.assert_array_equal(first.hu, hu)
    assert any(keyword in w for w in first.warnings)
    assert first.series_instance_uid == second.series_instance_uid  # repairs are deterministic
    uids = [first.study_instance_uid, first.series_instance_uid]
    uids += [s.sop_instance_uid for s in first.sources]
    assert all(pydicom.uid.UID(uid).is_valid for uid in uids)
    if keyword == "SeriesInstanceUID":
        assert first.series_instance_uid != SERIES_UID
        assert first.header.SeriesInstanceUID == first.series_instance_uid


def test_empty_frame_of_reference_is_refused(tmp_path: Path) -> None:
    paths = _series(tmp_path)
    rewrite(paths, lambda ds, _: setattr(ds, "FrameOfReferenceUID", ""))
    with pytest.raises(MalformedDatasetError, match="FrameOfReferenceUID"):
        load_series(tmp_path)


@pytest.mark.parametrize(
    "keyword", ["ImagePositionPatient", "PixelSpacing", "ImageOrientationPatient"]
)
def test_missing_geometry_is_malformed(tmp_path: Path, keyword: str) -> None:
    paths = _series(tmp_path)
    rewrite(paths[1:2], lambda ds, _: delattr(ds, keyword))
    with pytest.raises(MalformedDatasetError, match=f"CT0001.dcm: {keyword} is missing"):
        load_series(tmp_path)


def test_truncated_file_is_a_pixel_data_error(tmp_path: Path) -> None:
    paths = _series(tmp_path)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[:-500])
    with pytest.raises(PixelDataError, match=r"CT0001\.dcm"):
        load_series(tmp_path)


def test_truncated_pixel_data_in_a_dataset_is_a_pixel_data_error(tmp_path: Path) -> None:
    datasets = [pydicom.dcmread(p) for p in _series(tmp_path)]
    datasets[2].PixelData = datasets[2].PixelData[:-100]
    with pytest.raises(PixelDataError, match="dataset #2: pixel data could not be decoded"):
        load_series(datasets)


def test_damaged_jpeg_2000_is_a_pixel_data_error(tmp_path: Path) -> None:
    paths = _series(tmp_path, transfer_syntax=JPEG2000Lossless)
    ds = pydicom.dcmread(paths[0])
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 3]])
    ds.save_as(paths[0])
    with pytest.raises(PixelDataError, match="JPEG 2000"):
        load_series(tmp_path)


def test_an_unsupported_transfer_syntax_is_a_pixel_data_error(tmp_path: Path) -> None:
    paths = _series(tmp_path, transfer_syntax=RLELossless)

    def private_syntax(ds: Dataset, _: int) -> None:
        ds.file_meta.TransferSyntaxUID = UID("1.2.826.0.1.3680043.8.498.999.1")

    rewrite(paths, private_syntax)
    with pytest.raises(PixelDataError, match="is not supported by this node"):
        load_series(tmp_path)


def test_no_pixel_data_is_a_pixel_data_error(tmp_path: Path) -> None:
    datasets = [pydicom.dcmread(p) for p in _series(tmp_path)]
    del datasets[0].PixelData
    with pytest.raises(PixelDataError, match="no pixel data"):
        load_series(datasets)


def test_unreadable_files_are_reported_by_name(tmp_path: Path) -> None:
    paths = _series(tmp_path)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 20 + b"not dicom at all")
    with pytest.raises(UnreadableFileError, match=r"junk\.dcm: not a readable DICOM file"):
        load_series([*paths, junk])
    with pytest.raises(UnreadableFileError, match="file not found"):
        load_series([*paths, tmp_path / "missing.dcm"])


def test_an_empty_folder_is_not_applicable(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(NotApplicableError, match="no DICOM files"):
        load_series(tmp_path)


def test_instances_of_two_series_in_one_list_are_not_applicable(tmp_path: Path) -> None:
    first = _series(tmp_path / "a")
    second = _series(tmp_path / "b", spec=make_spec(SERIES_UID + ".7"))
    with pytest.raises(NotApplicableError, match="2 different SeriesInstanceUIDs"):
        load_series([*first, *second])


def test_mixed_frames_of_reference_are_not_applicable(tmp_path: Path) -> None:
    paths = _series(tmp_path)
    rewrite(paths[:1], lambda ds, _: setattr(ds, "FrameOfReferenceUID", "1.2.3.4"))
    with pytest.raises(NotApplicableError, match="2 different FrameOfReferenceUIDs"):
        load_series(tmp_path)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless], ids=str)
def test_damaged_files_never_escape_as_anything_but_dicom_io_errors(
    tmp_path: Path, syntax: str
) -> None:
    """Cut or scribbled-on bytes (header and pixels) load or raise a DicomIOError, nothing else."""
    paths = _series(tmp_path, transfer_syntax=syntax)
    original = paths[1].read_bytes()
    rng = random.Random(7)
    outcomes = set()
    for trial in range(90):
        damaged = bytearray(original)
        if trial % 3 == 0:
            damaged = damaged[: rng.randrange(len(damaged))]
        else:
            upper = 1400 if trial % 3 == 1 else len(damaged)  # the header, or anywhere
            for _ in range(rng.randrange(1, 6)):
                damaged[rng.randrange(128, upper)] = rng.randrange(256)
        paths[1].write_bytes(bytes(damaged))
        try:
            load_series(tmp_path)
            outcomes.add("loaded")
        except DicomIOError as exc:
            outcomes.add(type(exc).__name__)
    assert "loaded" in outcomes and len(outcomes) >= 3
