"""Test helpers: small synthetic CT volumes and their DICOM series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

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
    hu: npt.NDArray[np.float32] | None = None,
    affine: npt.NDArray[np.float64] | None = None,
    **kwargs: object,
) -> list[Path]:
    """Write a synthetic series (defaults: :func:`make_hu`, :func:`axial_affine`)."""
    spec = kwargs.pop("spec", None) or make_spec()
    return write_ct_series(
        make_hu() if hu is None else hu,
        axial_affine() if affine is None else affine,
        out_dir,
        spec,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )
