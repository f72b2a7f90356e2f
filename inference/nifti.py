"""Read and write volumes and label maps as NIfTI (SimpleITK), in the node's array convention.

Arrays are indexed ``[slice, row, column]`` with a 4×4 ``affine`` mapping ``(slice, row, column,
1)`` to DICOM LPS mm. SimpleITK/ITK also works in LPS and stores images as ``[k, j, i]`` arrays
whose index ``(i, j, k)`` maps through origin/spacing/direction, so ``i`` = column, ``j`` = row and
``k`` = slice; the NIfTI file itself ends up in RAS as the format requires (ITK converts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk  # noqa: N813

from inference.errors import InferenceError


def to_image(array: npt.NDArray[np.generic], affine: npt.NDArray[np.float64]) -> Any:
    """A SimpleITK image of ``array`` ``[slice, row, column]`` placed by ``affine`` (LPS mm)."""
    if array.ndim != 3:
        raise InferenceError(f"expected a 3-D array [slice, row, column], got {array.shape}")
    cols = np.asarray(affine, dtype=np.float64)[:3, :3][:, ::-1]  # (column, row, slice) steps
    spacing = np.linalg.norm(cols, axis=0)
    if np.any(spacing <= 0):
        raise InferenceError("affine has a zero-length axis", spacing.tolist())
    image: Any = sitk.GetImageFromArray(np.ascontiguousarray(array))  # SimpleITK is untyped
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in np.asarray(affine)[:3, 3]])
    image.SetDirection([float(v) for v in (cols / spacing).ravel()])
    return image


def from_image(image: Any) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.float64]]:
    """``(array [slice, row, column], affine index → LPS mm)`` of a SimpleITK ``image``."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    steps = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = steps[:, ::-1]
    affine[:3, 3] = image.GetOrigin()
    return sitk.GetArrayFromImage(image), affine


def write_nifti(
    path: Path, array: npt.NDArray[np.generic], affine: npt.NDArray[np.float64]
) -> Path:
    """Write ``array`` with ``affine`` (index → LPS mm) to ``path`` (``.nii`` or ``.nii.gz``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(to_image(array, affine), str(path), useCompression=path.suffix == ".gz")
    return path


def read_nifti(path: Path) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.float64]]:
    """Read a NIfTI file as ``(array [slice, row, column], affine index → LPS mm)``."""
    if not path.is_file():
        raise InferenceError(f"no NIfTI file at {path}", str(path))
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:  # SimpleITK reports every read failure as RuntimeError
        raise InferenceError(f"{path} is not a readable NIfTI file", str(path)) from exc
    return from_image(image)
