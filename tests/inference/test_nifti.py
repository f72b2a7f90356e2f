"""NIfTI round trip keeps the array, the dtype and the index → LPS affine (also oblique)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813

from inference.errors import InferenceError
from inference.nifti import read_nifti, write_nifti


def _oblique_affine() -> np.ndarray:
    t = math.radians(12.0)
    rot = np.array([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]])
    affine = np.eye(4)
    # slice step along +z (tilted), row step along +y, column step along +x; LPS mm
    affine[:3, :3] = rot @ np.array([[0.0, 0.0, 0.7], [0.0, 0.8, 0.0], [2.5, 0.0, 0.0]])
    affine[:3, 3] = [-100.0, 20.0, 55.0]
    return affine


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.int16])
def test_round_trip_keeps_array_and_affine(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(3)
    array = (rng.random((5, 7, 9)) * 100).astype(dtype)
    affine = _oblique_affine()
    path = write_nifti(tmp_path / "x.nii.gz", array, affine)
    back, back_affine = read_nifti(path)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)
    np.testing.assert_allclose(back_affine, affine, atol=1e-4)


def test_voxel_lands_at_its_lps_point(tmp_path: Path) -> None:
    array = np.zeros((4, 5, 6), np.uint8)
    array[1, 2, 3] = 7
    affine = _oblique_affine()
    path = write_nifti(tmp_path / "x.nii", array, affine)
    image = sitk.ReadImage(str(path))
    expected = affine @ np.array([1, 2, 3, 1.0])
    point = image.TransformIndexToPhysicalPoint((3, 2, 1))  # ITK index is (column, row, slice)
    np.testing.assert_allclose(point, expected[:3], atol=1e-4)
    assert image[3, 2, 1] == 7


def test_missing_file_and_bad_array_raise(tmp_path: Path) -> None:
    with pytest.raises(InferenceError):
        read_nifti(tmp_path / "none.nii.gz")
    with pytest.raises(InferenceError):
        write_nifti(tmp_path / "y.nii.gz", np.zeros((3, 3), np.uint8), np.eye(4))


def test_an_unreadable_file_is_a_plain_inference_error(tmp_path: Path) -> None:
    from inference.errors import InferenceError
    from inference.nifti import read_nifti

    damaged = tmp_path / "ct.nii.gz"
    damaged.write_bytes(b"not a NIfTI file")
    with pytest.raises(InferenceError, match="not a readable NIfTI"):
        read_nifti(damaged)
