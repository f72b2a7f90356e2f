"""Series assembly: round trips, grouping, sorting, rescale, padding, signedness, compression."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from dicom_io import LoadPolicy, TiltPolicy, find_series, load_series
from dicom_io.errors import NotApplicableError
from tests.dicom_io.helpers import (
    SERIES_UID,
    axial_affine,
    make_hu,
    make_spec,
    rewrite,
    voxel_lps,
    write_series,
)


def _oblique_affine() -> np.ndarray:
    """An oblique (double-angled) but orthogonal grid: slice axis along the image normal."""
    a, b = np.radians(25.0), np.radians(-15.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rot = rz @ rx
    affine = np.eye(4)
    affine[:3, 0] = rot[:, 2] * 1.5  # along row × column cosines = +normal
    affine[:3, 1] = rot[:, 1] * 0.9
    affine[:3, 2] = rot[:, 0] * 0.75
    affine[:3, 3] = (12.5, -40.0, 300.0)
    return affine


ROUND_TRIPS: dict[str, tuple[dict[str, Any], np.ndarray, LoadPolicy]] = {
    "axial-unsigned": ({}, axial_affine(), LoadPolicy()),
    "signed": ({"pixel_representation": 1, "rescale_intercept": 0.0}, axial_affine(), LoadPolicy()),
    "implicit-vr": ({"transfer_syntax": ImplicitVRLittleEndian}, axial_affine(), LoadPolicy()),
    "oblique": ({}, _oblique_affine(), LoadPolicy()),
    "enhanced": ({"enhanced": True}, _oblique_affine(), LoadPolicy()),
    "tilted-kept": ({}, axial_affine(tilt_deg=12.0), LoadPolicy(tilt=TiltPolicy.KEEP)),
    "enhanced-tilted-kept": (
        {"enhanced": True},
        axial_affine(tilt_deg=-20.0),
        LoadPolicy(tilt=TiltPolicy.KEEP),
    ),
}


@pytest.mark.parametrize("case", list(ROUND_TRIPS))
def test_round_trip_gives_the_same_array_and_affine(tmp_path: Path, case: str) -> None:
    options, affine, policy = ROUND_TRIPS[case]
    hu = make_hu((5, 40, 36))
    write_series(tmp_path, hu, affine, **options)
    volume = load_series(tmp_path, policy=policy)
    np.testing.assert_array_equal(volume.hu, hu)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)
    assert volume.hu.dtype == np.float32
    assert volume.series_instance_uid == SERIES_UID
    assert len(volume.sources) == 5


@pytest.mark.parametrize("enhanced", [False, True], ids=["single", "enhanced"])
@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless], ids=str)
def test_compressed_series_decode_exactly(tmp_path: Path, syntax: str, enhanced: bool) -> None:
    hu = make_hu((3, 40, 36))
    paths = write_series(tmp_path, hu, transfer_syntax=syntax, enhanced=enhanced)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == syntax
    volume = load_series(paths)
    np.testing.assert_array_equal(volume.hu, hu)


def test_jpeg_lossless_process_14_decodes(tmp_path: Path) -> None:
    if shutil.which("dcmcjpeg") is None:
        pytest.skip("dcmcjpeg (Debian dcmtk) not installed: cannot make JPEG lossless test files")
    hu = make_hu((3, 40, 36))
    plain = write_series(tmp_path / "plain", hu)
    (tmp_path / "jpeg").mkdir()
    for path in plain:
        out = tmp_path / "jpeg" / path.name
        subprocess.run(["dcmcjpeg", "+e1", str(path), str(out)], check=True, timeout=60)
    syntax = pydicom.dcmread(tmp_path / "jpeg" / plain[0].name).file_meta.TransferSyntaxUID
    assert syntax == "1.2.840.10008.1.2.4.70"
    np.testing.assert_array_equal(load_series(tmp_path / "jpeg").hu, hu)


def test_sorting_uses_positions_not_instance_numbers_or_names(tmp_path: Path) -> None:
    hu = make_hu((7, 40, 36))
    paths = write_series(tmp_path / "src", hu)
    rng = random.Random(3)
    numbers = list(range(1, 8))
    rng.shuffle(numbers)
    rewrite(paths, lambda ds, i: setattr(ds, "InstanceNumber", numbers[i]))
    names = [f"IMG{n:03d}.dcm" for n in rng.sample(range(100), 7)]
    (tmp_path / "shuffled").mkdir()
    for path, name in zip(paths, names, strict=True):
        path.rename(tmp_path / "shuffled" / name)
    files = sorted((tmp_path / "shuffled").iterdir())
    rng.shuffle(files)
    for source in (tmp_path / "shuffled", files):
        np.testing.assert_array_equal(load_series(source).hu, hu)


def test_slices_stacked_against_the_normal_are_flipped_to_follow_it(tmp_path: Path) -> None:
    affine = axial_affine()
    affine[:3, 3] += 4 * affine[:3, 0]
    affine[:3, 0] *= -1  # written head → feet
    hu = make_hu((5, 40, 36))
    write_series(tmp_path, hu, affine)
    volume = load_series(tmp_path)
    assert volume.affine[2, 0] > 0  # slice axis points along +z (row × column cosines)
    np.testing.assert_array_equal(volume.hu, hu[::-1])
    # every voxel keeps its HU at its LPS position
    np.testing.assert_allclose(
        voxel_lps(volume.affine, volume.shape)[::-1], voxel_lps(affine, hu.shape), atol=1e-6
    )


def test_series_are_grouped_by_series_instance_uid(tmp_path: Path) -> None:
    other_uid = SERIES_UID + ".9"
    hu_a, hu_b = make_hu((4, 40, 36), seed=1), make_hu((3, 40, 36), seed=2)
    write_series(tmp_path / "a", hu_a)
    write_series(tmp_path / "b", hu_b, spec=make_spec(other_uid, series_number=7))
    (tmp_path / "notes.txt").write_text("not DICOM")
    found = find_series(tmp_path)
    assert [(s.series_instance_uid, len(s.paths)) for s in found] == [
        (SERIES_UID, 4),
        (other_uid, 3),
    ]
    with pytest.raises(NotApplicableError, match="holds 2 series"):
        load_series(tmp_path)
    np.testing.assert_array_equal(load_series(found[0]).hu, hu_a)
    np.testing.assert_array_equal(load_series(found[1]).hu, hu_b)


def test_rescale_slope_and_intercept_are_applied(tmp_path: Path) -> None:
    hu = np.round(make_hu((3, 40, 36)) * 2) / 2 - 0.5  # multiples of 0.5 HU
    paths = write_series(tmp_path, hu, rescale_slope=0.5, rescale_intercept=-1100.0)
    assert float(pydicom.dcmread(paths[0]).RescaleSlope) == 0.5
    np.testing.assert_array_equal(load_series(tmp_path).hu, hu)


def test_pixel_padding_value_and_range_become_the_lowest_hu(tmp_path: Path) -> None:
    hu = make_hu((3, 40, 36))
    hu[hu < -1000] = -1000.0  # real tissue ≥ -1000 HU
    hu[:, :5, :] = -2000.0  # outside the reconstruction circle
    hu[:, -3:, :] = -2500.0
    paths = write_series(tmp_path / "one", hu, pixel_representation=1, rescale_intercept=0.0)
    rewrite(paths, lambda ds, _: ds.add_new("PixelPaddingValue", "SS", -2000))
    loaded = load_series(tmp_path / "one").hu
    np.testing.assert_array_equal(loaded[:, 5:, :], hu[:, 5:, :])
    # padding takes the lowest real value: here -2500 (not padding: a real, if odd, value)
    assert np.all(loaded[:, :5, :] == -2500.0)

    paths = write_series(tmp_path / "range", hu, pixel_representation=1, rescale_intercept=0.0)

    def pad_range(ds: Dataset, _: int) -> None:
        ds.add_new("PixelPaddingValue", "SS", -3000)
        ds.add_new("PixelPaddingRangeLimit", "SS", -1500)

    rewrite(paths, pad_range)
    loaded = load_series(tmp_path / "range").hu
    assert np.all(loaded[:, :5, :] == -1024.0) and np.all(loaded[:, -3:, :] == -1024.0)


def test_signed_12_bit_storage_is_sign_extended(tmp_path: Path) -> None:
    hu = np.clip(make_hu((3, 40, 36)), -2048, 2047)
    paths = write_series(tmp_path, hu, pixel_representation=1, rescale_intercept=0.0)

    def twelve_bits(ds: Dataset, _: int) -> None:
        raw = np.frombuffer(ds.PixelData, dtype="<i2") & 0x0FFF  # keep only 12 stored bits
        ds.PixelData = raw.astype("<u2").tobytes()
        ds.BitsStored, ds.HighBit = 12, 11

    rewrite(paths, twelve_bits)
    np.testing.assert_array_equal(load_series(tmp_path).hu, hu)


def test_datasets_in_memory_load_like_files(tmp_path: Path) -> None:
    hu = make_hu((4, 40, 36))
    paths = write_series(tmp_path, hu, transfer_syntax=RLELossless)
    datasets = [pydicom.dcmread(p) for p in reversed(paths)]
    volume = load_series(datasets)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.sources[0].sop_instance_uid == datasets[-1].SOPInstanceUID
    assert "PixelData" not in volume.header and volume.header.Modality == "CT"
    assert all(ds.file_meta.TransferSyntaxUID == RLELossless for ds in datasets)


def test_enhanced_sources_reference_frames(tmp_path: Path) -> None:
    paths = write_series(tmp_path, make_hu((4, 40, 36)), enhanced=True)
    volume = load_series(paths[0])
    assert [s.frame_number for s in volume.sources] == [1, 2, 3, 4]
    assert {s.sop_instance_uid for s in volume.sources} == {
        pydicom.dcmread(paths[0]).SOPInstanceUID
    }
    assert "PerFrameFunctionalGroupsSequence" not in volume.header


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian], ids=str)
def test_shuffled_enhanced_frames_are_sorted_by_position(tmp_path: Path, syntax: str) -> None:
    hu = make_hu((5, 40, 36))
    paths = write_series(tmp_path, hu, enhanced=True, transfer_syntax=syntax)
    ds = pydicom.dcmread(paths[0])
    order = [3, 0, 4, 1, 2]
    frames = ds.pixel_array[order]
    per_frame = ds.PerFrameFunctionalGroupsSequence
    ds.PerFrameFunctionalGroupsSequence = [per_frame[i] for i in order]
    ds.PixelData = frames.astype("<u2").tobytes()
    ds.save_as(paths[0])
    volume = load_series(paths[0])
    np.testing.assert_array_equal(volume.hu, hu)
    assert [s.frame_number for s in volume.sources] == [2, 4, 5, 1, 3]


def test_decoding_in_worker_processes_gives_the_same_volume(tmp_path: Path) -> None:
    hu = make_hu((4, 40, 36))
    hu[:, :2, :] = -2000.0
    paths = write_series(
        tmp_path, hu, transfer_syntax=RLELossless, pixel_representation=1, rescale_intercept=0.0
    )
    rewrite(paths, lambda ds, _: ds.add_new("PixelPaddingValue", "SS", -2000))
    serial = load_series(tmp_path)
    parallel = load_series(tmp_path, workers=2)
    np.testing.assert_array_equal(parallel.hu, serial.hu)
    assert np.all(parallel.hu[:, :2, :] == -1024.0)


def test_a_dicomdir_beside_the_images_is_not_part_of_a_series(tmp_path: Path) -> None:
    from pydicom.fileset import FileSet

    hu = make_hu((3, 40, 36))
    paths = write_series(tmp_path / "src", hu)
    fileset = FileSet()
    for path in paths:
        fileset.add(pydicom.dcmread(path))
    fileset.write(tmp_path / "media")
    assert (tmp_path / "media" / "DICOMDIR").is_file()
    [series] = find_series(tmp_path / "media")
    assert len(series.paths) == 3
    np.testing.assert_array_equal(load_series(tmp_path / "media").hu, hu)


def test_a_series_split_over_two_enhanced_instances_is_one_volume(tmp_path: Path) -> None:
    hu = make_hu((6, 40, 36))
    affine = axial_affine()
    lower = write_series(tmp_path / "lower", hu[:3], affine, enhanced=True)
    upper_affine = affine.copy()
    upper_affine[:3, 3] += 3 * affine[:3, 0]
    upper = write_series(tmp_path / "upper", hu[3:], upper_affine, enhanced=True)
    rewrite(upper, lambda ds, _: setattr(ds, "SOPInstanceUID", ds.SOPInstanceUID[:-1] + "7"))
    volume = load_series([upper[0], lower[0]])
    np.testing.assert_array_equal(volume.hu, hu)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)
    assert [s.frame_number for s in volume.sources] == [1, 2, 3, 1, 2, 3]
    assert len({s.sop_instance_uid for s in volume.sources}) == 2


def test_a_legacy_converted_enhanced_ct_from_highdicom_loads(tmp_path: Path) -> None:
    """A multi-frame written by another toolkit (highdicom) loads like our own series."""
    import highdicom as hd

    hu = make_hu((4, 40, 36))
    affine = axial_affine(spacing=(2.0, 0.8, 0.6))
    paths = write_series(tmp_path / "single", hu, affine)
    converted = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=[pydicom.dcmread(p) for p in reversed(paths)],
        series_instance_uid=SERIES_UID + ".3",
        series_number=9,
        sop_instance_uid=SERIES_UID + ".3.1",
        instance_number=1,
    )
    converted.save_as(tmp_path / "lce.dcm")
    volume = load_series(tmp_path / "lce.dcm")
    np.testing.assert_array_equal(volume.hu, hu)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)
    assert volume.sources[0].sop_class_uid == "1.2.840.10008.5.1.4.1.1.2.2"
