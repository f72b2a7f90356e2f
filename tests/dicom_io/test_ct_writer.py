"""The CT series writer: valid DICOM (dciodvfy, dcmdump), geometry from the affine, determinism."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from dicom_io.ct_writer import write_ct_series
from dicom_io.geometry import plane_geometry
from tests.dicom_io.helpers import axial_affine, make_hu, make_spec, write_series

SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEG2000Lossless]
SYNTAXES += [JPEGLSLossless]


def _dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(
        ["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


@pytest.mark.parametrize("enhanced", [False, True], ids=["single", "enhanced"])
@pytest.mark.parametrize("syntax", SYNTAXES, ids=[s.name for s in SYNTAXES])
def test_written_series_is_valid_dicom(tmp_path: Path, syntax: str, enhanced: bool) -> None:
    if shutil.which("dciodvfy") is None or shutil.which("dcmdump") is None:
        pytest.skip("dciodvfy/dcmdump not installed (Debian packages dicom3tools, dcmtk)")
    hu = make_hu((3, 40, 36))
    paths = write_series(
        tmp_path, hu, axial_affine(tilt_deg=10.0), transfer_syntax=syntax, enhanced=enhanced
    )
    assert len(paths) == (1 if enhanced else 3)
    for path in paths:
        assert _dciodvfy_errors(path) == []
        dump = subprocess.run(["dcmdump", str(path)], capture_output=True, text=True, check=False)
        assert dump.returncode == 0, dump.stderr
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == syntax
        stored = ds.pixel_array.astype(np.float64)
        expected = hu if enhanced else hu[paths.index(path)]
        np.testing.assert_array_equal(stored - 1024.0, expected)


def test_geometry_tags_follow_the_affine(tmp_path: Path) -> None:
    affine = axial_affine(spacing=(2.5, 0.8, 0.6), tilt_deg=15.0)
    paths = write_series(tmp_path, make_hu((4, 40, 36)), affine)
    first, third = pydicom.dcmread(paths[0]), pydicom.dcmread(paths[2])
    np.testing.assert_allclose([float(v) for v in first.PixelSpacing], [0.8, 0.6])
    np.testing.assert_allclose(
        [float(v) for v in first.ImageOrientationPatient], [1, 0, 0, 0, 1, 0], atol=1e-9
    )
    np.testing.assert_allclose(
        [float(v) for v in third.ImagePositionPatient], affine[:3, 3] + 2 * affine[:3, 0], atol=1e-6
    )
    # slice thickness defaults to the distance between slice planes, not the tilted step length
    assert float(first.SliceThickness) == pytest.approx(2.5)
    assert first.RescaleType == "HU" and first.Modality == "CT"


def test_output_is_deterministic(tmp_path: Path) -> None:
    a = write_series(tmp_path / "a", transfer_syntax=RLELossless)
    b = write_series(tmp_path / "b", transfer_syntax=RLELossless)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    uids = {pydicom.dcmread(p).SOPInstanceUID for p in a}
    assert len(uids) == len(a)


def test_signed_storage_keeps_negative_values(tmp_path: Path) -> None:
    hu = make_hu((2, 40, 36))
    paths = write_series(tmp_path, hu, pixel_representation=1, rescale_intercept=0.0)
    ds = pydicom.dcmread(paths[0])
    assert ds.PixelRepresentation == 1
    np.testing.assert_array_equal(ds.pixel_array, hu[0])


def test_out_of_range_hu_is_refused(tmp_path: Path) -> None:
    hu = make_hu((2, 40, 36))
    hu[0, 0, 0] = -3000.0
    with pytest.raises(ValueError, match="outside"):
        write_series(tmp_path, hu)


def test_non_orthogonal_in_plane_axes_are_refused(tmp_path: Path) -> None:
    affine = axial_affine()
    affine[:3, 1] = (0.3, 0.8, 0.0)
    with pytest.raises(ValueError, match="orthogonal"):
        write_ct_series(make_hu((2, 40, 36)), affine, tmp_path, make_spec())
    with pytest.raises(ValueError, match="in the image plane"):
        plane_geometry(np.array([[0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1.0]]), 2)


def test_simpleitk_reads_the_same_geometry_and_values(tmp_path: Path) -> None:
    """An independent reader (SimpleITK/GDCM) agrees with the affine the series was written from."""
    import SimpleITK

    sitk: Any = SimpleITK  # untyped library
    affine = axial_affine(spacing=(2.5, 0.8, 0.6))
    hu = make_hu((4, 40, 36))
    paths = write_series(tmp_path, hu, affine)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in paths])
    image = reader.Execute()
    assert image.GetSpacing() == pytest.approx((0.6, 0.8, 2.5))  # x = columns, y = rows, z
    assert image.GetOrigin() == pytest.approx(tuple(affine[:3, 3]))
    corner = image.TransformIndexToPhysicalPoint((35, 39, 3))  # (column, row, slice)
    np.testing.assert_allclose(corner, affine[:3, :3] @ [3, 39, 35] + affine[:3, 3], atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), hu)  # [slice, row, column]
