"""The CT volume value that :mod:`dicom_io` hands to the rest of the node.

Convention (the same as :class:`highdicom.Volume`): ``hu`` is indexed ``[slice, row, column]`` and
``affine`` maps the homogeneous index ``(slice, row, column, 1)`` to DICOM patient coordinates (LPS,
millimetres). Column 0 of the affine is the step between slices, column 1 the step between rows
(down the image), column 2 the step between columns (across the image), column 3 the centre of the
first voxel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset


@dataclass(frozen=True, slots=True)
class SourceInstance:
    """A reference to one source image (a frame, for multi-frame Enhanced CT)."""

    sop_class_uid: str
    sop_instance_uid: str
    frame_number: int | None = None


@dataclass(frozen=True, slots=True, eq=False)
class CTVolume:
    """A CT series as a volume of Hounsfield units on a regular grid in LPS millimetres.

    Attributes
    ----------
    hu:
        ``float32`` Hounsfield units, shape ``(slices, rows, columns)``; padding voxels hold the
        lowest valid value (-1024 HU or the series' minimum, whichever is lower).
    affine:
        ``4×4`` float64 matrix, array index ``(slice, row, column, 1)`` → LPS mm.
    study_instance_uid, series_instance_uid, frame_of_reference_uid:
        The series' identity, as received.
    sources:
        One reference per slice of ``hu`` in array order (after resampling, the instances that were
        resampled from, in stacking order).
    header:
        The patient, study, equipment and series attributes of the first instance, without pixel
        data; the SEG/SR/SC writers copy their patient and study modules from it.
    warnings:
        What was noticed and tolerated (small gaps filled, resampling, repaired attributes).
    """

    hu: npt.NDArray[np.float32]
    affine: npt.NDArray[np.float64]
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    sources: tuple[SourceInstance, ...]
    header: Dataset
    warnings: tuple[str, ...] = field(default=())

    @property
    def shape(self) -> tuple[int, int, int]:
        s, r, c = self.hu.shape
        return (int(s), int(r), int(c))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along (slice, row, column)."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))
