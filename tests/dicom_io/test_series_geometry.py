"""Series geometry: gaps, uneven spacing, duplicates, mixed planes, gantry tilt."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_io import LoadPolicy, TiltPolicy, load_series
from dicom_io.errors import GeometryError
from tests.dicom_io.helpers import (
    axial_affine,
    make_hu,
    make_spec,
    rewrite,
    voxel_lps,
    write_series,
)


def _linear_field(affine: npt.NDArray[np.float64], shape: tuple[int, int, int]) -> np.ndarray:
    """HU linear in LPS y and z (stored rounded to 1 HU): interpolation reproduces them ±0.5."""
    lps = voxel_lps(affine, shape)
    return (20.0 * lps[..., 1] + 10.0 * lps[..., 2]).astype(np.float32)


def _expected(volume_affine: npt.NDArray[np.float64], shape: tuple[int, int, int]) -> np.ndarray:
    lps = voxel_lps(volume_affine, shape)
    return 20.0 * lps[..., 1] + 10.0 * lps[..., 2]


def test_a_missing_slice_is_interpolated_and_reported(tmp_path: Path) -> None:
    affine = axial_affine(spacing=(2.0, 0.8, 0.7))
    hu = make_hu((7, 40, 36))
    paths = write_series(tmp_path, hu, affine)
    paths[3].unlink()
    volume = load_series(tmp_path)
    assert volume.shape == hu.shape
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(volume.hu[[0, 1, 2, 4, 5, 6]], hu[[0, 1, 2, 4, 5, 6]])
    np.testing.assert_allclose(volume.hu[3], (hu[2] + hu[4]) / 2, atol=1e-3)
    assert any("4.00 mm" in w and "6 → 7 slices" in w for w in volume.warnings)
    assert len(volume.sources) == 6
    with pytest.raises(GeometryError, match="resampling is switched off"):
        load_series(tmp_path, policy=LoadPolicy(resample_uneven=False))


def test_a_gap_too_wide_is_refused(tmp_path: Path) -> None:
    paths = write_series(tmp_path, make_hu((9, 40, 36)), axial_affine(spacing=(2.0, 0.8, 0.7)))
    for path in paths[3:6]:
        path.unlink()  # an 8 mm gap on a 2 mm grid
    with pytest.raises(GeometryError, match=r"gap of 8\.00 mm .* too wide"):
        load_series(tmp_path)
    volume = load_series(tmp_path, policy=LoadPolicy(max_gap_ratio=4.0))
    assert volume.shape[0] == 9


def test_uneven_spacing_is_resampled_onto_a_regular_grid(tmp_path: Path) -> None:
    affine = axial_affine(spacing=(1.0, 0.8, 0.7))
    z_steps = np.array([0.0, 2.0, 4.0, 7.0, 10.0, 13.0, 16.0])
    positions = affine[:3, 3] + np.outer(z_steps, [0.0, 0.0, 1.0])
    stack = np.eye(4)
    stack[:3, 1:3] = affine[:3, 1:3]
    hu = np.stack([_linear_field(_at(stack, p), (1, 40, 36))[0] for p in positions])
    paths = write_series(tmp_path, hu, affine)
    rewrite(paths, lambda ds, i: setattr(ds, "ImagePositionPatient", list(positions[i])))
    volume = load_series(tmp_path)
    assert volume.spacing[0] == pytest.approx(16.0 / 5)  # median step 3 mm → 6 planes over 16 mm
    np.testing.assert_allclose(volume.hu, _expected(volume.affine, volume.shape), atol=0.51)
    assert any("uneven slice spacing: steps 2.00–3.00 mm" in w for w in volume.warnings)
    chosen = load_series(tmp_path, policy=LoadPolicy(resample_spacing_mm=1.0))
    assert chosen.shape[0] == 17


def _at(affine: npt.NDArray[np.float64], origin: npt.ArrayLike) -> npt.NDArray[np.float64]:
    moved = affine.copy()
    moved[:3, 3] = origin
    return moved


def test_duplicate_positions_are_refused_or_dropped(tmp_path: Path) -> None:
    hu = make_hu((4, 40, 36))
    paths = write_series(tmp_path / "a", hu)
    other = write_series(tmp_path / "b", make_hu((4, 40, 36), seed=5), spec=make_spec(study_id="2"))

    def new_uid(ds: Dataset, _: int) -> None:
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[ds.SOPInstanceUID, "other"])

    rewrite(other[1:2], new_uid)
    series = [*paths, other[1]]
    with pytest.raises(GeometryError, match="same position"):
        load_series(series)
    volume = load_series(series, policy=LoadPolicy(drop_duplicates=True))
    np.testing.assert_array_equal(volume.hu, hu)  # the first given wins
    assert any("dropped" in w for w in volume.warnings)


def test_a_second_copy_of_an_instance_is_ignored(tmp_path: Path) -> None:
    hu = make_hu((4, 40, 36))
    paths = write_series(tmp_path / "a", hu)
    shutil.copy(paths[2], tmp_path / "copy.dcm")
    volume = load_series([*paths, tmp_path / "copy.dcm"])
    np.testing.assert_array_equal(volume.hu, hu)
    assert len(volume.sources) == 4


@pytest.mark.parametrize(
    ("attribute", "value", "message"),
    [
        ("ImageOrientationPatient", [1, 0, 0, 0, 0, -1], "mixed image orientations"),
        ("PixelSpacing", [0.5, 0.5], "mixed pixel spacings"),
    ],
)
def test_mixed_planes_are_refused(
    tmp_path: Path, attribute: str, value: list[float], message: str
) -> None:
    paths = write_series(tmp_path, make_hu((4, 40, 36)))
    rewrite(paths[2:3], lambda ds, _: setattr(ds, attribute, value))
    with pytest.raises(GeometryError, match=message):
        load_series(tmp_path)


def test_mixed_image_sizes_are_refused(tmp_path: Path) -> None:
    write_series(tmp_path / "a", make_hu((3, 40, 36)))
    affine = axial_affine()
    affine[:3, 3] += 3 * affine[:3, 0]
    small = write_series(tmp_path / "b", make_hu((2, 32, 36)), affine)
    rewrite(small, lambda ds, i: setattr(ds, "SOPInstanceUID", generate_uid(entropy_srcs=[str(i)])))
    with pytest.raises(GeometryError, match="mixed image sizes"):
        load_series(tmp_path)


def test_positions_off_a_line_are_refused(tmp_path: Path) -> None:
    paths = write_series(tmp_path, make_hu((5, 40, 36)))

    def move(ds: Dataset, _: int) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x + 6.0, y, z]

    rewrite(paths[2:3], move)
    with pytest.raises(GeometryError, match="do not lie on one line"):
        load_series(tmp_path)


def test_gantry_tilt_is_resampled_onto_an_orthogonal_grid(tmp_path: Path) -> None:
    affine = axial_affine(spacing=(2.0, 0.8, 0.7), tilt_deg=15.0)
    shape = (6, 40, 36)
    write_series(tmp_path, _linear_field(affine, shape), affine)
    volume = load_series(tmp_path)
    columns = volume.affine[:3, :3] / np.asarray(volume.spacing)
    np.testing.assert_allclose(columns.T @ columns, np.eye(3), atol=1e-9)  # orthogonal grid
    assert volume.spacing == pytest.approx((2.0, 0.8, 0.7))
    expected = _expected(volume.affine, volume.shape)
    # the source covers every row except those the shear moved out of the field of view
    shift_rows = int(np.ceil(2.0 * np.tan(np.radians(15.0)) * 5 / 2 / 0.8)) + 1
    inner = volume.hu[:, shift_rows:-shift_rows]
    np.testing.assert_allclose(inner, expected[:, shift_rows:-shift_rows], atol=0.51)
    assert volume.hu.min() == pytest.approx(min(-1024.0, float(inner.min())))
    assert any("gantry tilt 15.0°" in w for w in volume.warnings)
    assert any("out of the field of view" in w for w in volume.warnings)  # no air margin here


def test_gantry_tilt_policies(tmp_path: Path) -> None:
    write_series(tmp_path / "t", make_hu((4, 40, 36)), axial_affine(tilt_deg=10.0))
    with pytest.raises(GeometryError, match=r"gantry tilt of 10\.0°"):
        load_series(tmp_path / "t", policy=LoadPolicy(tilt=TiltPolicy.REFUSE))
    write_series(tmp_path / "steep", make_hu((4, 40, 36)), axial_affine(tilt_deg=40.0))
    with pytest.raises(GeometryError, match="more than any gantry tilt"):
        load_series(tmp_path / "steep")


def test_tilt_kept_with_uneven_spacing_is_refused(tmp_path: Path) -> None:
    paths = write_series(tmp_path, make_hu((5, 40, 36)), axial_affine(tilt_deg=10.0))
    paths[2].unlink()
    with pytest.raises(GeometryError, match="cannot be kept as a sheared grid"):
        load_series(tmp_path, policy=LoadPolicy(tilt=TiltPolicy.KEEP))
    assert load_series(tmp_path).shape[0] == 5


def test_one_file_moved_out_of_its_series_position_keeps_identity(tmp_path: Path) -> None:
    paths = write_series(tmp_path, make_hu((3, 40, 36)))
    uids = [pydicom.dcmread(p).SOPInstanceUID for p in paths]
    volume = load_series(list(reversed(paths)))
    assert [s.sop_instance_uid for s in volume.sources] == uids


def test_a_localizer_in_the_series_is_ignored(tmp_path: Path) -> None:
    hu = make_hu((4, 40, 36))
    write_series(tmp_path / "axial", hu)
    scout_affine = np.eye(4)
    scout_affine[:3, 0] = (0.0, 1.0, 0.0)  # slice step along y: a coronal image
    scout_affine[:3, 1] = (0.0, 0.0, -1.5)
    scout_affine[:3, 2] = (1.0, 0.0, 0.0)
    scout = write_series(tmp_path / "scout", make_hu((1, 40, 36)), scout_affine)

    def localizer(ds: Dataset, _: int) -> None:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["scout"])

    rewrite(scout, localizer)
    volume = load_series(tmp_path)
    np.testing.assert_array_equal(volume.hu, hu)
    assert "1 localizer (scout) image(s) in the series ignored" in volume.warnings
