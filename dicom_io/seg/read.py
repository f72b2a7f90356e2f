"""Read vertebra segments of a DICOM-SEG back into a VerSe label map on a CT grid.

For training and evaluation on a site's own DICOM-SEG data, and to check our own SEGs: every segment
whose Segmented Property Type is a vertebra code (SNOMED CT C1…L5, sacrum; a generic "Vertebra" is
identified by its label, e.g. ``L6``) becomes its VerSe id (L1..L5 = 20..24, S1 = 26) on the grid of
the given :class:`~dicom_io.volume.CTVolume` (index ``(slice, row, column)`` → LPS mm). The SEG may
lie on any grid in the same frame of reference: masks are resampled by nearest neighbour.
"""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from scipy import ndimage

from dicom_io.errors import DicomIOError
from dicom_io.seg.content import VERTEBRA_CODES
from dicom_io.volume import CTVolume

logger = logging.getLogger(__name__)

_BY_CODE: dict[tuple[str, str], int] = {
    (code.scheme_designator, code.value): label
    for label, (_, code) in VERTEBRA_CODES.items()
    if code.meaning != "Vertebra"
}
_BY_NAME: dict[str, int] = {name: label for label, (name, _) in VERTEBRA_CODES.items()}
_GENERIC_VERTEBRA = ("SCT", "51282000")


class SegmentationMismatchError(DicomIOError):
    """The SEG cannot be put on the CT: another frame of reference, or no vertebra segment."""


def vertebra_id(segment: Dataset) -> int | None:
    """VerSe id of a Segment Sequence item, or ``None`` when it is not a vertebra."""
    prop = segment.SegmentedPropertyTypeCodeSequence[0]
    key = (str(prop.CodingSchemeDesignator), str(prop.CodeValue))
    if key in _BY_CODE:
        return _BY_CODE[key]
    if key == _GENERIC_VERTEBRA:
        return _BY_NAME.get(str(segment.get("SegmentLabel", "")).strip())
    return None


def _on_grid(mask: hd.Volume, volume: CTVolume) -> npt.NDArray[np.bool_]:
    """``mask`` (a highdicom volume in LPS) resampled onto the CT grid by nearest neighbour."""
    mapping = np.linalg.inv(np.asarray(mask.affine)) @ np.asarray(volume.affine, dtype=np.float64)
    values = ndimage.affine_transform(
        np.asarray(mask.array > 0, dtype=np.uint8),
        mapping[:3, :3],
        offset=mapping[:3, 3],
        output_shape=volume.shape,
        order=0,
        mode="constant",
        cval=0,
    )
    return np.asarray(values > 0)


def vertebra_label_map(seg: Dataset | Path, volume: CTVolume) -> npt.NDArray[np.uint8]:
    """The VerSe label map (uint8, ``volume.shape``) of the vertebra segments of ``seg``.

    Where vertebra segments overlap, the later segment wins.

    Raises
    ------
    SegmentationMismatchError
        When the SEG's frame of reference is not the CT's, or it has no vertebra segment.
    """
    segmentation = (
        hd.seg.segread(seg) if isinstance(seg, Path) else hd.seg.Segmentation.from_dataset(seg)
    )
    if segmentation.FrameOfReferenceUID != volume.frame_of_reference_uid:
        raise SegmentationMismatchError(
            "the SEG is not in the CT's frame of reference "
            f"({segmentation.FrameOfReferenceUID} vs {volume.frame_of_reference_uid})",
            segmentation.FrameOfReferenceUID,
        )
    wanted = [
        (int(item.SegmentNumber), label)
        for item in segmentation.SegmentSequence
        if (label := vertebra_id(item)) is not None
    ]
    if not wanted:
        raise SegmentationMismatchError("the SEG has no vertebra segment", None)
    labels = np.zeros(volume.shape, dtype=np.uint8)
    for number, label in wanted:
        mask = segmentation.get_volume(segment_numbers=[number], combine_segments=True)
        labels[_on_grid(mask, volume)] = label
    logger.info("SEG: %d vertebra segments read onto the CT grid", len(wanted))
    return labels
