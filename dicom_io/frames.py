"""Per-frame geometry and pixel description of CT instances (single-frame or Enhanced CT).

Every slice of a series becomes a :class:`FrameInfo`: where it is (LPS mm), how it is oriented,
its pixel spacing and size, its rescale. Single-frame CT takes these from the top-level attributes;
multi-frame Enhanced CT from the per-frame functional groups, falling back to the shared ones.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from dicom_io.errors import MalformedDatasetError, NotApplicableError, UnreadableFileError

logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_CONVERTED_ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.2"
CT_SOP_CLASSES = (CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, LEGACY_CONVERTED_ENHANCED_CT)


@dataclass(frozen=True, slots=True)
class Instance:
    """One input instance: its header (no pixels), and where its pixels come from."""

    label: str  # the file path, or "dataset #i", for messages
    header: Dataset
    path: Path | None = None
    dataset: Dataset | None = None  # when given in memory (has the pixel data)


@dataclass(frozen=True, slots=True, eq=False)
class FrameInfo:
    """One slice: geometry in LPS mm and the pixel description needed to decode it."""

    instance: int  # index into the list of instances
    frame: int | None  # 0-based frame number within a multi-frame instance, None if single-frame
    position: npt.NDArray[np.float64]  # ImagePositionPatient (3,)
    orientation: npt.NDArray[np.float64]  # ImageOrientationPatient (6,): row then column cosines
    pixel_spacing: tuple[float, float]  # (between rows, between columns)
    size: tuple[int, int]  # (rows, columns)
    slope: float
    intercept: float
    thickness: float | None

    @property
    def normal(self) -> npt.NDArray[np.float64]:
        """Unit normal of the image plane: row cosines × column cosines."""
        n = np.cross(self.orientation[:3], self.orientation[3:])
        return n / np.linalg.norm(n)


def read_header(path: Path) -> Dataset:
    """A file's attributes without its pixel data; :class:`UnreadableFileError` if not DICOM."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        decode_all(header)
        return header
    except FileNotFoundError as exc:
        raise UnreadableFileError(f"{path}: file not found", str(path)) from exc
    except Exception as exc:  # pydicom raises many kinds on damaged files; all mean "unreadable"
        raise UnreadableFileError(
            f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})", str(path)
        ) from exc


def decode_all(ds: Dataset) -> None:
    """Convert every element now, so that a damaged one fails here and not deep in the loader.

    pydicom converts raw elements on first access; a corrupt value representation would raise
    NotImplementedError or ValueError wherever the attribute is first read.
    """
    for _ in ds.iterall():
        pass


def number(item: Dataset, keyword: str, label: str, default: float | None) -> float | None:
    """A single numeric attribute, ``default`` when absent or empty; malformed → error."""
    value = item.get(keyword)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise MalformedDatasetError(
            f"{label}: {keyword} is not a single number: {value!r}", value
        ) from exc


def frame_count(item: Dataset, label: str) -> int:
    """NumberOfFrames (1 when absent); malformed → :class:`MalformedDatasetError`."""
    count = number(item, "NumberOfFrames", label, 1.0) or 1.0
    if count < 1 or count != int(count):
        raise MalformedDatasetError(f"{label}: NumberOfFrames is {count}", count)
    return int(count)


def without(ds: Dataset, keywords: Sequence[str]) -> Dataset:
    """A new dataset holding the elements of ``ds`` except ``keywords`` (``ds`` is untouched)."""
    drop = {Tag(keyword) for keyword in keywords}
    return Dataset({tag: elem for tag, elem in ds.items() if tag not in drop})


def instances_from(source: Sequence[Path] | Sequence[Dataset]) -> list[Instance]:
    """Wrap paths (headers read now) or in-memory datasets as :class:`Instance` values."""
    instances: list[Instance] = []
    for i, item in enumerate(source):
        if isinstance(item, Dataset):
            header = without(item, ("PixelData",))
            if hasattr(item, "file_meta"):
                header.file_meta = item.file_meta
            try:
                decode_all(header)
            except Exception as exc:  # pydicom raises many kinds on damaged values
                raise MalformedDatasetError(
                    f"dataset #{i}: an attribute is damaged ({type(exc).__name__}: {exc})", i
                ) from exc
            instances.append(Instance(f"dataset #{i}", header, dataset=item))
        else:
            path = Path(item)
            instances.append(Instance(str(path), read_header(path), path=path))
    return instances


def check_is_ct(inst: Instance) -> None:
    """Raise :class:`NotApplicableError` unless the instance is a CT image."""
    modality = str(inst.header.get("Modality", "") or "")
    sop_class = str(inst.header.get("SOPClassUID", "") or "")
    if not sop_class and hasattr(inst.header, "file_meta"):
        sop_class = str(inst.header.file_meta.get("MediaStorageSOPClassUID", "") or "")
    if modality != "CT":
        raise NotApplicableError(
            f"{inst.label}: modality is {modality or 'missing'!r}, not CT; only CT series are "
            "analysed",
            modality,
        )
    if sop_class not in CT_SOP_CLASSES:
        raise NotApplicableError(
            f"{inst.label}: SOP class {sop_class or 'missing'} is not a CT image storage class",
            sop_class,
        )


def _floats(item: Dataset, keyword: str, count: int, label: str) -> npt.NDArray[np.float64]:
    value = item.get(keyword)
    if value is None or value == "" or (hasattr(value, "__len__") and len(value) == 0):
        raise MalformedDatasetError(
            f"{label}: {keyword} is missing or empty; the slice cannot be placed in space",
            keyword,
        )
    try:
        array = np.asarray([float(v) for v in np.atleast_1d(value)], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MalformedDatasetError(f"{label}: {keyword} is not numeric: {value!r}", value) from exc
    if array.shape != (count,) or not np.all(np.isfinite(array)):
        raise MalformedDatasetError(
            f"{label}: {keyword} must have {count} finite values, has {list(array)}", value
        )
    return array


def _orientation(item: Dataset, label: str) -> npt.NDArray[np.float64]:
    iop = _floats(item, "ImageOrientationPatient", 6, label)
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 0.01 or abs(np.linalg.norm(col) - 1) > 0.01:
        raise MalformedDatasetError(
            f"{label}: ImageOrientationPatient is not unit vectors", list(iop)
        )
    if abs(float(np.dot(row, col))) > 0.01:
        raise MalformedDatasetError(
            f"{label}: ImageOrientationPatient row and column are not orthogonal", list(iop)
        )
    row = row / np.linalg.norm(row)
    col = col - np.dot(col, row) * row
    return np.concatenate([row, col / np.linalg.norm(col)])


def _size(header: Dataset, label: str) -> tuple[int, int]:
    rows = number(header, "Rows", label, None)
    cols = number(header, "Columns", label, None)
    if not rows or not cols:
        raise MalformedDatasetError(f"{label}: Rows/Columns missing; no pixel description", None)
    return int(rows), int(cols)


def _rescale(item: Dataset, label: str) -> tuple[float, float]:
    slope = number(item, "RescaleSlope", label, 1.0)
    intercept = number(item, "RescaleIntercept", label, 0.0)
    assert slope is not None and intercept is not None  # defaults given
    if not (np.isfinite(slope) and np.isfinite(intercept)):
        raise MalformedDatasetError(f"{label}: rescale slope/intercept not finite", slope)
    return slope, intercept


def _single_frame(index: int, inst: Instance) -> FrameInfo:
    h, label = inst.header, inst.label
    spacing = _floats(h, "PixelSpacing", 2, label)
    if np.any(spacing <= 0):
        raise MalformedDatasetError(f"{label}: PixelSpacing must be positive", list(spacing))
    slope, intercept = _rescale(h, label)
    return FrameInfo(
        instance=index,
        frame=None,
        position=_floats(h, "ImagePositionPatient", 3, label),
        orientation=_orientation(h, label),
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        size=_size(h, label),
        slope=slope,
        intercept=intercept,
        thickness=number(h, "SliceThickness", label, None),
    )


def _group_item(per: Dataset | None, shared: Dataset | None, sequence: str) -> Dataset | None:
    for group in (per, shared):
        if group is not None and sequence in group and len(group[sequence].value) > 0:
            item: Dataset = group[sequence].value[0]
            return item
    return None


def _required_group(
    per: Dataset | None, shared: Dataset | None, sequence: str, label: str
) -> Dataset:
    item = _group_item(per, shared, sequence)
    if item is None:
        raise MalformedDatasetError(f"{label}: functional group {sequence} is missing", sequence)
    return item


def _multi_frames(index: int, inst: Instance) -> list[FrameInfo]:
    h = inst.header
    n_frames = frame_count(h, inst.label)
    shared_seq = h.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    per_seq = h.get("PerFrameFunctionalGroupsSequence")
    if per_seq is not None and len(per_seq) != n_frames:
        raise MalformedDatasetError(
            f"{inst.label}: {len(per_seq)} per-frame functional groups for {n_frames} frames",
            len(per_seq),
        )
    size = _size(h, inst.label)
    frames = []
    for f in range(n_frames):
        label = f"{inst.label} frame {f + 1}"
        per = per_seq[f] if per_seq is not None else None
        measures = _required_group(per, shared, "PixelMeasuresSequence", label)
        spacing = _floats(measures, "PixelSpacing", 2, label)
        plane = _required_group(per, shared, "PlanePositionSequence", label)
        orient = _required_group(per, shared, "PlaneOrientationSequence", label)
        pvt = _group_item(per, shared, "PixelValueTransformationSequence")
        slope, intercept = _rescale(pvt if pvt is not None else h, label)
        frames.append(
            FrameInfo(
                instance=index,
                frame=f,
                position=_floats(plane, "ImagePositionPatient", 3, label),
                orientation=_orientation(orient, label),
                pixel_spacing=(float(spacing[0]), float(spacing[1])),
                size=size,
                slope=slope,
                intercept=intercept,
                thickness=number(measures, "SliceThickness", label, None),
            )
        )
    return frames


def frames_of(index: int, inst: Instance) -> list[FrameInfo]:
    """The frames of one CT instance, with their geometry checked for presence and sanity."""
    if (
        "PerFrameFunctionalGroupsSequence" in inst.header
        or frame_count(inst.header, inst.label) > 1
    ):
        return _multi_frames(index, inst)
    return [_single_frame(index, inst)]
