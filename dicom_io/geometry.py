"""Slice geometry in the DICOM patient frame (LPS, millimetres).

Shared by the writer (affine → ImagePositionPatient / ImageOrientationPatient / PixelSpacing) and
the loader (the reverse, plus stacking checks). Arrays are indexed ``[slice, row, column]`` and an
affine maps ``(slice, row, column, 1)`` to LPS mm, as in :mod:`dicom_io.volume`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom.valuerep import DSfloat

ORTHOGONALITY_TOLERANCE = 1e-4


def ds_values(values: npt.ArrayLike) -> list[DSfloat]:
    """Decimal strings of at most 16 characters (the DS limit), as precise as that allows."""
    return [DSfloat(float(v), auto_format=True) for v in np.ravel(values)]


@dataclass(frozen=True, slots=True)
class PlaneGeometry:
    """Image plane attributes of a stack of slices, derived from an affine (LPS mm)."""

    orientation: tuple[float, ...]  # ImageOrientationPatient: row cosines, column cosines
    pixel_spacing: tuple[float, float]  # (between rows, between columns)
    positions: npt.NDArray[np.float64]  # (slices, 3) ImagePositionPatient per slice
    slice_spacing: float  # distance between slice planes along the image normal
    slice_locations: npt.NDArray[np.float64]  # position along the normal


def plane_geometry(affine: npt.NDArray[np.float64], n_slices: int) -> PlaneGeometry:
    """Image plane attributes of the slices of a volume with this affine (index → LPS mm)."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4×4, got {affine.shape}")
    slice_step, row_step, col_step = affine[:3, 0], affine[:3, 1], affine[:3, 2]
    row_mm, col_mm = float(np.linalg.norm(row_step)), float(np.linalg.norm(col_step))
    if row_mm <= 0 or col_mm <= 0:
        raise ValueError("affine has a zero row or column step")
    row_cos = col_step / col_mm  # direction along a row = increasing column index
    col_cos = row_step / row_mm  # direction down a column = increasing row index
    if abs(float(np.dot(row_cos, col_cos))) > ORTHOGONALITY_TOLERANCE:
        raise ValueError("affine row and column steps are not orthogonal")
    normal = np.cross(row_cos, col_cos)
    slice_spacing = abs(float(np.dot(slice_step, normal)))
    if slice_spacing <= 0:
        raise ValueError("affine slice step lies in the image plane")
    positions = affine[:3, 3][None, :] + np.arange(n_slices)[:, None] * slice_step[None, :]
    return PlaneGeometry(
        orientation=tuple(float(v) for v in (*row_cos, *col_cos)),
        pixel_spacing=(row_mm, col_mm),
        positions=positions,
        slice_spacing=slice_spacing,
        slice_locations=positions @ normal,
    )
