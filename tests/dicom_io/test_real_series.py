"""Real CT series (../shared/data/real-dicom): loaded or refused exactly as docs/loading.md says."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from dicom_io import LoadPolicy, TiltPolicy, find_series, load_series
from dicom_io.errors import GeometryError, MalformedDatasetError

pytestmark = pytest.mark.realdata


def _folder(shared_data: Path, name: str) -> Path:
    folder = shared_data / "real-dicom" / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not present in the shared data")
    return folder


def _corners(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """LPS mm of the 8 corner voxel centres, sorted so that two grids can be compared."""
    idx = np.array(list(itertools.product(*[(0, n - 1) for n in shape])), dtype=np.float64)
    lps: np.ndarray = idx @ affine[:3, :3].T + affine[:3, 3]
    result: np.ndarray = lps[np.lexsort(lps.T[::-1])]
    return result


def test_totalseg_series_with_empty_uids_is_refused_by_default(shared_data: Path) -> None:
    folder = _folder(shared_data, "totalseg-t11-t12")
    with pytest.raises(MalformedDatasetError, match="SOPInstanceUID is empty") as info:
        load_series(folder)
    assert "repair_uids=True" in str(info.value)


def test_totalseg_series_loads_with_repaired_uids(shared_data: Path) -> None:
    folder = _folder(shared_data, "totalseg-t11-t12")
    volume = load_series(folder, policy=LoadPolicy(repair_uids=True))
    assert volume.shape == (20, 512, 512)
    assert volume.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    assert {s.sop_instance_uid for s in volume.sources} == {
        pydicom.dcmread(p, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID
        for p in folder.iterdir()
    }
    assert any("SeriesInstanceUID" in w for w in volume.warnings)
    assert -1100 < float(volume.hu.min()) <= -1000 and 1000 < float(volume.hu.max()) < 3100


def test_totalseg_pixels_and_geometry_match_the_label_nifti(shared_data: Path) -> None:
    """UIDs repaired in memory by the test; the JPEG 2000 pixels decode onto the labels' grid."""
    import SimpleITK as sitk  # noqa: N813 (the usual alias)

    folder = _folder(shared_data, "totalseg-t11-t12")
    labels_path = shared_data / "real-dicom" / "totalseg-t11-t12-labels.nii.gz"
    if not labels_path.is_file():
        pytest.skip(f"{labels_path} not present in the shared data")
    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    for ds in datasets:
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1.1"
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1.2"
    volume = load_series(datasets)
    assert volume.warnings == ()

    labels: Any = sitk.ReadImage(str(labels_path))  # SimpleITK reports LPS geometry
    size = labels.GetSize()  # (x, y, z)
    corners = np.array(
        [
            labels.TransformIndexToPhysicalPoint(tuple(int(v) for v in c))
            for c in itertools.product(*[(0, n - 1) for n in size])
        ]
    )
    np.testing.assert_allclose(
        _corners(volume.affine, volume.shape), corners[np.lexsort(corners.T[::-1])], atol=0.01
    )
    # the vertebra labels sit on bone: mean HU inside T11/T12 far above soft tissue
    label_array = sitk.GetArrayFromImage(labels)  # [z, y, x]
    lps = np.array([labels.TransformIndexToPhysicalPoint((0, 0, k)) for k in range(size[2])])
    slice_of = np.rint((lps - volume.affine[:3, 3]) @ volume.affine[:3, 0] / 4.0).astype(int)
    hu_on_label_grid = volume.hu[slice_of]
    direction = np.asarray(labels.GetDirection(), dtype=np.float64).reshape(3, 3)
    flips = np.sign(np.diagonal(direction))
    if flips[0] < 0:
        hu_on_label_grid = hu_on_label_grid[:, :, ::-1]
    if flips[1] < 0:
        hu_on_label_grid = hu_on_label_grid[:, ::-1, :]
    bone = np.isin(label_array, (32, 33))  # TotalSegmentator v2: T12, T11
    assert bone.sum() > 1000
    assert float(hu_on_label_grid[bone].mean()) > 240  # 274 HU; a z-flip gives 191
    assert float(hu_on_label_grid[~bone].mean()) < 0


def test_ge_tilted_head_loads_resampled_with_warnings(shared_data: Path) -> None:
    folder = _folder(shared_data, "ge-head-gantry-tilt")
    [series] = find_series(folder)  # the licence files beside the images are skipped
    assert len(series.paths) == 28
    volume = load_series(folder)
    columns = volume.affine[:3, :3] / np.asarray(volume.spacing)
    np.testing.assert_allclose(columns.T @ columns, np.eye(3), atol=1e-6)
    assert volume.spacing[1:] == pytest.approx((0.4882812, 0.4882812))
    assert volume.spacing[0] == pytest.approx(4.0, abs=0.01)  # the median step
    assert volume.shape[1:] == (512, 512) and volume.shape[0] == 37
    text = " ".join(volume.warnings)
    assert "gantry tilt 18.5°" in text and "uneven slice spacing" in text
    # the shear keeps the head inside the grid: only a few edge voxels of slices 8-9 leave it
    [lost] = [int(w.split(" moved ")[1].split()[0]) for w in volume.warnings if " moved " in w]
    assert 0 < lost < 200
    assert len(volume.sources) == 28
    assert float(volume.hu.min()) == -1024.0  # padding (-1500 stored) filled


def test_ge_tilted_head_under_strict_policies_is_refused(shared_data: Path) -> None:
    folder = _folder(shared_data, "ge-head-gantry-tilt")
    with pytest.raises(GeometryError, match=r"gantry tilt of 18\.5°"):
        load_series(folder, policy=LoadPolicy(tilt=TiltPolicy.REFUSE))
    with pytest.raises(GeometryError, match="uneven slice spacing"):
        load_series(folder, policy=LoadPolicy(resample_uneven=False))
