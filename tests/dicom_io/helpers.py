"""Test helpers: small synthetic CT volumes and their DICOM series."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset

from dicom_io.ct_writer import CTSeriesSpec, write_ct_series

STUDY_UID = "1.2.826.0.1.3680043.8.498.77.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.77.1.2"
FOR_UID = "1.2.826.0.1.3680043.8.498.77.1.3"


def make_spec(series_uid: str = SERIES_UID, **changes: object) -> CTSeriesSpec:
    """A CT series spec with fixed test UIDs; ``changes`` override fields."""
    values: dict[str, object] = {
        "patient_name": "Test^Phantom",
        "patient_id": "TEST-001",
        "patient_birth_date": "19700101",
        "patient_sex": "O",
        "study_instance_uid": STUDY_UID,
        "series_instance_uid": series_uid,
        "frame_of_reference_uid": FOR_UID,
        "study_date": "20240102",
        "study_time": "101112",
        "accession_number": "ACC1",
        "study_id": "1",
        "series_number": 2,
        "series_description": "test series",
        "body_part_examined": "LSPINE",
    }
    values.update(changes)
    return CTSeriesSpec(**values)  # type: ignore[arg-type]


def axial_affine(
    spacing: tuple[float, float, float] = (2.0, 0.8, 0.7),
    origin: tuple[float, float, float] = (-20.0, -15.0, 40.0),
    tilt_deg: float = 0.0,
) -> npt.NDArray[np.float64]:
    """Axial HFS affine (slices going up: +z is superior in LPS), optionally gantry-tilted.

    A tilt shears the slice step towards posterior (+y) by ``tan(tilt) * slice spacing``.
    """
    ds, dr, dc = spacing
    affine = np.eye(4)
    affine[:3, 0] = (0.0, ds * np.tan(np.radians(tilt_deg)), ds)
    affine[:3, 1] = (0.0, dr, 0.0)
    affine[:3, 2] = (dc, 0.0, 0.0)
    affine[:3, 3] = origin
    return affine


def make_hu(shape: tuple[int, int, int] = (6, 40, 36), seed: int = 0) -> npt.NDArray[np.float32]:
    """A reproducible HU volume in -1024…2000 with structure (a bright block) and noise."""
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1024, 200, size=shape).astype(np.float32)
    _, r, c = shape
    hu[:, r // 4 : r // 2, c // 3 : 2 * c // 3] = 1500.0
    hu[0, 0, 0] = 2000.0
    return hu


def write_series(
    out_dir: Path,
    hu: npt.NDArray[Any] | None = None,
    affine: npt.NDArray[np.float64] | None = None,
    *,
    spec: CTSeriesSpec | None = None,
    **kwargs: Any,
) -> list[Path]:
    """Write a synthetic series (defaults: :func:`make_hu`, :func:`axial_affine`)."""
    return write_ct_series(
        make_hu() if hu is None else hu,
        axial_affine() if affine is None else affine,
        out_dir,
        spec or make_spec(),
        **kwargs,
    )


def rewrite(paths: list[Path], change: Callable[[Dataset, int], None]) -> None:
    """Apply ``change(dataset, index)`` to each file and save it in place."""
    for index, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        change(ds, index)
        ds.save_as(path)


def voxel_lps(affine: npt.NDArray[np.float64], shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
    """LPS mm of every voxel centre, shape (*shape, 3)."""
    index = np.indices(shape, dtype=np.float64).reshape(3, -1)
    lps = affine[:3, :3] @ index + affine[:3, 3:4]
    return lps.T.reshape((*shape, 3))
